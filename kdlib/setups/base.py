"""The Setup record, the profiles that scale it, and the registry that named setups add themselves to.

A :class:`Setup` names a dataset, teacher and student architectures, seeds, alphas, temperature, objective
and recipes. Each setup is registered as a function ``make(profile) -> Setup``; a profile scales a setup
without changing its protocol:

- ``paper``: the paper's exact recipe;
- ``cpu``: the same protocol scaled so one setup finishes in about 10 minutes on 2 CPU cores, with at least
  6 student seeds so a one-sided Wilcoxon test can reach significance (min p = 1/64);
- ``smoke``: seconds, for tests and CI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ..conditions import student_conditions
from ..registry import Registry, resolve
from ..engine.recipe import Recipe

PROFILES = ("paper", "cpu", "smoke")
ALPHAS = (0.1, 0.5, 0.9)  # the paper's KD/RCD weights, in every setup
MODALITIES = ("language", "vision", "audio")


@dataclass(frozen=True)
class Model:
    """An architecture name from :data:`kdlib.models.ARCHITECTURES` and its keyword arguments."""
    arch: str
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Setup:
    """One experiment: teachers (one per teacher seed) and, per teacher, students under every condition.

    ``student=None`` is self-distillation: students share the teacher's architecture and start from the
    teacher's initial weights M0. Otherwise every student of a teacher starts from the same initialisation,
    drawn from the teacher seed (or, under ``student_init="student-seed"``, one per student seed).
    ``teacher_recipe=None`` means the teacher is used as loaded (pretrained).
    ``conditions`` are the student conditions: ``siddo`` (plain CE), ``kd`` and ``rcd`` at every alpha,
    optionally ``ls`` (label smoothing with epsilon = alpha). With ``feature_layer`` set, KD and RCD match
    that module's outputs instead of logits (feature-map matching, Section 4.3). ``teacher_dataset_kwargs``
    gives the teacher different training data (e.g. the adversarial "tha" text, Section 4.5); the teacher's
    cached outputs and test metrics are still computed on the students' data. ``student_variants`` trains
    every condition for each of several student models (e.g. widths), labelled in the ``variant`` column.
    """
    name: str
    modality: str
    description: str
    dataset: str
    teacher: Model
    teacher_recipe: Recipe | None
    student_recipe: Recipe
    teacher_seeds: tuple[int, ...]
    student_seeds: tuple[int, ...]
    alphas: tuple[float, ...]
    dataset_kwargs: dict = field(default_factory=dict)
    student: Model | None = None
    temperature: float = 1.0
    conditions: tuple[str, ...] = ("siddo", "kd", "rcd")
    feature_layer: str | None = None
    teacher_dataset_kwargs: dict | None = None  # the teacher's own training data, if it differs (adversarial)
    probes: tuple[str, ...] = ()  # extra evaluations from kdlib.engine.probes, run on every model
    student_variants: tuple[tuple[str, Model], ...] = ()  # (label, model) students, e.g. widths (Figure 11)
    eval_batch_size: int = 256
    profile: str = "paper"
    paper_ref: str = ""
    # set by the readings (kdlib.setups.readings); None keeps what runs did before readings existed
    kd_t_squared: bool | None = None  # False: Eq. 1 without the T^2 factor
    label_smoothing: float | None = None  # on every cross-entropy term of the students
    eval_flip: bool | None = None  # test logits: the image's plus its flip's (FFCV's ``output += model(flip)``)
    precision: str | None = None  # None: float32; "bf16"; "fp16-scaler": FFCV's fp16 with a gradient scaler
    student_init: str | None = None  # "student-seed": a smaller student's init drawn per student seed
    feature_rcd_target: str | None = None  # "teacher-init": RCD's feature target is the teacher's M0 (else zeros)
    teacher_train_metrics: str = "clean"  # the teachers' reported train metrics: "clean" or "augmented" (analysis)
    # the verdict rule's open choices (analysis readings): they change no training and enter no run spec
    fdr_family: str = "setting"  # one BH family per (teacher seed, alpha), or "per-control"
    majority: str = "strict"  # "strict": more than half the functional metrics ticked; "half": at least half
    marginal_threshold: float = 0.01  # a supported verdict with a mean improvement below it is marginal
    best_control: str = "per-quantity"  # the agreement deltas' candidates: or "same-alpha", "exclude-collapsed"
    readings: tuple[tuple[str, str], ...] = ()  # (reading id, choice) of every reading the setup uses
    tag: str = ""  # "+id=choice" for every reading chosen off its default
    teacher_checkpoint: str | None = None  # a file of the teacher's weights, used as loaded (teacher_recipe None)
    source: str | None = None  # your own setup's import path or TOML file (kdlib.setups.yours), which workers import

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"setup {self.name!r}: unknown modality {self.modality!r}; allowed {list(MODALITIES)}")
        allowed = student_conditions()
        bad = [c for c in self.conditions if c not in allowed]
        if bad:
            raise ValueError(f"setup {self.name!r}: unknown conditions {bad}; allowed {', '.join(allowed)}")
        if set(self.teacher_seeds) & set(self.student_seeds):
            raise ValueError(f"setup {self.name!r}: teacher and student seeds overlap")

    @property
    def self_distillation(self) -> bool:
        return self.student is None

    @property
    def student_model(self) -> Model:
        return self.teacher if self.student is None else self.student

    def students(self) -> list[tuple[str | None, Model]]:
        """(variant label, model) of every student family: one unlabelled, or ``student_variants``."""
        return list(self.student_variants) or [(None, self.student_model)]

    def scaled(self, **changes) -> "Setup":
        return replace(self, **changes)

    @property
    def label(self) -> str:
        """Where the setup's runs are collected and reported: its name, plus every reading off its default."""
        return self.name + self.tag


def epoch_steps(epochs: float, n: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimiser steps of ``epochs`` passes over ``n`` examples in batches of ``batch_size`` (the last one partial,
    or dropped with ``drop_last``)."""
    per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
    return max(1, round(epochs * per_epoch))


class UnknownSetup(ValueError):
    """A setup or profile name that is not registered."""


#: Every setup: ``make(profile) -> Setup`` (or its ``"module:name"`` path) by name.
SETUPS = Registry("setup", error=UnknownSetup, listing=lambda names: f"`python -m kdlib list` shows all {len(names)}",
                  from_path=lambda ref: resolve("kdlib.setups.yours:from_path")(ref))
#: ``@register(name)`` over ``make(profile) -> Setup``, or ``register(name, "mypkg.kd:my_setup")``.
register = SETUPS.register
