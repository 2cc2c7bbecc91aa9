"""Mirroring training to TensorBoard or MLflow (``--log-to``): each run's loss curve as it trains, its result, and
a setup's collected analysis. Off by default; off, this module imports neither package (nor torch).

Everything goes under ``out/tracking/``:

    tensorboard/<setup>/<run_id>/   a run's event files: "params" (text), "train/loss", its result's numbers (step 0)
    tensorboard/<setup>/analysis/   the setup's analysis: each table as text, and the rows' means as scalars
    mlruns/                         MLflow's local file store: an experiment per setup, a run per run id (params:
                                    the flattened spec) and one named "analysis" (tables as CSV artifacts)
    mlflow-runs/<setup>/<name>      the MLflow run id behind each run name, so that a resumed run continues its run

A resumed run (a checkpointed run continuing after step s) appends to what it logged before: in TensorBoard a new
event file hides the points the interrupted run logged past s; in MLflow the run is found again and the steps it
had logged are kept rather than logged twice. Each process writes its own runs: runs of one setup may be written by
several processes at once (MLflow's experiment is created under a lock). The analysis replaces the previous one.
MLflow (3.x) keeps its file store only for those who opt in: this module sets MLFLOW_ALLOW_FILE_STORE=true unless
it is set.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import time
from pathlib import Path

TRACKERS = ("tensorboard", "mlflow")
LOSS = "train/loss"
ANALYSIS = "analysis"
#: keys of a result record that are not measurements: the spec is the run's params, the pid is where it ran
NOT_RESULTS = ("spec", "pid")
#: the columns that name a row's mean in an analysis table, those it has (e.g. means: metric, column, teacher seed)
LABELS = ("metric", "column", "variant", "teacher_seed")


def check(kind: str | None) -> str | None:
    """``kind`` itself if None or a tracker whose package is installed; else a ValueError of one line."""
    if kind is None:
        return None
    if kind not in TRACKERS:
        raise ValueError(f"--log-to {kind!r} is not a tracker: use one of {', '.join(TRACKERS)}")
    if importlib.util.find_spec(kind) is None:
        raise ValueError(f"--log-to {kind} needs the {kind} package: pip install {kind}")
    return kind


class Tracker:
    """Where one training run is mirrored (:func:`open_run`); a context manager that closes it."""

    def curve(self, step: int, loss: float) -> None:
        """The train loss of a logging step ("train/loss"), as the run trains."""
        raise NotImplementedError

    def result(self, record: dict) -> None:
        """The run's result record (as result.json holds it): its numbers, nested keys joined by "/"
        (e.g. "metrics/activation_distance", "test_accuracy", "train_seconds")."""
        raise NotImplementedError

    def close(self, interrupted: bool = False) -> None:
        """Finish the run; ``interrupted``: it stopped before its result (it resumes when run again)."""
        raise NotImplementedError

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, error, *_) -> None:
        self.close(interrupted=error is not None)


def open_run(kind: str | None, out: Path, setup: str, run_id: str, params: dict) -> Tracker | None:
    """A tracker for the run ``run_id`` of ``setup`` under ``out/tracking`` (None when ``kind`` is None: then
    nothing is imported); ``params``: the run's spec (nested keys joined by "/"). Re-opening a run appends to it."""
    if check(kind) is None:
        return None
    if kind == "tensorboard":
        return _TensorBoard(Path(out) / "tracking" / "tensorboard" / setup / run_id, params)
    from mlflow.entities import Param
    client, experiment = _mlflow(out, setup)
    run = _existing(client, _pointer(out, setup, run_id))
    if run is not None:  # resumed
        client.update_run(run, status="RUNNING")
        return _MLflow(client, run, {m.step for m in client.get_metric_history(run, LOSS)})
    run = _new_run(client, experiment, _pointer(out, setup, run_id))
    client.log_batch(run, params=[Param(k, str(v)) for k, v in _params(params).items()])
    return _MLflow(client, run, set())


def mirror_analysis(kind: str | None, out: Path, setup: str, tables: dict) -> None:
    """Mirror the collected analysis of ``setup`` (table name -> DataFrame), replacing the previous one: each
    table as a markdown text (TensorBoard) or a CSV artifact of the run named "analysis" (MLflow), and, for a table
    with a numeric ``mean`` column, each row's mean as a scalar "<table>/<its LABELS>". No-op for None."""
    if check(kind) is None:
        return
    means = _means(tables)
    if kind == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter
        # purge_step=0: TensorBoard hides what earlier mirrors wrote here
        with SummaryWriter(str(Path(out) / "tracking" / "tensorboard" / setup / ANALYSIS), purge_step=0) as writer:
            for name, table in tables.items():
                writer.add_text(f"{ANALYSIS}/{name}", _markdown(list(table.columns), table.itertuples(index=False)), 0)
            for key, value in means.items():
                writer.add_scalar(key, value, 0)
        return
    from mlflow.entities import Metric
    client, experiment = _mlflow(out, setup)
    pointer = _pointer(out, setup, ANALYSIS)
    previous = _existing(client, pointer)
    if previous is not None:
        client.delete_run(previous)
    run = _new_run(client, experiment, pointer)
    for name, table in tables.items():
        client.log_text(run, table.to_csv(index=False), f"{name}.csv")
    now = int(time.time() * 1000)
    client.log_batch(run, metrics=[Metric(key, value, now, 0) for key, value in means.items()])
    client.set_terminated(run)


class _TensorBoard(Tracker):
    """A run's event files in ``folder``, written from its first value on."""

    def __init__(self, folder: Path, params: dict):
        self.folder, self.params, self.writer = folder, params, None

    def _open(self, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter
        fresh = not any(self.folder.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(str(self.folder), purge_step=purge_step)
        if fresh:
            self.writer.add_text("params", _markdown(["param", "value"], _params(self.params).items()), 0)

    def curve(self, step: int, loss: float) -> None:
        if self.writer is None:  # resumed: hide the points an interrupted run logged from this step on
            self._open(purge_step=step)
        self.writer.add_scalar(LOSS, loss, step)
        self.writer.flush()  # a killed run keeps its curve up to its checkpoint

    def result(self, record: dict) -> None:
        if self.writer is None:
            self._open(purge_step=None)
        for key, value in _results(record).items():
            self.writer.add_scalar(key, value, 0)

    def close(self, interrupted: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()


class _MLflow(Tracker):
    """An MLflow run; ``logged``: the steps of the curve it holds (those of an interrupted run, when resumed)."""

    def __init__(self, client, run: str, logged: set[int]):
        self.client, self.run, self.logged, self.failed = client, run, logged, False

    def curve(self, step: int, loss: float) -> None:
        if step not in self.logged:
            self.client.log_metric(self.run, LOSS, loss, step=step)
            self.logged.add(step)

    def result(self, record: dict) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run, metrics=[Metric(k, v, now, 0) for k, v in _results(record).items()])
        self.failed = record.get("status") == "failed"

    def close(self, interrupted: bool = False) -> None:
        self.client.set_terminated(self.run, "KILLED" if interrupted else "FAILED" if self.failed else "FINISHED")


def _mlflow(out: Path, setup: str):
    """A client of the store out/tracking/mlruns and the id of ``setup``'s experiment, created once however many
    processes ask at once."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks to opt in to its file store
    from mlflow.tracking import MlflowClient
    root = Path(out) / "tracking"
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / "mlruns.lock"):
        client = MlflowClient((root / "mlruns").resolve().as_uri())
        experiment = client.get_experiment_by_name(setup)
        return client, experiment.experiment_id if experiment else client.create_experiment(setup)


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on the file ``path`` (between processes)."""
    import fcntl
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _pointer(out: Path, setup: str, name: str) -> Path:
    """The file holding the MLflow id of the run named ``name`` (found without searching the store's runs)."""
    return Path(out) / "tracking" / "mlflow-runs" / setup / name


def _existing(client, pointer: Path) -> str | None:
    """The MLflow run ``pointer`` names, if it is still in the store."""
    from mlflow.exceptions import MlflowException
    try:
        run = client.get_run(pointer.read_text().strip())
    except (OSError, MlflowException):
        return None
    return run.info.run_id if run.info.lifecycle_stage == "active" else None


def _new_run(client, experiment: str, pointer: Path) -> str:
    """A new MLflow run named as ``pointer``, which then names it."""
    run = client.create_run(experiment, run_name=pointer.name).info.run_id
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(run)
    return run


def _name(key) -> str:
    """``key`` as a part of a metric or param name both trackers take."""
    return re.sub(r"[^\w.\- ]", "_", str(key)) or "_"


def _flat(record: dict, prefix: str = "") -> dict:
    """The leaves of a nested dict under their keys joined by "/"."""
    leaves = {}
    for key, value in record.items():
        if isinstance(value, dict):
            leaves.update(_flat(value, f"{prefix}{_name(key)}/"))
        else:
            leaves[prefix + _name(key)] = value
    return leaves


def _params(spec: dict) -> dict:
    """A run's params: its spec's set values."""
    return {k: v for k, v in _flat(spec).items() if v is not None}


def _results(record: dict) -> dict[str, float]:
    """The numbers of a result record."""
    leaves = _flat({k: v for k, v in record.items() if k not in NOT_RESULTS})
    return {k: float(v) for k, v in leaves.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _means(tables: dict) -> dict[str, float]:
    """Each row's mean of the tables with a numeric ``mean`` column, named by the table and the row's LABELS (the
    row number where the table has none)."""
    import pandas as pd
    means = {}
    for name, table in tables.items():
        if "mean" not in table or table["mean"].dtype.kind not in "iuf":
            continue
        labels = [c for c in LABELS if c in table]
        for i, row in enumerate(table[[*labels, "mean"]].to_dict("records")):
            parts = [row[c] if isinstance(row[c], str) else f"{c} {row[c]}" for c in labels if not pd.isna(row[c])]
            means["/".join(_name(p) for p in [name, *(parts or [i])])] = float(row["mean"])
    return means


def _markdown(columns: list, rows) -> str:
    """A markdown table (TensorBoard's text dashboard shows it as a table)."""
    def cell(value) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value).replace("|", "\\|")
    if not columns:
        return "(empty)"
    lines = [[str(c) for c in columns], *([cell(v) for v in row] for row in rows)]
    return "\n".join(["| " + " | ".join(lines[0]) + " |", "|" + " --- |" * len(columns),
                      *("| " + " | ".join(line) + " |" for line in lines[1:])])
