import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_cpu(data_dir):
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--profile", "smoke",
                          "--steps", "2", "--data-dir", str(data_dir)], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert "KD 0.9" in out and "one teacher seed's grid" in out
