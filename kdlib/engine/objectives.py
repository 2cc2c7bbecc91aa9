"""What a model is trained to minimise: one table (:data:`OBJECTIVES`), keyed by the objective's kind, of what each
objective needs (the teacher's logits, the teacher's features, the student's feature map) and how its loss is
computed. A condition (:mod:`kdlib.conditions`) names the objective it trains; a new objective is one row here.

Teacher outputs that are fixed are never recomputed: for fixed in-memory examples (no augmentation) a
``teacher_cache`` of the teacher's logits on every training example (:func:`kdlib.engine.evaluate.teacher_logits_on`),
computed once per teacher, serves all its students; otherwise (augmentation, random text windows) the teacher runs
on the very batch the student sees.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .losses import check_alpha, check_temperature, feature_map_loss, kd_loss, label_smoothing_loss, rcd_loss


@dataclass(frozen=True)
class Objective:
    """One objective as trained: its ``kind`` (a key of :data:`OBJECTIVES`) and its constants."""
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
        if self.row.feature_layer and not self.feature_layer:
            raise ValueError(f"objective {self.kind!r} needs feature_layer (a module name such as 'blocks.4')")

    @property
    def row(self) -> ObjectiveRow:
        return OBJECTIVES[self.kind]

    @property
    def needs_teacher(self) -> bool:
        """The teacher's outputs enter the loss (its logits, from a live teacher or a cache, or its features)."""
        return self.row.teacher is not None


@dataclass(frozen=True)
class Signals:
    """What a loss may read besides the student's logits and the labels: the teacher's logits on the batch, and the
    student's and the teacher's feature maps (None where the objective needs none)."""
    teacher_logits: torch.Tensor | None = None
    student_features: torch.Tensor | None = None
    teacher_features: torch.Tensor | None = None


@dataclass(frozen=True)
class ObjectiveRow:
    """A row of :data:`OBJECTIVES`. ``loss(objective, logits, y, signals)``: the loss of a batch (logits in float32).
    ``teacher``: None, ``"logits"`` (the teacher's logits on the batch: a live teacher or a cache of them) or
    ``"features"`` (the live teacher's feature map at ``feature_layer``). ``feature_layer``: the student's feature
    map at ``feature_layer`` enters the loss. ``packable``: students can share one packed step (logit objectives;
    feature maps need per-model hooks). ``teacher_init``: the teacher is its untrained initialisation M0 (a
    teacher without knowledge)."""
    loss: Callable[[Objective, torch.Tensor, torch.Tensor, Signals], torch.Tensor]
    teacher: str | None = None
    feature_layer: bool = False
    packable: bool = True
    teacher_init: bool = False
    doc: str = ""


def _ce(o: Objective, logits, y, s: Signals):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), label_smoothing=o.label_smoothing)


def _kd(o: Objective, logits, y, s: Signals):
    return kd_loss(logits, s.teacher_logits, y, o.alpha, o.temperature, validate=False, t_squared=o.t_squared,
                   label_smoothing=o.label_smoothing)


def _rcd(o: Objective, logits, y, s: Signals):
    return rcd_loss(logits, y, o.alpha, o.temperature, validate=False, t_squared=o.t_squared,
                    label_smoothing=o.label_smoothing)


def _ls(o: Objective, logits, y, s: Signals):
    return label_smoothing_loss(logits, y, o.alpha, validate=False)


def _feature(o: Objective, logits, y, s: Signals):
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return (1 - o.alpha) * ce + o.alpha * feature_map_loss(s.student_features, s.teacher_features)


def _feature_rcd(o: Objective, logits, y, s: Signals):
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return (1 - o.alpha) * ce + o.alpha * feature_map_loss(s.student_features, torch.zeros_like(s.student_features))


#: Every objective, keyed by kind.
OBJECTIVES: dict[str, ObjectiveRow] = {
    "ce": ObjectiveRow(_ce, doc="cross-entropy (teachers, SIDDO)"),
    "kd": ObjectiveRow(_kd, teacher="logits", doc="Eq. 1: (1-alpha) CE + alpha T^2 KL(teacher_T || student_T)"),
    "rcd": ObjectiveRow(_rcd, doc="Eq. 1 with the teacher replaced by the uniform distribution"),
    "ls": ObjectiveRow(_ls, doc="label smoothing with epsilon = alpha"),
    "feature": ObjectiveRow(_feature, teacher="features", feature_layer=True, packable=False,
                            doc="(1-alpha) CE + alpha MSE between the student's and the teacher's feature_layer"),
    "feature_rcd": ObjectiveRow(_feature_rcd, feature_layer=True, packable=False,
                                doc="the same with the teacher's features replaced by zeros of their shape"),
    "feature_rcd_init": ObjectiveRow(_feature, teacher="features", feature_layer=True, packable=False,
                                     teacher_init=True, doc="the same with the features of the teacher's untrained "
                                                            "initialisation M0 as the target"),
}


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as e:
        names = [n for n, _ in model.named_modules() if n]
        raise ValueError(f"feature_layer {name!r} not found; modules are e.g. {names[:20]}") from e


class Capture:
    """Forward hook that keeps the last output of one module (model code stays untouched)."""

    def __init__(self, model: nn.Module, name: str):
        self.out = None
        self.handle = _module(model, name).register_forward_hook(lambda m, i, o: setattr(self, "out", o))


@torch.no_grad()
def feature_width(model: nn.Module, name: str, x: torch.Tensor) -> int:
    """The width (last dimension) of ``model``'s output at module ``name`` on the batch ``x``: one forward pass in
    eval mode (no dropout draw, no BatchNorm update), the model's mode restored."""
    training, hook = model.training, Capture(model, name)
    try:
        model.eval()(x)
    finally:
        hook.handle.remove()
        model.train(training)
    if hook.out.dim() != 3:  # [batch, tokens, width]; a conv map's last dimension would be its spatial width
        raise ValueError(f"feature map {name!r} has shape {tuple(hook.out.shape)}: a projection needs token features "
                         f"[batch, tokens, width]")
    return hook.out.shape[-1]


def check_teacher_source(objectives: list[Objective], data, teacher, teacher_cache) -> None:
    """Objectives that need a teacher get one in a form they can use (shared by train and train_together)."""
    for objective in objectives:
        if objective.needs_teacher and teacher is None and teacher_cache is None:
            raise ValueError(f"objective {objective.kind!r} needs a teacher model or a teacher_cache")
        if objective.row.teacher == "features" and teacher is None:
            raise ValueError(f"objective {objective.kind!r} needs the teacher model itself, not a logit cache")
    if teacher_cache is not None and not getattr(data, "fixed", False):
        raise ValueError("teacher_cache is only valid for fixed (un-augmented) examples")


def objective_loss(objective: Objective, logits, x, y, idx, teacher, teacher_cache, student_hook=None,
                   teacher_hook=None, projection=None) -> torch.Tensor:
    """``objective``'s loss of ``logits`` on batch ``(x, y)`` (example indices ``idx``); the teacher's logits come
    from ``teacher_cache[idx]`` (float32, computed once) or a forward pass of a live ``teacher`` in the training
    step's own precision (its autocast: a live teacher's outputs are training targets, like the student's own
    logits), upcast to float32 for the loss; feature maps come from the hooks (the student's through
    ``projection`` where given: :func:`kdlib.engine.train.feature_projection`)."""
    if logits.dtype in (torch.float16, torch.bfloat16):  # the loss in float32 under autocast
        logits = logits.float()
    row = objective.row
    teacher_logits = teacher_features = None
    if row.teacher == "logits":
        if teacher_cache is not None:
            teacher_logits = teacher_cache[idx]
        else:
            with torch.no_grad():
                teacher_logits = teacher(x).float()
    elif row.teacher == "features":
        with torch.no_grad():
            teacher(x)
        teacher_features = teacher_hook.out.float()
    student_features = student_hook.out if row.feature_layer else None
    if projection is not None:
        student_features = projection(student_features)
    signals = Signals(teacher_logits, student_features, teacher_features)
    return row.loss(objective, logits, y, signals)
