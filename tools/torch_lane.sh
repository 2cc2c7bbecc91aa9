#!/usr/bin/env bash
# The engine tests (training, packs and their layouts, compile graphs, checkpoints, fallbacks, live teachers, the GPU
# check's CPU dry run) under another
# torch than requirements.txt pins: by default the H200 image's torch 2.11.0 / torchvision 0.26.0 /
# torchaudio 2.11.0, whose dynamo differs from 2.14's in ways CPU tests on the pinned torch cannot see.
#
#   bash tools/torch_lane.sh                  # makes .venv-torch-2.11.0 (CPU wheels, git-ignored) and runs
#   PYTHON=/path/to/python bash tools/torch_lane.sh   # an environment that already has that torch
#
# Without soundfile and papermill, as on the image. CI does not run it (the wheels would not fit its time);
# the closing note of each engine change reports it.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=${TORCH:-2.11.0} VISION=${VISION:-0.26.0} AUDIO=${AUDIO:-2.11.0}
if [ -z "${PYTHON:-}" ]; then
    venv=.venv-torch-$TORCH
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --index-url https://download.pytorch.org/whl/cpu \
            "torch==$TORCH" "torchvision==$VISION" "torchaudio==$AUDIO"
        "$venv/bin/pip" install -q numpy scipy pandas statsmodels matplotlib seaborn scikit-learn pillow tqdm \
            pytest pytest-timeout hypothesis nbformat ipython ipywidgets
    fi
    PYTHON=$venv/bin/python
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, torch.backends.cpu.get_cpu_capability())"
# the working tree's kdlib (the current directory comes first on sys.path), one process, no xdist
exec "$PYTHON" -m pytest -q -o addopts="" -p no:cacheprovider \
    tests/test_engine.py tests/test_together.py tests/test_train.py tests/test_losses.py tests/test_objectives.py \
    tests/test_packed_layout.py tests/test_checkpoint.py tests/test_fallbacks.py tests/test_live_teacher.py \
    "tests/test_benchmarks.py::test_gpu_check_dry_run_on_cpu_without_soundfile_data_or_network" "$@"
