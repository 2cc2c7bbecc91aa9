"""Dry runs of the GPU benchmarks on the CPU (smoke profile): every part runs, each line is printed as it is measured
(a run stopped at its time limit shows what it measured), ``--out`` gets the JSON, and ``--budget`` skips the
optional sections, saying so."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NO_SOUNDFILE = "import sys, runpy; sys.modules['soundfile'] = None; "  # an import of soundfile now raises ImportError


def streamed(module: str, *args, tmp_path: Path, env=None) -> list[tuple[float, str]]:
    """Run ``python -m module args`` without soundfile; every stdout line with the time it arrived (stderr to a
    file, so a full pipe cannot stall the run). Python buffers a pipe unless PYTHONUNBUFFERED is set, as on the GPU
    machine: it is left out, so only the script's own flushing can make lines arrive as they are printed."""
    code = NO_SOUNDFILE + f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTHONUNBUFFERED"}
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=stderr, text=True, env=env)
        lines = [(time.monotonic(), line.rstrip("\n")) for line in proc.stdout]
        assert proc.wait() == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    return lines


def text(lines) -> str:
    return "\n".join(line for _, line in lines)


def arrived(lines, start: str) -> float:
    """When the first line starting with ``start`` arrived."""
    return next(t for t, line in lines if line.startswith(start))


def assert_flushed(lines, first: str, last: str, gap: float = 1.0) -> None:
    """``first`` arrived at least ``gap`` seconds before ``last``: printed as measured, not all at the exit."""
    assert arrived(lines, last) - arrived(lines, first) >= gap, text(lines)


def offline_env() -> dict:
    """The H200 image's conditions: no network setting of ours (the check goes offline itself)."""
    return {k: v for k, v in os.environ.items() if k != "KDLIB_OFFLINE"}


GPU_CHECK = ("--device", "cpu", "--profile", "smoke", "--steps", "1", "--warmup", "1", "--compile", "off",
             "--end-to-end", "smoke")


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu_without_soundfile_data_or_network(tmp_path):
    """Every part runs and prints its lines as measured, in the H200 image's conditions: no soundfile, an empty data
    folder and no network (the check goes offline itself, and measures on random data of the real shapes, saying
    so); like with like (the study's pack of one seed: 3 of 7 KD, a live teacher for text, cached logits for fixed
    examples); ``--out`` gets both JSON files."""
    (tmp_path / "data").mkdir()
    lines = streamed("benchmarks.gpu_check", *GPU_CHECK, "--out", tmp_path / "out", "--data-dir", tmp_path / "data",
                     tmp_path=tmp_path, env=offline_env())
    out = text(lines)
    assert_flushed(lines, "matmul rate float32", "gpu check done")
    assert "matmul rates bf16, fp16, TF32: not measured on the CPU" in out
    for family in ("gpt", "resnet18", "vit"):
        assert f"pack equals one by one, {family} float64: PASS" in out, out
        assert f"pack equals one by one, {family} bf16: not run" in out  # CUDA's
    header = next(line for line in out.splitlines() if line.startswith("setup "))
    for column in ("s/model alone", "s/model packed", "KD share", "% of matmul rate", "fallbacks", "wall s"):
        assert column in header
    rows = {line.split()[0]: line.split() for line in out.splitlines()[out.splitlines().index(header) + 1:][:4]}
    assert rows["tinyshakespeare-nanogpt"][1:5] == ["random", "float32", "0.01", "live"]
    assert rows["speechcommands-vggish"][1] == "random" and rows["svhn-resnet18"][4] == "cache"
    for row in rows.values():
        assert row[5:7] == ["7", "3/7"] and "of float32" in " ".join(row) and row[-2] == "none", row
    assert "end to end (random text of its real size: no data)" in out and "with --pack auto" in out
    assert "skipped" not in out
    record = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert record["svhn-resnet18"]["smoke"]["student"] > 0 and record["svhn-resnet18"]["smoke"]["pack"] == 7
    report = json.loads((tmp_path / "out" / "gpu_check_report.json").read_text())
    assert [r["setup"] for r in report["rows"]] == ["tinyshakespeare-nanogpt", "svhn-resnet18",
                                                    "speechcommands-vggish", "svhn-vit"]
    assert report["rows"][0]["kd_members"] == 3 and report["rows"][0]["fallbacks"] == []
    assert "float32" in report["matmul_rates"] and report["end_to_end"].startswith("end to end")


@pytest.mark.slow
def test_gpu_check_budget_runs_the_required_sections_and_skips_the_rest(tmp_path):
    """A budget already spent: the rates, the float64 check and the first setup's row still run and reach --out;
    every optional section prints one line saying it was skipped and why."""
    (tmp_path / "data").mkdir()
    lines = streamed("benchmarks.gpu_check", *GPU_CHECK, "--budget", 1, "--out", tmp_path, "--data-dir",
                     tmp_path / "data", "--setups", "tinyshakespeare-nanogpt", "svhn-vit", tmp_path=tmp_path)
    out = text(lines)
    assert "pack equals one by one, gpt float64: PASS" in out and "\ntinyshakespeare-nanogpt  random" in out
    skipped = [line for line in out.splitlines() if line.startswith("skipped: ")]
    assert [s.split(" (")[0] for s in skipped] == ["skipped: setup svhn-vit", "skipped: end to end at the smoke profile"]
    assert all("of the 1 s budget left" in s for s in skipped)
    assert list(json.loads((tmp_path / "gpu_check.json").read_text())) == ["tinyshakespeare-nanogpt"]
    report = json.loads((tmp_path / "gpu_check_report.json").read_text())
    assert report["skipped"] == skipped and len(report["rows"]) == 1 and "end_to_end" not in report


PROFILE = ("--device", "cpu", "--profile", "smoke", "--steps", "2", "--warmup", "1")


@pytest.mark.slow
def test_gpu_profile_dry_run_on_cpu(tmp_path):
    """Both steps are profiled and printed as measured: per step, the split between matrix products, attention and
    the rest, and the top ops; the CPU's float32 matmul rate alone; all of it in --out."""
    lines = streamed("benchmarks.gpu_profile", *PROFILE, "--out", tmp_path, tmp_path=tmp_path)
    out = text(lines)
    assert_flushed(lines, "matmul rate float32", "gpu profile done", 0.5)
    assert "matmul rates bf16, fp16, TF32: not measured on the CPU" in out
    assert "student step (1 model, SIDDO): " in out and "packed step (7 models, 3 of them KD with a live teacher)" in out
    assert out.count(" ops per step; fallbacks: none") == 2 and out.count("top 10 ops by self CPU time per step") == 2
    assert "aten::mm" in out or "aten::addmm" in out
    record = json.loads((tmp_path / "gpu_profile.json").read_text())
    for step in ("student step", "packed step"):
        split = record[step]["split"]
        assert set(split) == {"matmul", "attention", "other"} and split["matmul"]["calls"] > 0
        assert record[step]["per_step"] > 0 and len(record[step]["top"]) == 10
    assert record["packed step"]["models"] == 7 and list(record["matmul_rates"]) == ["float32"]


@pytest.mark.slow
def test_gpu_profile_budget_skips_the_packed_step(tmp_path):
    out = text(streamed("benchmarks.gpu_profile", *PROFILE, "--budget", 1, "--out", tmp_path, tmp_path=tmp_path))
    assert "student step (1 model, SIDDO): " in out and "\npacked step (" not in out
    assert "skipped: the packed step (needs about" in out
    record = json.loads((tmp_path / "gpu_profile.json").read_text())
    assert "student step" in record and "packed step" not in record and len(record["skipped"]) == 1


@pytest.mark.slow
def test_paper_slice_dry_run_on_cpu(data_dir, tmp_path):
    """The slice trains stage by stage, a line per run as each stage ends, prints its tables beside the paper's and
    keeps them in --out; run again, it reuses every run."""
    args = ("--profile", "smoke", "--device", "cpu", "--students", "2", "--data-dir", data_dir, "--out", tmp_path)
    lines = streamed("benchmarks.paper_slice", *args, tmp_path=tmp_path)
    out = text(lines)
    assert "15 runs; reusing 0 finished, 15 to train" in out
    assert_flushed(lines, "tinyshakespeare-nanogpt (smoke): 15 runs", "teacher beside the paper's Table 38", 0.5)
    runs = [line for line in out.splitlines() if ", seed " in line and ": trained in " in line]
    assert len(runs) == 15 and runs[0].startswith("teacher, seed 0: trained in ")
    assert "KD 0.5 student, seed 11: trained in " in out and all(line.endswith("fallbacks none") for line in runs)
    assert "beside the paper's Table 14" in out and "0.196 ± 0.000" in out  # Table 14's SIDDO activation distance
    assert "Table 38" in out and "0.8646" in out
    record = json.loads((tmp_path / "paper_slice.json").read_text())
    assert record["runs"] == runs and record["skipped"] == [] and "SIDDO paper" in record["table14"]
    rerun = text(streamed("benchmarks.paper_slice", *args, tmp_path=tmp_path))
    assert "reusing 15 finished, 0 to train" in rerun  # resumable: nothing trained again
    assert rerun.count(": reused, test loss ") == 15


@pytest.mark.slow
def test_paper_slice_budget_trains_the_teacher_and_skips_the_rest(data_dir, tmp_path):
    out = text(streamed("benchmarks.paper_slice", "--profile", "smoke", "--device", "cpu", "--students", "2",
                        "--adversarial", "--budget", 1, "--data-dir", data_dir, "--out", tmp_path, tmp_path=tmp_path))
    assert "teacher, seed 0: trained in " in out and "Table 38" in out and "Table 14" not in out
    skipped = [line.split(" (needs")[0] for line in out.splitlines() if line.startswith("skipped: ")]
    assert skipped == ["skipped: student seed 10's 7 runs", "skipped: student seed 11's 7 runs",
                       "skipped: the adversarial teacher"]
    record = json.loads((tmp_path / "paper_slice.json").read_text())
    assert len(record["skipped"]) == 3 and len(record["runs"]) == 1 and "table14" not in record
