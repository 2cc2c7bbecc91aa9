"""Dry runs of the GPU benchmarks on the CPU (smoke profile): every part runs and prints its table."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_runs

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu_without_soundfile_data_or_network(tmp_path):
    """Every part runs and prints its table, in the H200 image's conditions: no soundfile, an empty data folder and
    no network (the check goes offline itself, and measures on random data of the real shapes, saying so)."""
    code = ("import sys, runpy; sys.modules['soundfile'] = None; "  # an import of soundfile now raises ImportError
            "runpy.run_module('benchmarks.gpu_check', run_name='__main__', alter_sys=True)")
    (tmp_path / "data").mkdir()
    run = subprocess.run([sys.executable, "-c", code, "--device", "cpu", "--profile", "smoke", "--steps", "1",
                          "--warmup", "1", "--compile", "off", "--end-to-end", "smoke", "--out", str(tmp_path),
                          "--data-dir", str(tmp_path / "data")], cwd=REPO, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "KDLIB_OFFLINE"})
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "tinyshakespeare-nanogpt  random" in out and "speechcommands-vggish    random" in out
    assert "end to end (random text of its real size: no data)" in out
    for family in ("gpt", "resnet18"):
        assert f"pack equals one by one, {family} float64: PASS" in out, out
        assert f"pack equals one by one, {family} bf16: not run" in out  # CUDA's
    for name in ("tinyshakespeare-nanogpt", "svhn-resnet18", "speechcommands-vggish", "svhn-vit"):
        assert name in out
    assert "s/model packed" in out and "% of rate" in out and "with --pack auto" in out
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["svhn-resnet18"]["smoke"]["student"] > 0


@pytest.mark.slow
def test_paper_slice_dry_run_on_cpu(data_dir, tmp_path, smoke_store):
    from kdlib import setups
    copy_runs(setups.get("tinyshakespeare-nanogpt", "smoke"), smoke_store, tmp_path)  # the slice's runs are these
    out = subprocess.run([sys.executable, "benchmarks/paper_slice.py", "--profile", "smoke", "--device", "cpu",
                          "--students", "2", "--data-dir", str(data_dir), "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "beside the paper's Table 14" in out and "0.196 ± 0.000" in out  # Table 14's SIDDO activation distance
    assert "Table 38" in out and "0.8646" in out
    rerun = subprocess.run([sys.executable, "benchmarks/paper_slice.py", "--profile", "smoke", "--device", "cpu",
                            "--students", "2", "--data-dir", str(data_dir), "--out", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, check=True)
    assert "reusing 15 finished, 0 to train" in rerun.stdout  # resumable: nothing trained again
