"""The conditions a model is trained under: one table that setups, runs, the statistics and the reports read.

- ``teacher``: plain cross-entropy from the teacher seed's initialisation.
- ``siddo``: a control: same initialisation, different data order, plain cross-entropy (Section 3).
- ``kd``: Eq. 1, logit matching to the teacher at weight alpha and temperature T (or, in a feature-map setup,
  matching one module's outputs).
- ``rcd``: a control: Eq. 1 with the teacher replaced by the uniform distribution (a feature-map setup matches
  a constant target instead).
- ``ls``: label smoothing at epsilon = alpha, shown beside KD and RCD (Appendix B), tested against nothing.

A new condition is a row here; a new objective also a row of :data:`kdlib.engine.objectives.OBJECTIVES`. KD is
tested against every condition marked ``control`` (:mod:`kdlib.analysis.stats`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Condition:
    """``objective``: the loss trained (a key of ``kdlib.engine.objectives.OBJECTIVES``); ``feature_objective``: the
    loss instead in a feature-map setup (None: the condition ignores feature maps). ``control``: KD is tested against
    it (paired on student seed, and at KD's alpha if ``weighted``). ``weighted``: trained once per alpha of the setup.
    ``distills``: takes the setup's temperature (Eq. 1's form). ``packable``: students under it can train together in
    one vectorised step (with a logit objective). ``group``: its column group in the tables."""
    name: str
    display: str
    objective: str
    feature_objective: str | None = None
    control: bool = False
    weighted: bool = True
    distills: bool = False
    packable: bool = True
    student: bool = True
    group: str = ""


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("teacher", "Teacher", "ce", weighted=False, packable=False, student=False),
    Condition("siddo", "SIDDO", "ce", control=True, weighted=False, group="Control"),
    Condition("kd", "KD", "kd", "feature", distills=True, group="Knowledge Distillation"),
    Condition("rcd", "RCD", "rcd", "feature_rcd", control=True, distills=True, group="Random Control Distillation"),
    Condition("ls", "LS", "ls", group="Label Smoothing"),
)}


def student_conditions() -> tuple[str, ...]:
    """Conditions a student can be trained under, in the paper's column order."""
    return tuple(name for name, c in CONDITIONS.items() if c.student)


def controls() -> tuple[str, ...]:
    """The conditions KD is tested against, in table order."""
    return tuple(name for name, c in CONDITIONS.items() if c.control)


def condition(name: str) -> Condition:
    """The condition ``name``; unknown names raise with the allowed ones."""
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}: allowed conditions are {list(CONDITIONS)}")
    return CONDITIONS[name]


def label(name: str, alpha: float | None = None) -> str:
    """Display label of a table column: 'SIDDO', 'KD 0.5'."""
    display = condition(name).display
    return display if alpha is None else f"{display} {alpha:g}"
