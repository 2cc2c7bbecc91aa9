"""Training one run: ``run_one`` is idempotent and claims the run it trains; ``run_pack`` trains students of one
teacher together (:mod:`kdlib.engine.together`); ``run_job`` is what a launcher maps over a setup's jobs.

A run killed mid-way leaves no result (:mod:`kdlib.store` writes atomically) but its last checkpoint, written every
``Workspace.checkpoint_every`` seconds and when SIGTERM comes (:mod:`kdlib.engine.checkpoint`): run again, it
resumes from there, to the same bits.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch

from .. import data as datasets
from ..engine import device as dev
from ..engine.checkpoint import FILE, Checkpoint, stop_on_sigterm
from ..engine.fallback import fallback
from .. import models, setups, tracking
from . import provenance
from ..engine.probes import run_probes
from ..engine.recipe import Recipe
from .spec import RunSpec, _pack_key
from ..store import RunResult, claim, log_attempt, read_result, run_dir, save_tensor, write_json, write_result
from .workspace import Workspace
from .weights import CheckpointError, load_weights
from ..setups.yours import sha256
from ..engine.together import train_together
from ..engine.objectives import Objective, feature_width
from ..engine.evaluate import evaluate, score
from ..engine.train import feature_projection, init_model, train


@functools.lru_cache(maxsize=4)
def _load_data(dataset: str, kwargs_json: str, root: str):
    return datasets.load(dataset, root, **json.loads(kwargs_json))


def load_task(spec: RunSpec, data_dir, dataset_kwargs: dict | None = None):
    """The (process-cached) data of ``spec``; ``dataset_kwargs`` overrides the spec's."""
    kwargs = spec.dataset_kwargs if dataset_kwargs is None else dataset_kwargs
    return _load_data(spec.dataset, json.dumps(kwargs, sort_keys=True), str(datasets.data_dir(data_dir)))


def build_model(spec: RunSpec, num_classes: int) -> torch.nn.Module:
    return models.build(spec.arch, num_classes, **spec.arch_kwargs)


def load_model(out, spec: RunSpec, data_dir=None, which: str = "model.pt") -> torch.nn.Module:
    """Rebuild a trained model of ``spec`` from the store ``out`` (a folder or a :class:`Workspace`; ``which``:
    model.pt, or init.pt for M0).

    Pretrained-weight arguments are dropped: the stored state replaces them, so no hub download is needed."""
    ws = Workspace.of(out, data_dir)
    task = load_task(spec, ws.data_dir)
    kwargs = {k: v for k, v in spec.arch_kwargs.items() if k != "weights"}
    model = models.build(spec.arch, task.num_classes, **kwargs)
    model.load_state_dict(torch.load(run_dir(ws.out, spec) / which, map_location="cpu"))
    return model.eval()


def run_one(spec: RunSpec, out, data_dir=None, device: str = "cpu", teacher: RunSpec | None = None,
            compile: str = "auto") -> RunResult | None:
    """Train and evaluate ``spec`` unless its result exists; returns the result. Students need ``teacher``.
    ``out``: a :class:`Workspace`, or the results folder with ``data_dir``, ``device`` and ``compile``
    (torch.compile the training steps: "auto" is on for CUDA).

    Returns None when another live process holds the run's claim (it is being trained there). A run whose loss
    diverges is recorded as failed (``status`` and ``reason`` in its result) rather than raising."""
    ws = Workspace.of(out, data_dir, device, compile)
    done = read_result(ws.out, spec)
    if done is not None:
        return done
    import_source(spec)
    teacher_result = _teacher_result(spec, teacher, ws)
    if spec.role == "student" and teacher_result is None:
        return None
    with claim(run_dir(ws.out, spec)) as mine:
        if not mine:
            return None
        done = read_result(ws.out, spec)  # finished by another process between our check and our claim
        if done is not None:
            return done
        with stop_on_sigterm():
            return _train_claimed(spec, teacher, teacher_result, ws)


def run_pack(specs: list[RunSpec], teacher: RunSpec, out, data_dir=None, device: str = "cpu",
             compile: str = "auto") -> None:
    """Train students of one teacher together (:func:`kdlib.engine.together.train_together`) where they can share
    a step, each claimed and stored exactly as :func:`run_one` would; see :func:`kdlib.runs.spec.packs` for which
    can. ``out`` as in :func:`run_one`.

    Runs already finished or claimed elsewhere are left out of the pack. A pack never kills a setup run: if
    training it raises anything (a diverging member, a pack too big for the device, a kernel or compiler error),
    its claimed members are trained one by one instead, each result recording why (``pack_fallback``), so a
    divergent run is recorded as failed and the rest finish."""
    if len({_pack_key(s) for s in specs}) != 1:
        raise ValueError(f"runs {[s.run_id for s in specs]} cannot train together: they differ in teacher, data, "
                         f"model, recipe or initialisation (group them with kdlib.runs.spec.packs)")
    ws = Workspace.of(out, data_dir, device, compile)
    import_source(specs[0])
    teacher_result = _teacher_result(specs[0], teacher, ws)
    if teacher_result is None:
        return
    why, fallbacks = None, []
    with contextlib.ExitStack() as held:
        mine = [s for s in specs if read_result(ws.out, s) is None and held.enter_context(claim(run_dir(ws.out, s)))
                and read_result(ws.out, s) is None]
        if len(mine) > 1 and not teacher_result.failed:
            for spec in mine:
                log_attempt(ws.out, spec)
            prepared = [_prepare_student(s, teacher, ws) for s in mine]  # logit objectives: no projection
            checkpoint, trained = pack_checkpoint(ws, mine), False
            try:
                with stop_on_sigterm(), contextlib.ExitStack() as tracked:
                    trackers = [tracked.enter_context(tracker_of(ws, s)) for s in mine]
                    on_log = (lambda step, losses: [t.curve(step, loss) for t, loss in zip(trackers, losses)]
                              ) if ws.log_to else None
                    logs = _train_together(mine, prepared, ws, checkpoint, on_log)
                    trained, pack = True, [s.run_id for s in mine]
                    for spec, student, log, tracker in zip(mine, prepared, logs, trackers):
                        result = _finish_student(spec, teacher, ws, student.task, student.model, log, pack=pack)
                        if tracker:
                            tracker.result(result.to_json())
            except Exception as e:  # noqa: BLE001  (whatever breaks a pack, its members still train, one by one)
                if trained:  # the pack trained; storing or evaluating a member failed, which one by one would too
                    raise
                why = f"{type(e).__name__}: {str(e)[:300]}"
                fallbacks = [fallback("pack", f"a pack of {len(mine)} trains one by one ({why})")]
                checkpoint.remove()
                del prepared
                dev.release(ws.device)
            else:
                checkpoint.remove()
                return
        with stop_on_sigterm():
            for spec in mine:
                _train_claimed(spec, teacher, teacher_result, ws, pack_fallback=why, fallbacks=fallbacks)


def run_job(job, teacher: RunSpec | None, out, data_dir=None, device: str = "cpu", compile: str = "auto") -> None:
    """What a launcher runs: ``job`` is one spec (:func:`run_one`) or a tuple of specs (:func:`run_pack`)."""
    if isinstance(job, RunSpec):
        run_one(job, out, data_dir, device, teacher=teacher, compile=compile)
    else:
        run_pack(list(job), teacher, out, data_dir, device, compile)


def import_source(spec: RunSpec) -> None:
    """Your own setup's module or file, imported in this process (a launcher's worker, a slurm or Ray task), so
    the datasets and architectures it registers are known here too (:mod:`kdlib.setups.yours`)."""
    if spec.tags.get("source"):
        setups.SETUPS.check(spec.tags["source"])


def checkpoint_of(ws: Workspace, spec: RunSpec) -> Checkpoint:
    """The checkpoint of a run trained alone: beside its claim."""
    return Checkpoint(run_dir(ws.out, spec) / FILE, ws.checkpoint_every)


def pack_checkpoint(ws: Workspace, specs: list[RunSpec]) -> Checkpoint:
    """The checkpoint of a pack, in its first member's folder and named by all its members: a pack of other
    members (some finished elsewhere meanwhile) starts afresh rather than resume another pack's state."""
    members = hashlib.sha256(" ".join(s.run_id for s in specs).encode()).hexdigest()[:16]
    return Checkpoint(run_dir(ws.out, specs[0]) / f"pack-{members}-{FILE}", ws.checkpoint_every)


def _teacher_result(spec: RunSpec, teacher: RunSpec | None, ws: Workspace) -> RunResult | None:
    """A student's finished teacher result (training the teacher first if needed); None for a teacher spec or
    while another process trains the teacher."""
    if spec.role != "student":
        return None
    if teacher is None or teacher.run_id != spec.teacher_id:
        raise ValueError(f"student run {spec.run_id} needs its teacher spec (id {spec.teacher_id})")
    return run_one(teacher, ws)


def _train_claimed(spec: RunSpec, teacher: RunSpec | None, teacher_result: RunResult | None, ws: Workspace,
                   pack_fallback: str | None = None, fallbacks: list[str] = ()) -> RunResult:
    """Train a run this process holds the claim of (resuming its checkpoint if one is there); divergence and a
    failed teacher are recorded as failures. ``pack_fallback``: why the run's pack trained it alone, and
    ``fallbacks`` its fallback line (kept in its result)."""
    log_attempt(ws.out, spec)
    checkpoint = checkpoint_of(ws, spec)
    if spec.role == "student" and teacher_result.failed:
        return _record_failure(spec, ws, f"its teacher {teacher.run_id} failed", pack_fallback, fallbacks)
    with tracker_of(ws, spec) as tracker:
        on_log = tracker.curve if tracker else None
        try:
            if spec.role == "student":
                result = _train_student(spec, teacher, ws, checkpoint, pack_fallback, fallbacks, on_log)
            else:
                result = _train_teacher(spec, ws, checkpoint, on_log)
        except FloatingPointError as e:
            result = _record_failure(spec, ws, f"diverged: {e}", pack_fallback, fallbacks)
        if tracker:
            tracker.result(result.to_json())
    checkpoint.remove()
    return result


def tracker_of(ws: Workspace, spec: RunSpec):
    """Where a run's training is mirrored (:mod:`kdlib.tracking`, under its setup's label and profile): a context
    manager giving the tracker, or None when ``--log-to`` is off."""
    setup = f"{spec.tags.get('label', spec.tags.get('setup'))}/{spec.tags.get('profile')}"
    return tracking.open_run(ws.log_to, ws.out, setup, spec.run_id, asdict(spec)) or contextlib.nullcontext()


def _record_failure(spec: RunSpec, ws: Workspace, reason: str, pack_fallback: str | None,
                    fallbacks: list[str]) -> RunResult:
    return write_result(ws.out, spec, _new_result(spec, ws, status="failed", reason=reason,
                                                  pack_fallback=pack_fallback, fallbacks=list(fallbacks)))


def _recipe(spec: RunSpec) -> Recipe:
    return Recipe(**{**spec.recipe, "milestones": tuple(spec.recipe.get("milestones", ()))})


def _new_result(spec: RunSpec, ws: Workspace, **values) -> RunResult:
    """A result of ``spec`` trained here, now."""
    computed = spec.precision if dev.is_cuda(ws.device) and spec.precision else "float32"  # the CPU: float32
    fallbacks = list(dict.fromkeys([*ws.fallbacks, *(values.pop("fallbacks", None) or [])])) or None
    return RunResult(run_id=spec.run_id, spec=asdict(spec), device=ws.device, precision=computed,
                     torch=torch.__version__, host=platform.node(), pid=os.getpid(), fallbacks=fallbacks,
                     provenance=provenance.record(spec, ws.device, ws.data_dir), **values)


def _train_teacher(spec: RunSpec, ws: Workspace, checkpoint: Checkpoint, on_log=None) -> RunResult:
    task = load_task(spec, ws.data_dir)
    own = task if spec.train_dataset_kwargs is None else load_task(spec, ws.data_dir, spec.train_dataset_kwargs)
    directory = run_dir(ws.out, spec)
    write_json(directory / "spec.json", asdict(spec))
    model = init_model(lambda: build_model(spec, task.num_classes), spec.teacher_seed)
    save_tensor(directory / "init.pt", model.state_dict())
    if spec.weights_sha256:  # your teacher: its checkpoint file, unchanged since the plan named it
        path = spec.tags["checkpoint"]
        if sha256(path) != spec.weights_sha256:
            raise CheckpointError(f"teacher checkpoint {path} changed since its run was planned (SHA-256 "
                                  f"{sha256(path)[:12]}, planned {spec.weights_sha256[:12]}): plan the setup again")
        load_weights(model, path)
    training = {}
    if spec.recipe is not None:
        log = train(model, own.train, Objective("ce"), _recipe(spec), data_seed=spec.teacher_seed, device=ws.device,
                    log_every=max(1, spec.recipe["steps"] // 50), compile=ws.compiled, precision=spec.precision,
                    last_epoch=True, checkpoint=checkpoint, on_log=on_log)
        # what the training loop saw (train mode, augmented as trained), beside the clean train metrics below
        training = {**_training_record(log), "train_loss_augmented": log.last_epoch["loss"],
                    "train_accuracy_augmented": log.last_epoch["accuracy"]}
    _save_model(directory / "model.pt", model)
    test_logits, test = score(model, task.test.eval_batches(spec.eval_batch_size), ws.device,
                              flip=bool(spec.eval_flip), precision=spec.precision)
    save_tensor(directory / "test_logits.pt", test_logits)
    fixed = getattr(task.train, "fixed", False)  # every training example, in index order: the students' KD cache
    train_logits, train_metrics = score(model, task.train.eval_batches(spec.eval_batch_size), ws.device, keep=fixed,
                                        precision=spec.precision)
    if fixed:
        save_tensor(directory / "train_logits.pt", train_logits)
    return write_result(ws.out, spec, _new_result(
        spec, ws, **training, test_accuracy=test["accuracy"], test_loss=test["loss"],
        train_accuracy=train_metrics["accuracy"], train_loss=train_metrics["loss"],
        probes=run_probes(spec.probes or [], model, task, ws.device, spec.eval_batch_size)))


def _save_model(path: Path, model: torch.nn.Module) -> None:
    """Store the weights on the CPU in the default (contiguous) layout, whatever device and layout trained them."""
    save_tensor(path, {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


INITS = ("seed", "teacher", "student-seed")


def _init_seed(spec: RunSpec) -> int:
    """The seed of a run's initial weights: the student seed under ``init="student-seed"``, else the teacher seed
    (for ``"teacher"``, the seed the teacher's M0 was drawn from)."""
    if spec.init not in INITS:
        raise ValueError(f"init={spec.init!r} is not allowed: use one of {list(INITS)}")
    return spec.student_seed if spec.init == "student-seed" else spec.teacher_seed


def _initial_model(spec: RunSpec, build, teacher_dir: Path) -> torch.nn.Module:
    """A student's initial model: a copy of the teacher's M0 (``init="teacher"``), else drawn from its init seed."""
    if spec.init == "teacher":
        model = build()
        model.load_state_dict(torch.load(teacher_dir / "init.pt", map_location="cpu"))
        return model
    return init_model(build, _init_seed(spec))


class Student(NamedTuple):
    """A student ready to train: its data, initial model, objective, what the objective needs (a teacher model or
    a cache of its logits) and, for feature maps of another width than the teacher's, the projection."""
    task: object
    model: torch.nn.Module
    objective: Objective
    teacher: torch.nn.Module | None
    cache: torch.Tensor | None
    projection: torch.nn.Module | None


def _prepare_student(spec: RunSpec, teacher_spec_: RunSpec, ws: Workspace) -> Student:
    """A student's data, initial model and what its objective needs."""
    task = load_task(spec, ws.data_dir)
    teacher_dir = run_dir(ws.out, teacher_spec_)
    write_json(run_dir(ws.out, spec) / "spec.json", asdict(spec))
    model = _initial_model(spec, lambda: build_model(spec, task.num_classes), teacher_dir)
    objective = spec.objective
    teacher_model, cache, projection = None, None, None
    if objective.needs_teacher:
        cache_path = teacher_dir / "train_logits.pt"
        if objective.row.teacher == "logits" and getattr(task.train, "fixed", False) and cache_path.exists():
            cache = torch.load(cache_path, map_location="cpu")
        else:
            teacher_model = load_model(ws, teacher_spec_, which="init.pt" if objective.row.teacher_init else "model.pt")
    if objective.row.teacher == "features":  # matched to a teacher's features: through a projection if narrower
        x, _ = next(iter(task.train.eval_batches(1)))
        widths = [feature_width(m, objective.feature_layer, x) for m in (model, teacher_model)]
        projection = feature_projection(*widths, _init_seed(spec))
    return Student(task, model, objective, teacher_model, cache, projection)


def _training_record(log) -> dict:
    """What a result keeps of its training: the loss curve, the seconds, and notes (e.g. a compile fallback)."""
    return {"train_curve": {"step": log.steps, "loss": log.losses}, "train_seconds": log.seconds,
            "notes": log.notes or None, "fallbacks": log.fallbacks}


def _finish_student(spec: RunSpec, teacher_spec_: RunSpec, ws: Workspace, task, model, log,
                    pack: list[str] | None = None, pack_fallback: str | None = None) -> RunResult:
    """Store a trained student's weights, compare it with its teacher on the test set, write its result."""
    _save_model(run_dir(ws.out, spec) / "model.pt", model)
    teacher_logits = torch.load(run_dir(ws.out, teacher_spec_) / "test_logits.pt", map_location="cpu")
    metrics = evaluate(model, task.test.eval_batches(spec.eval_batch_size), teacher_logits, ws.device,
                       flip=bool(spec.eval_flip), precision=spec.precision).result()
    teacher = read_result(ws.out, teacher_spec_)
    return write_result(ws.out, spec, _new_result(
        spec, ws, metrics=metrics, **_training_record(log),
        probes=run_probes(spec.probes or [], model, task, ws.device, spec.eval_batch_size),
        pack=pack, pack_fallback=pack_fallback,
        teacher={"test_accuracy": teacher.test_accuracy, "test_loss": teacher.test_loss,
                 "train_accuracy": teacher.train_accuracy, "train_loss": teacher.train_loss}))


def _train_student(spec: RunSpec, teacher_spec_: RunSpec, ws: Workspace, checkpoint: Checkpoint,
                   pack_fallback: str | None, fallbacks: list[str], on_log=None) -> RunResult:
    student = _prepare_student(spec, teacher_spec_, ws)
    recipe = _recipe(spec)
    log = train(student.model, student.task.train, student.objective, recipe, data_seed=spec.student_seed,
                teacher=student.teacher, teacher_cache=student.cache, device=ws.device,
                log_every=max(1, recipe.steps // 50), compile=ws.compiled, precision=spec.precision,
                projection=student.projection, checkpoint=checkpoint, on_log=on_log)
    log.fallbacks[:0] = fallbacks
    if student.projection is not None:  # beside the student, not in it: model.pt stays a plain student model
        _save_model(run_dir(ws.out, spec) / "projection.pt", student.projection)
    return _finish_student(spec, teacher_spec_, ws, student.task, student.model, log, pack_fallback=pack_fallback)


def _train_together(specs: list[RunSpec], prepared: list[Student], ws: Workspace, checkpoint: Checkpoint,
                    on_log=None) -> list:
    """Train prepared students (:func:`_prepare_student`) of one pack together; returns their train logs."""
    teacher_model = next((p.teacher for p in prepared if p.teacher is not None), None)
    cache = next((p.cache for p in prepared if p.cache is not None), None)
    recipe = _recipe(specs[0])
    return train_together([p.model for p in prepared], prepared[0].task.train, [p.objective for p in prepared],
                          recipe, [s.student_seed for s in specs], teacher=teacher_model, teacher_cache=cache,
                          device=ws.device, log_every=max(1, recipe.steps // 50), compile=ws.compiled,
                          precision=specs[0].precision, checkpoint=checkpoint, on_log=on_log)
