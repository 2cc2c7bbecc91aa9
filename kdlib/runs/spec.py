"""Run specs and the plan: a trained model is a spec with a stable id, and a setup is a list of them. No torch.

A run's id hashes only what determines its training (data, model, recipe, objective, seeds and, for a
student, the teacher's id), never the setup's name, so setups that share a teacher (self-distillation and
Pico-GPT students of the same Nano-GPT) train it once. ``packs`` groups students that can share a training step.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


from ..conditions import CONDITIONS, condition
from ..setups import Setup
from ..setups.yours import sha256


#: RCD's feature-map target (``feature_rcd_target``; None: zeros) -> the objective it trains
RCD_FEATURE_OBJECTIVES = {None: "feature_rcd", "teacher-init": "feature_rcd_init"}


@dataclass
class RunSpec:
    """Everything that determines one trained model. ``condition``: teacher, siddo, kd, rcd or ls."""
    condition: str
    teacher_seed: int
    dataset: str
    dataset_kwargs: dict
    arch: str
    arch_kwargs: dict
    recipe: dict | None
    student_seed: int | None = None
    alpha: float | None = None
    temperature: float = 1.0
    feature_layer: str | None = None
    teacher_id: str | None = None
    init: str = "seed"  # "seed": init from teacher_seed; "teacher": copy the teacher's M0; "student-seed"
    eval_batch_size: int = 256
    train_dataset_kwargs: dict | None = None  # teacher only: its own training data when it differs
    probes: list | None = None  # names of extra evaluations (kdlib.engine.probes)
    variant: str | None = None  # label of the student family (e.g. a width), when a setup has several
    # set by readings (kdlib.setups.readings); None is what runs did before readings existed, so old ids hold
    kd_t_squared: bool | None = None  # False: no T^2 factor on the distillation term
    label_smoothing: float | None = None  # on the student's cross-entropy against the labels
    eval_flip: bool | None = None  # test logits: the image's plus its horizontal flip's (FFCV's val loop)
    precision: str | None = None  # None: float32; "bf16" or "fp16-scaler" on CUDA (kdlib.engine.device.amp)
    feature_rcd_target: str | None = None  # "teacher-init": RCD's feature target is the teacher's M0 (None: zeros)
    weights_sha256: str | None = None  # teacher only: the checkpoint file it is loaded from (its path: tags)
    tags: dict = field(default_factory=dict, compare=False)  # setup/profile names and readings: not hashed

    @property
    def role(self) -> str:
        return "teacher" if self.condition == "teacher" else "student"

    @property
    def run_id(self) -> str:
        # None-valued fields are left out, so adding an optional field later keeps existing ids valid
        fields = {k: v for k, v in asdict(self).items() if k != "tags" and v is not None}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def objective_kind(self) -> str:
        """The objective trained: the condition's, or its feature-map form in a feature-map setup (RCD's with the
        target ``feature_rcd_target`` names)."""
        c = condition(self.condition)
        if not (self.feature_layer and c.feature_objective):
            return c.objective
        if c.feature_objective != RCD_FEATURE_OBJECTIVES[None]:
            return c.feature_objective
        if self.feature_rcd_target not in RCD_FEATURE_OBJECTIVES:
            raise ValueError(f"feature_rcd_target={self.feature_rcd_target!r} is not allowed: use one of "
                             f"{list(RCD_FEATURE_OBJECTIVES)}")
        return RCD_FEATURE_OBJECTIVES[self.feature_rcd_target]

    @property
    def objective(self):
        """The :class:`kdlib.engine.objectives.Objective` trained (imported here: planning needs no torch)."""
        from ..engine.objectives import Objective
        return Objective(self.objective_kind, alpha=self.alpha or 0.0, temperature=self.temperature,
                         feature_layer=self.feature_layer, t_squared=self.kd_t_squared is not False,
                         label_smoothing=self.label_smoothing or 0.0)


def _tags(setup: Setup) -> dict:
    """What a spec says of its setup without hashing it: names, readings, and your own setup's source (which a
    worker imports: :func:`kdlib.runs.run.run_one`)."""
    tags = {"setup": setup.name, "label": setup.label, "profile": setup.profile, "readings": dict(setup.readings)}
    return {**tags, "source": setup.source} if setup.source else tags


def teacher_spec(setup: Setup, teacher_seed: int) -> RunSpec:
    """The teacher run of ``setup`` at ``teacher_seed``."""
    return RunSpec(condition="teacher", teacher_seed=teacher_seed, dataset=setup.dataset,
                   dataset_kwargs=setup.dataset_kwargs, arch=setup.teacher.arch, arch_kwargs=setup.teacher.kwargs,
                   recipe=setup.teacher_recipe.fields() if setup.teacher_recipe else None,
                   train_dataset_kwargs=setup.teacher_dataset_kwargs, eval_batch_size=setup.eval_batch_size,
                   probes=list(setup.probes) or None, eval_flip=setup.eval_flip,
                   precision=setup.precision if setup.teacher_recipe else None,  # a pretrained teacher trains nothing
                   weights_sha256=sha256(setup.teacher_checkpoint) if setup.teacher_checkpoint else None,
                   tags={**_tags(setup), **({"checkpoint": setup.teacher_checkpoint} if setup.teacher_checkpoint
                                            else {})})


def plan(setup: Setup) -> list[RunSpec]:
    """Every run of ``setup``: per teacher seed the teacher, then its students (per variant and student seed:
    SIDDO, then each alpha's conditions)."""
    specs = []
    unweighted = [(c, None) for c in setup.conditions if not CONDITIONS[c].weighted]
    conditions = unweighted + [(c, a) for a in setup.alphas for c in setup.conditions if CONDITIONS[c].weighted]
    for t in setup.teacher_seeds:
        teacher = teacher_spec(setup, t)
        specs.append(teacher)
        for variant, student in setup.students():
            for s in setup.student_seeds:
                for name, alpha in conditions:
                    specs.append(RunSpec(
                        condition=name, teacher_seed=t, student_seed=s, alpha=alpha, variant=variant,
                        temperature=setup.temperature if CONDITIONS[name].distills else 1.0,
                        feature_layer=setup.feature_layer if CONDITIONS[name].feature_objective else None,
                        dataset=setup.dataset, dataset_kwargs=setup.dataset_kwargs, arch=student.arch,
                        arch_kwargs=student.kwargs, recipe=setup.student_recipe.fields(), teacher_id=teacher.run_id,
                        init="teacher" if setup.self_distillation else setup.student_init or "seed",
                        eval_batch_size=setup.eval_batch_size, probes=list(setup.probes) or None,
                        kd_t_squared=setup.kd_t_squared if CONDITIONS[name].distills else None,
                        label_smoothing=setup.label_smoothing, eval_flip=setup.eval_flip,
                        precision=setup.precision, tags=_tags(setup),
                        feature_rcd_target=setup.feature_rcd_target
                        if setup.feature_layer and CONDITIONS[name].feature_objective == "feature_rcd" else None))
    return specs


def packs(specs: list[RunSpec], size: int) -> list:
    """Group students into packs of at most ``size`` that can train together: same teacher, data, model,
    recipe and initialisation, and a logit objective (feature matching runs alone). Singles stay specs.

    A group is split evenly (sizes differ by at most one, e.g. 21 students at size 8: three packs of 7, not 8, 8
    and 5): each pack size is a shape ``torch.compile`` makes a graph for, so fewer sizes mean fewer compiles and
    no run past dynamo's recompile limit."""
    if size < 1:
        raise ValueError(f"pack size {size} is not allowed: it must be a positive integer")
    groups: dict[str, list[RunSpec]] = {}
    jobs = []
    for spec in specs:
        if size == 1 or spec.role != "student" or not _packable(spec):
            jobs.append(spec)
            continue
        groups.setdefault(_pack_key(spec), []).append(spec)
    for group in groups.values():
        smaller, larger = divmod(len(group), -(-len(group) // size))  # per pack; how many packs take one more
        start = 0
        for i in range(-(-len(group) // size)):
            chunk = tuple(group[start:start + smaller + (i < larger)])
            start += len(chunk)
            jobs.append(chunk if len(chunk) > 1 else chunk[0])
    return jobs


def _packable(spec: RunSpec) -> bool:
    """Logit objectives of packable conditions (feature matching needs per-model hooks), not under fp16's gradient
    scaler (one scale for a pack would skip every member's step when one overflows, unlike its run alone)."""
    return (CONDITIONS[spec.condition].packable and spec.objective_kind == CONDITIONS[spec.condition].objective
            and spec.precision != "fp16-scaler")


def _pack_key(spec: RunSpec) -> str:
    """What students must share to train in one step: everything but their objective and data-order seed."""
    return json.dumps([spec.role, spec.teacher_id, spec.dataset, spec.dataset_kwargs, spec.arch, spec.arch_kwargs,
                       spec.recipe, spec.init, spec.eval_batch_size, spec.probes, spec.eval_flip, spec.precision],
                      sort_keys=True)
