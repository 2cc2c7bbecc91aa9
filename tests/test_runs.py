import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_store

from kdlib.runs import run as runs_mod
from kdlib import setups
from kdlib.runs.spec import plan
from kdlib.runs.run import run_one
from kdlib.store import atomic_write, read_result, run_dir
from kdlib.analysis.collect import collect

REPO = Path(__file__).resolve().parents[1]
SMOKE = "tinyshakespeare-nanogpt"


def test_run_ids_are_stable_and_hash_what_is_trained():
    a, b = plan(setups.get(SMOKE, "smoke")), plan(setups.get(SMOKE, "smoke"))
    assert [s.run_id for s in a] == [s.run_id for s in b]
    assert len({s.run_id for s in a}) == len(a) == 1 + 2 * 7
    assert replace(a[1], tags={"setup": "other"}).run_id == a[1].run_id  # names are not hashed
    assert replace(a[1], student_seed=99).run_id != a[1].run_id
    pico = plan(setups.get("tinyshakespeare-nanogpt-to-picogpt", "smoke"))
    assert pico[0].run_id == a[0].run_id  # the shared Nano-GPT teacher is trained once
    assert pico[1].init == "seed" and a[1].init == "teacher"
    assert all(s.teacher_id == a[0].run_id for s in a[1:])


def test_unknown_names_raise_with_allowed_values():
    with pytest.raises(ValueError, match=r"unknown setup 'tinyshakespear-nanogpt': did you mean "
                                         r"'tinyshakespeare-nanogpt'"):
        setups.get("tinyshakespear-nanogpt", "smoke")
    with pytest.raises(ValueError, match=r"unknown setup 'nope': `python -m kdlib list` shows all \d+"):
        setups.get("nope", "smoke")
    with pytest.raises(ValueError, match=r"unknown profile 'huge'.*'paper', 'cpu', 'smoke'"):
        setups.get(SMOKE, "huge")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x" / "result.json"

    def boom(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert not target.exists() and list(target.parent.iterdir()) == []
    atomic_write(target, lambda f: f.write(b"{}"))
    assert target.read_text() == "{}"


@pytest.fixture(scope="module")
def smoke_out(smoke_store, tmp_path_factory):
    """This module's copy of the session's smoke store (its tests corrupt and rewrite results)."""
    return copy_store(smoke_store, tmp_path_factory.mktemp("smoke") / "store")


def test_run_one_is_idempotent_and_redoes_corrupt_results(smoke_out, data_dir, monkeypatch):
    specs = plan(setups.get(SMOKE, "smoke"))
    calls = []
    real_train = runs_mod.train
    monkeypatch.setattr(runs_mod, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    first = run_one(specs[3], smoke_out, data_dir, teacher=specs[0])
    assert calls == []  # finished: nothing trained
    (run_dir(smoke_out, specs[3]) / "result.json").write_text('{"run_id": "tru')  # truncated file
    assert read_result(smoke_out, specs[3]) is None
    again = run_one(specs[3], smoke_out, data_dir, teacher=specs[0])
    assert calls == [1] and again["metrics"] == first["metrics"]  # re-done, same bits


def test_results_hold_metrics_teacher_curve_and_timing(smoke_out):
    students, teachers = collect(setups.get(SMOKE, "smoke"), smoke_out)
    assert len(students) == 14 and len(teachers) == 1
    assert set(students["condition"]) == {"siddo", "kd", "rcd"}
    for col in ("activation_distance", "js_divergence", "correct_agreement", "accuracy", "final_train_loss",
                "train_seconds"):
        assert students[col].notna().all(), col
    result = json.loads(next((smoke_out / "runs").glob("*/result.json")).read_text())
    assert "device" in result and "spec" in result


def _results(out):
    return sorted((out / "runs").glob("*/result.json"))


@pytest.mark.slow
def test_kill_mid_setup_then_resume_gives_the_same_table(smoke_out, tmp_path, data_dir):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "kdlib", "run", SMOKE, "--profile", "smoke", "--data-dir", str(data_dir),
           "--out", str(out), "--launcher", "serial"]  # one process, killed mid-way
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_results(out)) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in _results(out)}
    assert 4 <= len(done_before) < 15, "the kill should land mid-way"
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = {p.parent.name: p.stat().st_mtime_ns for p in _results(out)}
    assert len(after) == 15
    assert all(after[k] == v for k, v in done_before.items())  # finished runs were not trained again
    setup = setups.get(SMOKE, "smoke")
    resumed, _ = collect(setup, out, write=False)
    uninterrupted, _ = collect(setup, smoke_out, write=False)
    drop = ["train_seconds"]
    pd.testing.assert_frame_equal(resumed.drop(columns=drop), uninterrupted.drop(columns=drop))


def test_study_runs_audited_from_exported_outputs_match_the_study(smoke_out, tmp_path, data_dir):
    from kdlib.audit import audit
    from kdlib.runs.export import export_outputs
    from kdlib.analysis.stats import transfer_tests
    setup = setups.get(SMOKE, "smoke")
    dest = export_outputs(setup, smoke_out, tmp_path / "export", data_dir) / "teacher0"
    students, _ = collect(setup, smoke_out, write=False)
    seeds = sorted(students["student_seed"].unique())
    report = audit(dest / "teacher.npy", [dest / "kd_0.9" / f"seed{s}.npy" for s in seeds], dest / "labels.npy",
                   controls={"siddo": [dest / "siddo" / f"seed{s}.npy" for s in seeds]})
    kd = students[(students.condition == "kd") & (students.alpha == 0.9)].sort_values("student_seed")
    siddo = students[students.condition == "siddo"].sort_values("student_seed")
    for metric in ("activation_distance", "js_divergence", "rank_disagreement", "correct_agreement", "accuracy"):
        assert report["means"]["student"][metric] == pytest.approx(kd[metric].mean(), rel=1e-9), metric
        assert report["means"]["siddo"][metric] == pytest.approx(siddo[metric].mean(), rel=1e-9), metric
    tests = transfer_tests(students).set_index(["alpha", "metric"])
    assert report["deltas"]["siddo"]["js_divergence"]["p"] == pytest.approx(tests.loc[(0.9, "js_divergence"), "p_siddo"])
    assert len((dest / "classes.txt").read_text().splitlines()) == 65
