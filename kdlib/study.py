"""A study of one setup: run every spec (teachers first, through a launcher), collect the finished runs into
tables, and read back what the tables and figures need (train curves, test-set outputs for the audit).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import analysis
from . import data as datasets
from . import device as dev
from . import launchers
from .autopack import pack_size
from .runs import RunSpec, load_model, load_task, packs, plan
from .setups import Setup
from .store import is_claimed, read_result, run_dir, save_npy, setup_dir, write_table, write_text
from .train import score


def run_setup(setup: Setup, out, data_dir=None, device: str = "cpu", progress: bool = True,
              launcher: str = "serial", workers: int = 1, threads: int | None = 1,
              poll_seconds: float = 2.0, pack=1, compile: str = "auto", **launcher_options) -> list[dict]:
    """Run every spec of ``setup`` that has no result yet: teachers first, then their students.

    ``pack`` > 1 trains up to that many students of a teacher together in one vectorised step (see
    :mod:`kdlib.together`: for small models on a GPU, not a CPU); 1 trains them one by one; ``"auto"`` probes
    the best size on CUDA once and remembers it (:mod:`kdlib.autopack`; 1 on CPU). ``compile``: torch.compile
    the training steps ("auto": on CUDA only; :func:`kdlib.device.use_compile`).

    Several launchers may share one output folder: each run is claimed before training, so none is trained
    twice; runs claimed by another launcher are waited for (polling every ``poll_seconds``).

    ``launcher_options`` go to the launcher (e.g. ``partition``, ``gpus_per_run``, ``time_limit_min``,
    ``cluster`` for slurm; ``address``, ``gpus_per_run`` for ray). ``threads``: torch CPU threads of this
    process (None: torch's default). One thread is the default because
    the study's small models train about as fast on one thread, and a second thread that competes with any
    other process for a core slows training many times over.
    """
    dev.set_threads(threads)
    dev.use_compile(compile, device)  # a bad value fails here, before any training
    datasets.check(setup.dataset, data_dir)  # and a missing dataset, before any worker starts
    launch = launchers.get(launcher)
    specs = plan(setup)
    teachers = {s.run_id: s for s in specs if s.role == "teacher"}
    done = sum(read_result(out, s) is not None for s in specs)
    if progress:
        tqdm.write(f"{setup.label} ({setup.profile}): {len(specs)} runs; " + (
            f"reusing {done} finished, {len(specs) - done} to train" if done else "none finished yet"))
    stranded: set[str] = set()  # runs without result or claim after the last launch
    while True:
        todo = [s for s in specs if read_result(out, s) is None]
        for role in ("teacher", "student"):
            size = (pack_size(setup, out, data_dir, device, pack, compile=dev.use_compile(compile, device))
                    if role == "student" and todo else 1)
            jobs = [(job, teachers.get((job if isinstance(job, RunSpec) else job[0]).teacher_id))
                    for job in packs([s for s in todo if s.role == role], size)]
            if jobs:
                launch(jobs, out, data_dir, device, workers=workers, progress=progress,
                       desc=f"{setup.label} {role}s" + (f" (packs of {size})" if size > 1 else ""),
                       compile=compile, **launcher_options)
        busy = [s for s in specs if read_result(out, s) is None]
        if not busy:
            return [read_result(out, s) for s in specs]
        unclaimed = {s.run_id for s in busy if not is_claimed(out, s)}
        if len(unclaimed) < len(busy):  # another launcher is training some: wait, then pick up what it leaves
            stranded = set()
            time.sleep(poll_seconds)
            continue
        if unclaimed & stranded:  # launched while nobody held them, and still no result: a bug, not a race
            raise RuntimeError(f"{len(unclaimed)} runs of {setup.label} neither finished nor are claimed by another "
                               f"process, e.g. {sorted(unclaimed)[0]}")
        stranded = unclaimed  # released by another process without a result (it died or gave up): take them over


def collect(setup: Setup, out, write: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gather a setup's finished runs into (students, teachers) tables; write them under out/<setup>/<profile>/.

    Failed runs (diverged) are left out of both and listed with their reason in ``failed``; the statistics
    then report the pairs they leave incomplete (``missing_pairs``)."""
    students, teachers, failed = gather(setup, out)
    if write:
        write_collected(setup, out, students, teachers, failed)
    return students, teachers


def write_collected(setup: Setup, out, students: pd.DataFrame, teachers: pd.DataFrame,
                    failed: pd.DataFrame) -> None:
    """The tables :func:`gather` returns, as ``runs``, ``teachers`` and ``failed`` in out/<setup>/<profile>/, and
    the setup's analysis beside them (:mod:`kdlib.analysis`), computed once here for every reader after."""
    d = setup_dir(out, setup)
    write_table(students, d / "runs")
    write_table(teachers, d / "teachers")
    write_table(failed, d / "failed")
    analysis.write(analysis.analyse(students) if len(students) else {k: pd.DataFrame() for k in analysis.FILES}, d)


def gather(setup: Setup, out) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A setup's finished runs as (students, teachers, failed) tables, read from the store (nothing written)."""
    students, teachers, failed = [], [], []
    for spec in plan(setup):
        result = read_result(out, spec)
        if result is None:
            continue
        if result.get("status") == "failed":
            failed.append({"run_id": spec.run_id, "condition": spec.condition, "teacher_seed": spec.teacher_seed,
                           "student_seed": spec.student_seed, "alpha": spec.alpha, "reason": result["reason"]})
            continue
        row = {"setup": setup.label, "profile": setup.profile, "run_id": spec.run_id,
               "teacher_seed": spec.teacher_seed, "condition": spec.condition,
               "train_seconds": result.get("train_seconds", math.nan),
               "pack_size": len(result.get("pack", [spec.run_id]))}
        if spec.role == "teacher":
            teachers.append({**row, **{k: result[k] for k in ("train_loss", "train_accuracy", "test_loss",
                                                               "test_accuracy")}, **result.get("probes", {})})
        else:
            if spec.variant is not None:
                row["variant"] = spec.variant
            students.append({**row, "student_seed": spec.student_seed,
                             "alpha": math.nan if spec.condition == "siddo" else spec.alpha,
                             "temperature": spec.temperature, **result["metrics"], **result.get("probes", {}),
                             "final_train_loss": result["train_curve"]["loss"][-1]})
    return pd.DataFrame(students), pd.DataFrame(teachers), pd.DataFrame(
        failed, columns=["run_id", "condition", "teacher_seed", "student_seed", "alpha", "reason"])


def curves(setup: Setup, out) -> pd.DataFrame:
    """Long table of every finished run's train-loss curve (for plots)."""
    rows = []
    for spec in plan(setup):
        result = read_result(out, spec)
        if result and "train_curve" in result:
            for step, loss in zip(result["train_curve"]["step"], result["train_curve"]["loss"]):
                rows.append({"run_id": spec.run_id, "condition": spec.condition, "alpha": spec.alpha,
                             "teacher_seed": spec.teacher_seed, "student_seed": spec.student_seed,
                             "step": step, "loss": loss})
    return pd.DataFrame(rows)


def export_outputs(setup: Setup, out, dest, data_dir=None, device: str = "cpu") -> Path:
    """Write the test-set outputs of every finished run as .npy for ``python -m kdlib audit``.

    ``dest/teacher<seed>/{teacher,labels}.npy``, ``classes.txt`` (for ``--class-names``) and
    ``dest/teacher<seed>/<condition>[_<alpha>]/seed<s>.npy``
    (student logits recomputed from the stored weights, in the same test order as the teacher's).
    """
    dest = Path(dest)
    for spec in plan(setup):
        result = read_result(out, spec)
        if result is None or result.get("status") == "failed":
            continue
        task = load_task(spec, data_dir)
        folder = dest / f"teacher{spec.teacher_seed}"
        batches = task.test.eval_batches(spec.eval_batch_size)
        if spec.role == "teacher":
            logits = torch.load(run_dir(out, spec) / "test_logits.pt", map_location="cpu")
            labels = torch.cat([y for _, y in task.test.eval_batches(spec.eval_batch_size)])
            save_npy(folder / "teacher.npy", logits.numpy())
            save_npy(folder / "labels.npy", labels.numpy())
            names = "\n".join(str(c) if str(c).strip() else repr(c) for c in task.classes) + "\n"
            write_text(folder / "classes.txt", names)
        else:
            logits, _ = score(load_model(out, spec, data_dir), batches, device, flip=bool(spec.eval_flip))
            name = spec.condition if spec.alpha is None else f"{spec.condition}_{spec.alpha:g}"
            save_npy(folder / name / f"seed{spec.student_seed}.npy", logits.numpy())
    return dest


def copied_errors(setup: Setup, out, data_dir=None, device: str = "cpu", teacher_seed: int | None = None) -> dict:
    """Which teacher errors students copy, for the notebooks' example grids: the test labels, the teacher's
    predictions and, for a KD student at the largest alpha and the SIDDO student of the same seed, their
    predictions and the indices of the teacher errors each reproduces."""
    specs = plan(setup)
    seed = setup.teacher_seeds[0] if teacher_seed is None else teacher_seed
    teacher = next(s for s in specs if s.role == "teacher" and s.teacher_seed == seed)
    kd = next(s for s in specs if s.condition == "kd" and s.teacher_seed == seed and s.alpha == max(setup.alphas))
    siddo = next(s for s in specs if s.condition == "siddo" and s.teacher_seed == seed
                 and s.student_seed == kd.student_seed and s.variant == kd.variant)
    task = load_task(teacher, data_dir)
    teacher_logits = torch.load(run_dir(out, teacher) / "test_logits.pt", map_location="cpu")
    labels = torch.cat([y for _, y in task.test.eval_batches(setup.eval_batch_size)])
    view = {"task": task, "labels": labels, "teacher": teacher_logits.argmax(-1), "kd_spec": kd,
            "classes": list(task.classes) or [str(k) for k in range(task.num_classes)]}
    wrong = view["teacher"] != labels
    for name, spec in (("kd", kd), ("siddo", siddo)):
        logits, _ = score(load_model(out, spec, data_dir), task.test.eval_batches(setup.eval_batch_size), device,
                          flip=bool(spec.eval_flip))
        view[name] = logits.argmax(-1)
        view[f"{name}_copied"] = torch.nonzero(wrong & (view[name] == view["teacher"])).flatten()
    view["teacher_errors"] = int(wrong.sum())
    return view


def plan_summary(setup: Setup, out, device: str = "cpu", timings=None) -> dict:
    """What a setup will cost: teachers and students planned and finished in ``out``, and the device-hours the
    rest needs, from the median training seconds of the setup's runs finished on ``device`` here, else from
    ``timings`` (per-model seconds recorded by ``benchmarks/gpu_check.py``: {"teacher": s, "student": s})."""
    specs = plan(setup)
    kind = "cuda" if dev.is_cuda(device) else "cpu"
    counts, seconds = {}, {"teacher": [], "student": []}
    for spec in specs:
        result = read_result(out, spec)
        c = counts.setdefault(spec.role, {"planned": 0, "finished": 0, "failed": 0})
        c["planned"] += 1
        if result is not None:
            c["failed" if result.get("status") == "failed" else "finished"] += 1
            if str(result.get("device", "")).startswith(kind) and "train_seconds" in result:
                seconds[spec.role].append(result["train_seconds"])
    per_model, source = {}, {}
    for role in ("teacher", "student"):
        if seconds[role]:
            per_model[role], source[role] = float(np.median(seconds[role])), f"median of {len(seconds[role])} runs here"
        elif timings and role in timings:
            per_model[role], source[role] = float(timings[role]), "the GPU check"
    remaining = {r: c["planned"] - c["finished"] - c["failed"] for r, c in counts.items()}
    hours = (sum(remaining[r] * per_model[r] for r in remaining) / 3600
             if all(r in per_model or not remaining[r] for r in remaining) else None)
    return {"setup": setup.label, "profile": setup.profile, "device": device, "counts": counts,
            "remaining": remaining, "seconds_per_model": per_model, "source": source, "device_hours": hours}
