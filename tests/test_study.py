"""`python -m kdlib study` and run_all.sh, its wrapper: the same files, and every knob reaching its flag."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_store

REPO = Path(__file__).resolve().parents[1]


PAIR = ("digits-resnet18", "svhn-resnet18")  # SVHN's data is absent here


@pytest.mark.slow
def test_kdlib_study_and_run_all_write_the_same_files(tmp_path, data_dir, smoke_store):
    """run_all.sh is `python -m kdlib study` with its knobs as flags: a suite at the smoke profile writes the same
    files either way, the same tables, LaTeX and scorecard byte for byte (one setup keeps it short; the next test
    checks that every knob reaches its flag). Both re-run a finished setup: they resume (nothing is trained again),
    and list and skip a setup whose data is missing."""
    written = {}
    for how in ("study", "run_all"):
        root = tmp_path / how
        copy_store(smoke_store, root / "results")  # trained already: both only collect, report and show
        env = {**os.environ, "KDLIB_DATA_DIR": str(data_dir), "KDLIB_CACHE_DIR": str(tmp_path / "cache")}
        if how == "study":
            cmd = [sys.executable, "-m", "kdlib", "study", *PAIR, "--profile", "smoke", "--data-dir", str(data_dir),
                   "--out", str(root / "results"), "--figures", str(root / "figures"), "--no-summary"]
        else:
            cmd = ["bash", "run_all.sh"]
            env.update(PROFILE="smoke", SUITE=" ".join(PAIR), OUT=str(root / "results"), FIGURES=str(root / "figures"),
                       SUMMARY="0")
        before = {p: p.stat().st_mtime_ns for p in (root / "results" / "runs").glob("*/result.json")}
        run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "skipping svhn-resnet18: its data is missing" in run.stdout and "train_32x32.mat" in run.stdout
        assert "digits-resnet18 (smoke): 15 runs; reusing 15 finished, 0 to train" in run.stdout
        assert "== summary" not in run.stdout and "summary-smoke.ipynb" not in run.stdout  # none written: none named
        assert before == {p: p.stat().st_mtime_ns for p in (root / "results" / "runs").glob("*/result.json")}
        written[how] = {p.relative_to(root): p for p in root.rglob("*") if p.is_file() and "runs" not in p.parts}
    assert set(written["study"]) == set(written["run_all"]) and len(written["study"]) > 20
    for rel, path in written["study"].items():
        if path.suffix in (".csv", ".tex", ".md"):  # the audit report names its input files: the roots differ
            ours = path.read_text().replace(str(tmp_path / "study"), "ROOT")
            assert ours == written["run_all"][rel].read_text().replace(str(tmp_path / "run_all"), "ROOT"), rel


def test_run_all_is_kdlib_study_with_its_knobs_as_flags(tmp_path):
    """run_all.sh runs `python -m kdlib study` and nothing else: a stand-in python on PATH records what it runs."""
    (tmp_path / "bin").mkdir()
    stub = tmp_path / "bin" / "python"
    stub.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path / 'argv'}\n")
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "PROFILE": "smoke", "SUITE": "core",
           "KDLIB_DATA_DIR": "d", "DEVICE": "cuda", "OUT": "o", "FIGURES": "f", "LAUNCHER": "slurm", "WORKERS": "8",
           "PACK": "auto", "COMPILE": "off", "SUMMARY": "0", "NOTEBOOK_JOBS": "3", "GPUS_PER_RUN": "1",
           "SLURM_PARTITION": "gpu", "TIME_LIMIT": "240", "READINGS": "gpt-architecture=nanogpt training-precision=float32",
           "CHECKPOINT_EVERY": "5", "LOG_TO": "mlflow"}
    subprocess.run(["bash", "run_all.sh"], cwd=REPO, env=env, check=True)
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv == ["-m", "kdlib", "study", "--suite", "core", "--profile", "smoke", "--data-dir", "d", "--device",
                    "cuda", "--out", "o", "--figures", "f", "--launcher", "slurm", "--workers", "8", "--pack", "auto",
                    "--compile", "off", "--notebook-jobs", "3", "--checkpoint-every", "5", "--no-summary",
                    "--log-to", "mlflow", "--gpus-per-run", "1",
                    "--slurm-partition", "gpu", "--time-limit", "240", "--reading", "gpt-architecture=nanogpt",
                    "--reading", "training-precision=float32"]
    env.update(SUITE="language:tinyshakespeare-nanogpt vision:cifar10-resnet18")  # the older hand-typed form
    subprocess.run(["bash", "run_all.sh"], cwd=REPO, env=env, check=True)
    assert (tmp_path / "argv").read_text().splitlines()[:5] == ["-m", "kdlib", "study", "language:tinyshakespeare-nanogpt",
                                                                 "vision:cifar10-resnet18"]


def test_a_study_that_collects_nothing_fails_in_one_line_and_writes_no_summary(tmp_path, capsys):
    from kdlib.__main__ import main
    out = tmp_path / "results"
    code = main(["study", "tinyshakespeare-nanogpt", "--profile", "smoke", "--data-dir", str(tmp_path / "no-data"),
                 "--out", str(out), "--figures", str(tmp_path / "figures"), "--launcher", "serial"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["kdlib study: error: nothing to summarise: the data of every named setup is "
                                 "missing (see above)"]
    assert not (out / "summary-smoke.ipynb").exists() and not (out / "scorecard.md").exists()
