"""kdlib.tracking (``--log-to``): what it mirrors is read back offline, from TensorBoard's event files and from the
MLflow store; off, it imports neither package."""
import io
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from kdlib import tracking

PARAMS = {"condition": "kd", "alpha": 0.5, "student_seed": 1, "temperature": None,
          "recipe": {"steps": 40, "milestones": [10, 20]}}
# values a float32 holds exactly: TensorBoard stores scalars as float32
CURVE = [(10, 2.5), (20, 2.0), (30, 1.75)]
RESUMED = [(30, 1.5), (40, 1.25)]  # the run, killed after step 30 with its checkpoint at step 25, run again
RECORD = {"run_id": "run1", "status": "ok", "spec": {**PARAMS, "teacher_seed": 0}, "pid": 4242, "device": "cpu",
          "metrics": {"activation_distance": 0.25, "prediction_disagreement": 0.125}, "test_accuracy": 0.75,
          "train_seconds": 3.5, "train_curve": {"step": [10, 20, 30, 40], "loss": [2.5, 2.0, 1.5, 1.25]},
          "teacher": {"test_accuracy": 0.875}, "pack": ["run1", "run2"], "eval_flip": False}
RESULTS = {"metrics/activation_distance": 0.25, "metrics/prediction_disagreement": 0.125, "test_accuracy": 0.75,
           "train_seconds": 3.5, "teacher/test_accuracy": 0.875}


def means_table(shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"metric": ["activation_distance", "activation_distance", "test_accuracy"],
                         "condition": ["kd", "siddo", "kd"], "alpha": [0.5, float("nan"), 0.5],
                         "column": ["KD 0.5", "SIDDO", "KD 0.5"], "mean": [0.25 + shift, 0.5 + shift, 0.75],
                         "sem": [0.125, 0.125, 0.0625], "n": [3, 3, 3], "teacher_seed": [0, 0, 0],
                         "variant": [None, None, None]})


TESTS = pd.DataFrame({"metric": ["activation_distance"], "alpha": [0.5], "p_siddo": [0.0625], "supported": [True]})
MEANS = {"means/activation_distance/KD 0.5/teacher_seed 0": 0.25, "means/activation_distance/SIDDO/teacher_seed 0": 0.5,
         "means/test_accuracy/KD 0.5/teacher_seed 0": 0.75}


@pytest.fixture
def mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # offline: no usage reports
    return pytest.importorskip("mlflow", reason="the mlflow package is not installed (pip install mlflow-skinny)")


@pytest.fixture
def tensorboard():
    return pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")


def events(folder: Path):
    """The run in ``folder`` as TensorBoard reads it (its Python loader: the restarts' purges applied)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def values(accumulator, tag: str) -> list:
    from tensorboard.util import tensor_util
    return [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in accumulator.Tensors(tag)]


def scalars(accumulator) -> dict[str, list[tuple[int, float]]]:
    tags = accumulator.PluginTagToContent("scalars")
    return {tag: values(accumulator, tag) for tag in tags}


def text(accumulator, tag: str) -> list[str]:
    return [value.decode() for _, value in values(accumulator, tag)]


def later_second():
    """Wait for the next wall-clock second: a resumed run starts later, so its event file sorts after the first."""
    time.sleep(1.01 - time.time() % 1)


class Killed(Exception):
    """A run stopped before its result (SIGTERM, a crash): it resumes from its checkpoint."""


def train(kind, out, run_id="run1", curve=CURVE, record=None):
    """Log a run as the training loop does: its curve, then its result; without one it is killed."""
    with tracking.open_run(kind, out, "digits/smoke", run_id, PARAMS) as tracker:
        for step, loss in curve:
            tracker.curve(step, loss)
        if record is None:
            raise Killed
        tracker.result(record)


def interrupted(kind, out, run_id="run1"):
    with pytest.raises(Killed):
        train(kind, out, run_id)


def store(out: Path):
    from mlflow.tracking import MlflowClient
    client = MlflowClient((out / "tracking" / "mlruns").resolve().as_uri())
    return client, client.get_experiment_by_name("digits/smoke").experiment_id


def test_tensorboard_mirrors_curve_params_and_result_and_a_resumed_run_appends(tmp_path, tensorboard):
    interrupted("tensorboard", tmp_path)
    later_second()
    train("tensorboard", tmp_path, curve=RESUMED, record=RECORD)
    folder = tmp_path / "tracking" / "tensorboard" / "digits" / "smoke" / "run1"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2
    run = events(folder)
    # step 30 as the resumed run logged it: the interrupted run's is purged
    assert scalars(run) == {"train/loss": [(10, 2.5), (20, 2.0), (30, 1.5), (40, 1.25)],
                            **{tag: [(0, value)] for tag, value in RESULTS.items()}}
    [params] = text(run, "params/text_summary")
    assert "| alpha | 0.5 |" in params and "| recipe/milestones | [10, 20] |" in params


def test_mlflow_mirrors_curve_params_and_result_in_one_run_per_run_id(tmp_path, mlflow):
    interrupted("mlflow", tmp_path)
    client, experiment = store(tmp_path)
    [run] = client.search_runs([experiment])
    assert (run.info.run_name, run.info.status) == ("run1", "KILLED")
    train("mlflow", tmp_path, curve=RESUMED, record=RECORD)
    [run] = client.search_runs([experiment])
    assert (run.info.run_name, run.info.status) == ("run1", "FINISHED")
    history = client.get_metric_history(run.info.run_id, "train/loss")
    # step 30 as the interrupted run logged it: MLflow keeps a step once
    assert sorted((m.step, m.value) for m in history) == [(10, 2.5), (20, 2.0), (30, 1.75), (40, 1.25)]
    assert run.data.params == {"condition": "kd", "alpha": "0.5", "student_seed": "1", "recipe/steps": "40",
                               "recipe/milestones": "[10, 20]"}
    assert {k: v for k, v in run.data.metrics.items() if k != "train/loss"} == RESULTS
    assert all(m.step == 0 for k in RESULTS for m in client.get_metric_history(run.info.run_id, k))


def test_a_failed_run_is_a_failed_mlflow_run(tmp_path, mlflow):
    train("mlflow", tmp_path, curve=[], record={"run_id": "run1", "status": "failed", "reason": "diverged"})
    client, experiment = store(tmp_path)
    [run] = client.search_runs([experiment])
    assert run.info.status == "FAILED" and run.data.metrics == {}


def _killed_after_curve(out):
    tracker = tracking.open_run("tensorboard", out, "digits/smoke", "run1", PARAMS)
    for step, loss in CURVE:
        tracker.curve(step, loss)
    os._exit(0)  # SIGKILL's way out: nothing closed, nothing flushed at exit


def test_a_killed_process_keeps_the_curve_it_logged(tmp_path, tensorboard):
    worker = multiprocessing.get_context("fork").Process(target=_killed_after_curve, args=(tmp_path,))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    assert scalars(events(tmp_path / "tracking" / "tensorboard" / "digits" / "smoke" / "run1"))["train/loss"] == CURVE


def _train_one(kind, out, run_id, barrier):
    barrier.wait()  # every process opens its run at once (MLflow: a setup's experiment not yet there)
    train(kind, out, run_id, record=RECORD)


@pytest.mark.parametrize("kind", tracking.TRACKERS)
def test_processes_write_runs_of_one_setup_at_once(tmp_path, kind, request):
    request.getfixturevalue(kind)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_train_one, args=(kind, tmp_path, f"run{i}", barrier)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 4
    runs = {f"run{i}" for i in range(4)}
    if kind == "tensorboard":
        folder = tmp_path / "tracking" / "tensorboard" / "digits" / "smoke"
        assert {p.name for p in folder.iterdir()} == runs
        assert all(scalars(events(folder / r))["train/loss"] == CURVE for r in runs)
        return
    client, _ = store(tmp_path)
    [experiment] = [e for e in client.search_experiments() if e.name == "digits/smoke"]
    found = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in found) == sorted(runs)
    assert all(sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "train/loss")) == CURVE
               for r in found)


def test_tensorboard_mirrors_the_analysis_replacing_the_previous_one(tmp_path, tensorboard):
    tracking.mirror_analysis("tensorboard", tmp_path, "digits/smoke", {"means": means_table(0.5), "tests": TESTS})
    later_second()
    tracking.mirror_analysis("tensorboard", tmp_path, "digits/smoke", {"means": means_table(), "tests": TESTS})
    analysis = events(tmp_path / "tracking" / "tensorboard" / "digits" / "smoke" / "analysis")
    assert scalars(analysis) == {tag: [(0, value)] for tag, value in MEANS.items()}
    [means] = text(analysis, "analysis/means/text_summary")
    assert means.splitlines()[:3] == [
        "| metric | condition | alpha | column | mean | sem | n | teacher_seed | variant |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| activation_distance | kd | 0.5 | KD 0.5 | 0.25 | 0.125 | 3 | 0 | None |"]
    [tests] = text(analysis, "analysis/tests/text_summary")
    assert tests.splitlines()[2] == "| activation_distance | 0.5 | 0.0625 | True |"


def test_mlflow_mirrors_the_analysis_as_one_run_replacing_the_previous_one(tmp_path, mlflow):
    train("mlflow", tmp_path, record=RECORD)
    tracking.mirror_analysis("mlflow", tmp_path, "digits/smoke", {"means": means_table(0.5), "tests": TESTS})
    tracking.mirror_analysis("mlflow", tmp_path, "digits/smoke", {"means": means_table(), "tests": TESTS})
    client, experiment = store(tmp_path)
    runs = {r.info.run_name: r for r in client.search_runs([experiment])}
    assert len(client.search_runs([experiment])) == 2 and set(runs) == {"run1", "analysis"}
    analysis = runs["analysis"]
    assert analysis.data.metrics == MEANS
    for name, table in {"means": means_table(), "tests": TESTS}.items():
        path = client.download_artifacts(analysis.info.run_id, f"{name}.csv", str(tmp_path))
        pd.testing.assert_frame_equal(pd.read_csv(path), pd.read_csv(io.StringIO(table.to_csv(index=False))))


def test_off_by_default_imports_no_tracker(tmp_path):
    code = ("import sys; from pathlib import Path; from kdlib import tracking\n"
            "assert tracking.check(None) is None\n"
            "assert tracking.open_run(None, Path('.'), 'digits', 'run1', {'alpha': 0.5}) is None\n"
            "tracking.mirror_analysis(None, Path('.'), 'digits', {})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'mlflow')"
            " or m.startswith('torch.utils.tensorboard')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []


def test_check_names_a_bad_tracker_or_a_missing_package_in_one_line(tmp_path, monkeypatch):
    installed = {"tensorboard"}  # as if mlflow were not
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: object() if name in installed else None)
    assert tracking.check(None) is None and tracking.check("tensorboard") == "tensorboard"
    with pytest.raises(ValueError) as bad:
        tracking.open_run("wandb", tmp_path, "digits", "run1", PARAMS)
    assert str(bad.value) == "--log-to 'wandb' is not a tracker: use one of tensorboard, mlflow"
    with pytest.raises(ValueError) as missing:
        tracking.open_run("mlflow", tmp_path, "digits", "run1", PARAMS)
    assert str(missing.value) == "--log-to mlflow needs the mlflow package: pip install mlflow"
    assert list(tmp_path.iterdir()) == []


def test_a_setup_run_with_log_to_mirrors_each_runs_curve_and_result_and_its_analysis(tmp_path, data_dir, tensorboard):
    """``kdlib run --log-to tensorboard``, packed: every run's folder holds its own loss curve (the one its result
    records) and its result; the setup's analysis is mirrored beside them."""
    from kdlib import setups
    from kdlib.__main__ import main
    from kdlib.runs.spec import plan
    from kdlib.store import read_result
    assert main(["run", "tinyshakespeare-nanogpt", "--profile", "smoke", "--data-dir", str(data_dir), "--out",
                 str(tmp_path), "--log-to", "tensorboard", "--pack", "7", "--launcher", "serial"]) == 0
    folder = tmp_path / "tracking" / "tensorboard" / "tinyshakespeare-nanogpt" / "smoke"
    for spec in plan(setups.get("tinyshakespeare-nanogpt", "smoke")):
        result = read_result(tmp_path, spec)
        logged = events(folder / spec.run_id)
        curve = result["train_curve"]
        assert values(logged, tracking.LOSS) == pytest.approx(list(zip(curve["step"], curve["loss"])))
        assert scalars(logged)["test_accuracy" if spec.role == "teacher" else "metrics/activation_distance"]
    assert scalars(events(folder / tracking.ANALYSIS))
