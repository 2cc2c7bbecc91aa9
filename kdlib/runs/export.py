"""Finished runs' test-set outputs, recomputed from their stored weights: ``.npy`` files for the audit command,
and the teacher errors students copy for the notebooks' example grids."""
from __future__ import annotations

from pathlib import Path

import torch

from .spec import plan
from .run import load_model, load_task
from ..setups import Setup
from ..store import read_result, run_dir, save_npy, write_text
from ..engine.evaluate import score
from .workspace import Workspace


def export_outputs(setup: Setup, out, dest, data_dir=None, device: str = "cpu") -> Path:
    """Write the test-set outputs of every finished run as .npy for ``python -m kdlib audit``. ``out``: a
    :class:`~kdlib.runs.workspace.Workspace`, or the results folder with ``data_dir`` and ``device``.

    ``dest/teacher<seed>/{teacher,labels}.npy``, ``classes.txt`` (for ``--class-names``) and
    ``dest/teacher<seed>/<condition>[_<alpha>]/seed<s>.npy``
    (student logits recomputed from the stored weights, in the same test order as the teacher's).
    """
    ws, dest = Workspace.of(out, data_dir, device), Path(dest)
    for spec in plan(setup):
        result = read_result(ws.out, spec)
        if result is None or result.failed:
            continue
        task = load_task(spec, ws.data_dir)
        folder = dest / f"teacher{spec.teacher_seed}"
        batches = task.test.eval_batches(spec.eval_batch_size)
        if spec.role == "teacher":
            logits = torch.load(run_dir(ws.out, spec) / "test_logits.pt", map_location="cpu")
            labels = torch.cat([y for _, y in task.test.eval_batches(spec.eval_batch_size)])
            save_npy(folder / "teacher.npy", logits.numpy())
            save_npy(folder / "labels.npy", labels.numpy())
            names = "\n".join(str(c) if str(c).strip() else repr(c) for c in task.classes) + "\n"
            write_text(folder / "classes.txt", names)
        else:
            logits, _ = score(load_model(ws, spec), batches, ws.device, flip=bool(spec.eval_flip),
                              precision=spec.precision)
            name = spec.condition if spec.alpha is None else f"{spec.condition}_{spec.alpha:g}"
            save_npy(folder / name / f"seed{spec.student_seed}.npy", logits.numpy())
    return dest


def copied_errors(setup: Setup, out, data_dir=None, device: str = "cpu", teacher_seed: int | None = None) -> dict:
    """Which teacher errors students copy, for the notebooks' example grids: the test labels, the teacher's
    predictions and, for a KD student at the largest alpha and the SIDDO student of the same seed, their
    predictions and the indices of the teacher errors each reproduces."""
    ws, specs = Workspace.of(out, data_dir, device), plan(setup)
    seed = setup.teacher_seeds[0] if teacher_seed is None else teacher_seed
    teacher = next(s for s in specs if s.role == "teacher" and s.teacher_seed == seed)
    kd = next(s for s in specs if s.condition == "kd" and s.teacher_seed == seed and s.alpha == max(setup.alphas))
    siddo = next(s for s in specs if s.condition == "siddo" and s.teacher_seed == seed
                 and s.student_seed == kd.student_seed and s.variant == kd.variant)
    task = load_task(teacher, ws.data_dir)
    teacher_logits = torch.load(run_dir(ws.out, teacher) / "test_logits.pt", map_location="cpu")
    labels = torch.cat([y for _, y in task.test.eval_batches(setup.eval_batch_size)])
    view = {"task": task, "labels": labels, "teacher": teacher_logits.argmax(-1), "kd_spec": kd,
            "classes": list(task.classes) or [str(k) for k in range(task.num_classes)]}
    wrong = view["teacher"] != labels
    for name, spec in (("kd", kd), ("siddo", siddo)):
        logits, _ = score(load_model(ws, spec), task.test.eval_batches(setup.eval_batch_size), ws.device,
                          flip=bool(spec.eval_flip), precision=spec.precision)
        view[name] = logits.argmax(-1)
        view[f"{name}_copied"] = torch.nonzero(wrong & (view[name] == view["teacher"])).flatten()
    view["teacher_errors"] = int(wrong.sum())
    return view
