"""Collecting a setup's finished runs from the store into tables (students, teachers, failed), with the setup's
analysis written beside them; and the train-loss curves for plots."""
from __future__ import annotations

import math
import sys

import pandas as pd

from .. import analysis, tracking
from ..runs import provenance
from ..conditions import CONDITIONS
from ..runs.spec import plan
from ..setups import Setup
from ..store import read_result, setup_dir, write_json, write_table


def collect(setup: Setup, out, write: bool = True, log_to: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gather a setup's finished runs into (students, teachers) tables; write them under out/<setup>/<profile>/
    with what made them (``provenance.json``), and mirror the analysis where ``log_to`` says (:mod:`kdlib.tracking`).

    Failed runs (diverged) are left out of both and listed with their reason in ``failed``; the statistics
    then report the pairs they leave incomplete (``missing_pairs``)."""
    students, teachers, failed = gather(setup, out)
    if write:
        write_collected(setup, out, students, teachers, failed)
        made = provenance.summarise([r.provenance or {} for s in plan(setup)
                                     if (r := read_result(out, s)) is not None and not r.failed])
        write_json(setup_dir(out, setup) / provenance.FILE, made)
        if provenance.mixed(made):
            print(f"kdlib collect: warning: {setup.label}: {provenance.mixed(made)}", file=sys.stderr, flush=True)
        tracking.mirror_analysis(log_to, out, f"{setup.label}/{setup.profile}",
                                 analysis.collected_analysis(setup_dir(out, setup)))
    return students, teachers


def write_collected(setup: Setup, out, students: pd.DataFrame, teachers: pd.DataFrame,
                    failed: pd.DataFrame) -> None:
    """The tables :func:`gather` returns, as ``runs``, ``teachers`` and ``failed`` in out/<setup>/<profile>/, and
    the setup's analysis beside them (:mod:`kdlib.analysis`), computed once here for every reader after."""
    d = setup_dir(out, setup)
    write_table(students, d / "runs")
    write_table(teachers, d / "teachers")
    write_table(failed, d / "failed")
    analysis.write(analysis.analyse(students, **analysis.options(setup)) if len(students)
                   else {k: pd.DataFrame() for k in analysis.FILES}, d)


def gather(setup: Setup, out) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A setup's finished runs as (students, teachers, failed) tables, read from the store (nothing written)."""
    students, teachers, failed = [], [], []
    for spec in plan(setup):
        result = read_result(out, spec)
        if result is None:
            continue
        if result.failed:
            failed.append({"run_id": spec.run_id, "condition": spec.condition, "teacher_seed": spec.teacher_seed,
                           "student_seed": spec.student_seed, "alpha": spec.alpha, "reason": result.reason})
            continue
        row = {"setup": setup.label, "profile": setup.profile, "run_id": spec.run_id,
               "teacher_seed": spec.teacher_seed, "condition": spec.condition,
               "train_seconds": math.nan if result.train_seconds is None else result.train_seconds,
               "pack_size": len(result.pack or [spec.run_id])}
        if spec.role == "teacher":
            teachers.append({**row, **_train_metrics(result, setup.teacher_train_metrics),
                             "test_loss": result.test_loss, "test_accuracy": result.test_accuracy,
                             **(result.probes or {})})
        else:
            if spec.variant is not None:
                row["variant"] = spec.variant
            students.append({**row, "student_seed": spec.student_seed,
                             "alpha": spec.alpha if CONDITIONS[spec.condition].weighted else math.nan,
                             "temperature": spec.temperature, **result.metrics, **(result.probes or {}),
                             "final_train_loss": result.final_train_loss})
    return pd.DataFrame(students), pd.DataFrame(teachers), pd.DataFrame(
        failed, columns=["run_id", "condition", "teacher_seed", "student_seed", "alpha", "reason"])


def _train_metrics(result, measured: str) -> dict:
    """A teacher's train loss and accuracy as the ``teacher-train-metrics`` reading reads them: ``clean`` (evaluated
    after training) or ``augmented`` (the training loop's last epoch; NaN for a run stored before it was recorded)."""
    if measured == "clean":
        return {"train_loss": result.train_loss, "train_accuracy": result.train_accuracy}
    loss, accuracy = result.get("train_loss_augmented"), result.get("train_accuracy_augmented")
    return {"train_loss": math.nan if loss is None else loss, "train_accuracy": math.nan if accuracy is None
            else accuracy}


def curves(setup: Setup, out) -> pd.DataFrame:
    """Long table of every finished run's train-loss curve (for plots)."""
    rows = []
    for spec in plan(setup):
        result = read_result(out, spec)
        if result and result.train_curve:
            for step, loss in zip(result.train_curve["step"], result.train_curve["loss"]):
                rows.append({"run_id": spec.run_id, "condition": spec.condition, "alpha": spec.alpha,
                             "teacher_seed": spec.teacher_seed, "student_seed": spec.student_seed,
                             "step": step, "loss": loss})
    return pd.DataFrame(rows)
