"""The conditions a model is trained under: one table that setups, runs, stats, report and together read.

- ``teacher``: plain cross-entropy from the teacher seed's initialisation.
- ``siddo``: a control: same initialisation, different data order, plain cross-entropy (Section 3).
- ``kd``: Eq. 1, logit matching to the teacher at weight alpha and temperature T (or, in a feature-map setup,
  matching one module's outputs).
- ``rcd``: a control: Eq. 1 with the teacher replaced by the uniform distribution (a feature-map setup matches
  a constant target instead).
- ``ls``: label smoothing at epsilon = alpha, shown beside KD and RCD (Appendix B), tested against nothing.

Adding a condition whose objective exists (a new control, say) touches this table alone; a new objective also
needs its loss in :func:`kdlib.engine.objectives.objective_loss`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Condition:
    """``objective``: the loss trained (``kdlib.engine.objectives.OBJECTIVES``); ``feature_objective``: the loss instead in
    a feature-map setup (None: the condition ignores feature maps). ``control``: KD is tested against it.
    ``weighted``: trained once per alpha of the setup. ``distills``: takes the setup's temperature (Eq. 1's form).
    ``packable``: students under it can train together in one vectorised step (logit objectives)."""
    name: str
    display: str
    objective: str
    feature_objective: str | None = None
    control: bool = False
    weighted: bool = True
    distills: bool = False
    packable: bool = True
    student: bool = True


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("teacher", "Teacher", "ce", weighted=False, packable=False, student=False),
    Condition("siddo", "SIDDO", "ce", control=True, weighted=False),
    Condition("kd", "KD", "kd", "feature", distills=True),
    Condition("rcd", "RCD", "rcd", "feature_rcd", control=True, distills=True),
    Condition("ls", "LS", "ls"),
)}
#: Conditions a student can be trained under, in the paper's column order.
STUDENT_CONDITIONS = tuple(name for name, c in CONDITIONS.items() if c.student)


def condition(name: str) -> Condition:
    """The condition ``name``; unknown names raise with the allowed ones."""
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}: allowed conditions are {list(CONDITIONS)}")
    return CONDITIONS[name]


def objectives() -> tuple[str, ...]:
    """Every objective some condition trains (logit and feature-map forms)."""
    kinds = [c.objective for c in CONDITIONS.values()] + [c.feature_objective for c in CONDITIONS.values()]
    return tuple(dict.fromkeys(k for k in kinds if k))


def packable_objectives() -> tuple[str, ...]:
    """Logit objectives of packable conditions: these can share one vectorised step."""
    return tuple(dict.fromkeys(c.objective for c in CONDITIONS.values() if c.packable))


def label(name: str, alpha: float | None = None) -> str:
    """Display label of a table column: 'SIDDO', 'KD 0.5'."""
    display = condition(name).display
    return display if alpha is None else f"{display} {alpha:g}"
