"""What a model is trained to minimise: the objectives, what each needs (a teacher, a cache, a feature layer) and
its loss.

Teacher outputs that are fixed are never recomputed: for fixed in-memory examples (no augmentation) a
``teacher_cache`` of the teacher's logits on every training example (:func:`kdlib.engine.evaluate.teacher_logits_on`),
computed once per teacher, serves all its students; otherwise (augmentation, random text windows) the teacher runs
on the very batch the student sees.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import device as dev
from ..conditions import objectives
from .losses import check_alpha, check_temperature, feature_map_loss, kd_loss, label_smoothing_loss, rcd_loss

OBJECTIVES = objectives()


@dataclass(frozen=True)
class Objective:
    """What a model is trained to minimise.

    ``ce``: cross-entropy (teachers, SIDDO). ``kd``/``rcd``: Eq. 1 with the teacher / a uniform teacher.
    ``ls``: label smoothing with epsilon = ``alpha``. ``feature``: (1-alpha)*CE + alpha*MSE between the
    outputs of module ``feature_layer`` in student and teacher. ``feature_rcd``: the same with the teacher's
    features replaced by a constant target of the same shape (zeros).
    """
    kind: str = "ce"
    alpha: float = 0.0
    temperature: float = 1.0
    feature_layer: str | None = None
    t_squared: bool = True  # the T^2 factor of Eq. 1's distillation term (kd, rcd)
    label_smoothing: float = 0.0  # on the cross-entropy against the labels (ce, kd, rcd)

    def __post_init__(self):
        if self.kind not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.kind!r}: allowed are {list(OBJECTIVES)}")
        check_alpha(self.alpha)
        check_temperature(self.temperature)
        if self.kind.startswith("feature") and not self.feature_layer:
            raise ValueError(f"objective {self.kind!r} needs feature_layer (a module name such as 'blocks.4')")

    @property
    def needs_teacher(self) -> bool:
        return self.kind in ("kd", "feature")


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as e:
        names = [n for n, _ in model.named_modules() if n]
        raise ValueError(f"feature_layer {name!r} not found; modules are e.g. {names[:20]}") from e


class _Capture:
    """Forward hook that keeps the last output of one module (model code stays untouched)."""

    def __init__(self, model: nn.Module, name: str):
        self.out = None
        self.handle = _module(model, name).register_forward_hook(lambda m, i, o: setattr(self, "out", o))


def check_teacher_source(objectives: list[Objective], data, teacher, teacher_cache) -> None:
    """Objectives that need a teacher get one in a form they can use (shared by train and train_together)."""
    for objective in objectives:
        if objective.needs_teacher and teacher is None and teacher_cache is None:
            raise ValueError(f"objective {objective.kind!r} needs a teacher model or a teacher_cache")
        if objective.kind == "feature" and teacher is None:
            raise ValueError("feature-map matching needs the teacher model itself, not a logit cache")
    if teacher_cache is not None and not getattr(data, "fixed", False):
        raise ValueError("teacher_cache is only valid for fixed (un-augmented) examples")


def objective_loss(objective: Objective, logits, x, y, idx, teacher, teacher_cache, student_hook=None,
                   teacher_hook=None) -> torch.Tensor:
    """``objective``'s loss of ``logits`` on batch ``(x, y)`` (example indices ``idx``); the teacher signal comes
    from ``teacher_cache[idx]`` or a forward pass of ``teacher``, feature maps from the hooks."""
    if logits.dtype in (torch.float16, torch.bfloat16):  # the loss in float32 under autocast
        logits = logits.float()
    kind, o = objective.kind, objective
    if kind == "ce":
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               label_smoothing=o.label_smoothing)
    if kind == "rcd":
        return rcd_loss(logits, y, o.alpha, o.temperature, validate=False, t_squared=o.t_squared,
                        label_smoothing=o.label_smoothing)
    if kind == "ls":
        return label_smoothing_loss(logits, y, objective.alpha, validate=False)
    if kind == "kd":
        if teacher_cache is not None:
            t = teacher_cache[idx]
        else:
            with torch.no_grad(), dev.float32_forward(x.device):
                t = teacher(x)
        return kd_loss(logits, t, y, o.alpha, o.temperature, validate=False, t_squared=o.t_squared,
                       label_smoothing=o.label_smoothing)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    if kind == "feature":
        with torch.no_grad(), dev.float32_forward(x.device):
            teacher(x)
        target = teacher_hook.out
    else:  # feature_rcd: a constant target of the same shape
        target = torch.zeros_like(student_hook.out)
    return (1 - objective.alpha) * ce + objective.alpha * feature_map_loss(student_hook.out, target)
