"""Dry runs of the GPU benchmarks on the CPU (smoke profile): every part runs and prints its table."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_cpu(data_dir, tmp_path):
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--profile", "smoke", "--steps", "1",
                          "--warmup", "1", "--compile", "off", "--end-to-end", "smoke", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "KDLIB_DATA_DIR": str(data_dir)}).stdout
    for family in ("gpt", "resnet18"):
        assert f"pack equals one by one, {family} float64: PASS" in out, out
        assert f"pack equals one by one, {family} bf16: not run" in out  # CUDA's
    for name in ("tinyshakespeare-nanogpt", "svhn-resnet18", "speechcommands-vggish", "svhn-vit"):
        assert name in out
    assert "s/model packed" in out and "% of rate" in out and "with --pack auto" in out
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["svhn-resnet18"]["smoke"]["student"] > 0


def test_paper_slice_dry_run_on_cpu(data_dir, tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/paper_slice.py", "--profile", "smoke", "--device", "cpu",
                          "--students", "2", "--data-dir", str(data_dir), "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "beside the paper's Table 14" in out and "0.196 ± 0.000" in out  # Table 14's SIDDO activation distance
    assert "Table 38" in out and "0.8646" in out
    rerun = subprocess.run([sys.executable, "benchmarks/paper_slice.py", "--profile", "smoke", "--device", "cpu",
                            "--students", "2", "--data-dir", str(data_dir), "--out", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, check=True)
    assert "reusing 15 finished, 0 to train" in rerun.stdout  # resumable: nothing trained again
