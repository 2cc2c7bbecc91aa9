"""The built-in suite end to end through papermill (run_all.sh at the smoke profile), and notebook hygiene."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_store

REPO = Path(__file__).resolve().parents[1]


def test_committed_notebooks_carry_no_outputs():
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert notebooks
    for nb in notebooks:
        cells = json.loads(nb.read_text())["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), nb.name
        for c in cells:
            if c["cell_type"] == "code":
                assert not c.get("outputs") and not c.get("execution_count"), nb.name


# every notebook and every cross-setup view (Nano-GPT self-distillation and the feature-map setups run through the
# same language notebook; their training is covered by tests/test_golden.py's golden tables). Pico-GPT at T = 1 is
# collected beforehand: the summary shows it, and beside T = 4 in the temperature view.
SUITE = ("vision:cifar10-resnet18 audio:fsdd-vggish language:tinyshakespeare-nanogpt-to-picogpt-t4 "
         "language:tinyshakespeare-adversarial language:tinyshakespeare-width-scaling")


@pytest.mark.slow
def test_run_all_smoke_produces_tables_ticks_and_charts(tmp_path, data_dir, smoke_store):
    copy_store(smoke_store, tmp_path / "results")  # six setups trained already: run_all.sh trains the T=4 one
    from kdlib import setups
    from kdlib.study import collect
    collect(setups.get("tinyshakespeare-nanogpt-to-picogpt", "smoke"), tmp_path / "results")
    env = {**os.environ, "PROFILE": "smoke", "OUT": str(tmp_path / "results"), "FIGURES": str(tmp_path / "figures"),
           "KDLIB_DATA_DIR": str(data_dir), "SUITE": SUITE, "KDLIB_CACHE_DIR": str(tmp_path / "cache"),
           "LAUNCHER": "serial"}  # the local launcher's process start-up would dominate smoke runs
    run = subprocess.run(["bash", "run_all.sh"], cwd=REPO, env=env, check=True, capture_output=True, text=True)
    terminal = run.stdout + run.stderr
    assert "== tinyshakespeare-nanogpt-to-picogpt-t4 (smoke)" in terminal and "run/s" in terminal  # progress, rates
    assert "tinyshakespeare-nanogpt-to-picogpt, KD 0.9, teacher seed 0: transfer" in terminal  # a verdict per alpha
    assert f"open {tmp_path / 'results'}/summary-smoke.ipynb" in terminal
    assert "claims reproduced" in terminal
    assert (tmp_path / "results" / "scorecard.csv").exists() and (tmp_path / "results" / "scorecard.md").exists()
    figures = tmp_path / "figures"
    assert (figures / "tinyshakespeare-width-scaling" / "smoke" / "agreement_vs_variant.pdf").exists()
    assert (figures / "tinyshakespeare-width-scaling" / "smoke" / "scaling_growth.csv").exists()
    for artefact in ("temperature_teacher0.tex", "ticks_T4.csv", "transfer_proportions_teacher0.pdf"):  # T=1 and 4
        assert (figures / "temperature" / "smoke" / artefact).exists(), artefact
    for artefact in ("th_completions_teacher0.csv", "char_frequency.csv", "zipf.pdf"):
        assert (figures / "tinyshakespeare-adversarial" / "smoke" / artefact).exists(), artefact
    assert (figures / "fsdd-vggish" / "smoke" / "audit" / "report.md").exists()
    assert (figures / "cifar10-resnet18" / "smoke" / "copied_errors_examples.png").exists()
    for setup in ("tinyshakespeare-nanogpt-to-picogpt", "cifar10-resnet18", "fsdd-vggish",
                  "tinyshakespeare-nanogpt-to-picogpt-t4", "tinyshakespeare-adversarial"):
        figures = tmp_path / "figures" / setup / "smoke"
        shown = setup != "tinyshakespeare-nanogpt-to-picogpt"  # its study notebook did not run: the summary reports it
        for artefact in ("means_teacher0.csv", "means_teacher0.tex", "extended_teacher0.csv", "ticks.csv",
                         "ticks.tex", "agreement_deltas.pdf", "agreement_deltas.png",
                         "agreement_deltas_normalised.pdf") + (("train_curves.pdf",) if shown else ()):
            assert (figures / artefact).stat().st_size > 0, (setup, artefact)
        assert list((tmp_path / "results" / setup / "smoke").glob("*.ipynb")) or not shown, setup
        means = (figures / "means_teacher0.tex").read_text()
        assert r"\toprule" in means and r"\textbf{" in means and "SIDDO" in means
    assert (tmp_path / "results" / "summary-smoke.ipynb").exists()
    for artefact in ("vs_paper_teacher0.csv", "ticks_vs_paper.csv", "teachers_vs_paper.csv", "vs_paper.pdf"):
        assert (tmp_path / "figures" / "tinyshakespeare-nanogpt-to-picogpt" / "smoke" / artefact).exists(), artefact
    # re-running resumes: nothing is trained again; a setup whose data is missing is listed and skipped
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "runs").glob("*/result.json")}
    rerun = subprocess.run(["bash", "run_all.sh"], cwd=REPO, capture_output=True, text=True,
                           env={**env, "SUITE": "vision:svhn-resnet18 language:tinyshakespeare-nanogpt-to-picogpt",
                                "SUMMARY": "0"})
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "skipping svhn-resnet18: its data is missing" in rerun.stdout and "train_32x32.mat" in rerun.stdout
    assert "reusing 15 finished, 0 to train" in rerun.stdout and "== summary" not in rerun.stdout
    assert "summary-smoke.ipynb" not in rerun.stdout  # SUMMARY=0 wrote none, so it points to none
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "runs").glob("*/result.json")}


PAIR = ("digits-resnet18",)


@pytest.mark.slow
def test_kdlib_study_and_run_all_write_the_same_files(tmp_path, data_dir, smoke_store):
    """run_all.sh is `python -m kdlib study` with its knobs as flags: a suite at the smoke profile writes the same
    files either way, the same tables, LaTeX and scorecard byte for byte (one setup keeps it short; the next test
    checks that every knob reaches its flag)."""
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
        run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
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
           "SLURM_PARTITION": "gpu", "TIME_LIMIT": "240", "READINGS": "gpt-architecture=nanogpt training-precision=float32"}
    subprocess.run(["bash", "run_all.sh"], cwd=REPO, env=env, check=True)
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv == ["-m", "kdlib", "study", "--suite", "core", "--profile", "smoke", "--data-dir", "d", "--device",
                    "cuda", "--out", "o", "--figures", "f", "--launcher", "slurm", "--workers", "8", "--pack", "auto",
                    "--compile", "off", "--notebook-jobs", "3", "--no-summary", "--gpus-per-run", "1",
                    "--slurm-partition", "gpu", "--time-limit", "240", "--reading", "gpt-architecture=nanogpt",
                    "--reading", "training-precision=float32"]
    env.update(SUITE="language:tinyshakespeare-nanogpt vision:cifar10-resnet18")  # the older hand-typed form
    subprocess.run(["bash", "run_all.sh"], cwd=REPO, env=env, check=True)
    assert (tmp_path / "argv").read_text().splitlines()[:5] == ["-m", "kdlib", "study", "language:tinyshakespeare-nanogpt",
                                                                 "vision:cifar10-resnet18"]
