"""Train one model under one objective and optimiser recipe, with seeded, separate random streams.

Randomness: the model's initial weights come from the *init seed* (``init_model``); the data order, dropout
and augmentation come from the *data-order seed* (``train``). Two independent streams are derived from the
data-order seed: one explicit generator for batch order and augmentation, one for the global RNG that
dropout uses. Same seeds give the same bits on CPU.

Teacher outputs that are fixed are never recomputed: for fixed in-memory examples (no augmentation) pass a
``teacher_cache`` of the teacher's logits on every training example (``teacher_logits_on``), computed once per
teacher and reused by all its students; otherwise (augmentation, random text windows) the teacher runs on the
very batch the student sees.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import device as dev
from .conditions import objectives
from .losses import check_alpha, check_temperature, feature_map_loss, kd_loss, label_smoothing_loss, rcd_loss
from .metrics import Comparison
from .recipe import Recipe

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


def derive_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 63-bit seeds from one integer seed (numpy SeedSequence)."""
    return [int(s.generate_state(1, np.uint64)[0] >> np.uint64(1)) for s in np.random.SeedSequence(seed).spawn(n)]


def init_model(build: Callable[[], nn.Module], init_seed: int) -> nn.Module:
    """Build a model whose initial weights depend only on ``init_seed`` (global RNG untouched)."""
    with dev.seeded(init_seed):
        return build()


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


@dataclass
class TrainLog:
    """The train-loss curve (mean per logging interval), wall seconds, and notes on how the run trained."""
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def outputs(model: nn.Module, x: torch.Tensor, device, flip: bool = False) -> torch.Tensor:
    """``model``'s float32 logits of the batch ``x`` on the CPU; ``flip``: averaged with those of the horizontally
    flipped images (FFCV's test-time flip, the ``imagenet-ffcv-extras`` reading)."""
    x = dev.batch(x, device)
    with dev.float32_forward(device):
        out = model(x)
        if flip:
            out = (out + model(x.flip(-1))) / 2
    return out.cpu()


@torch.no_grad()
def predict(model: nn.Module, batches, device: str = "cpu", flip: bool = False) -> torch.Tensor:
    """Float32 logits of ``model`` (eval mode) over ``(x, y)`` batches, concatenated on the CPU."""
    dev.place(model, device).eval()
    return torch.cat([outputs(model, x, device, flip) for x, _ in batches])


@torch.no_grad()
def score(model: nn.Module, batches, device: str = "cpu", keep: bool = True,
          flip: bool = False) -> tuple[torch.Tensor | None, dict[str, float]]:
    """One float32 pass: ``model``'s logits over ``(x, y)`` batches (None unless ``keep``) and its accuracy and
    loss on them."""
    dev.place(model, device).eval()
    comparison, logits = Comparison(), []
    for x, y in batches:
        out = outputs(model, x, device, flip)
        comparison.update(out, out, y)
        if keep:
            logits.append(out)
    result = comparison.result()
    return torch.cat(logits) if keep else None, {"accuracy": result["accuracy"], "loss": result["loss"]}


def teacher_logits_on(teacher: nn.Module, data, batch_size: int, device: str = "cpu") -> torch.Tensor:
    """The teacher's logits on every (un-augmented) training example, in index order: the KD cache."""
    return predict(teacher, data.eval_batches(batch_size), device)


@torch.no_grad()
def evaluate(model: nn.Module, batches, teacher_logits: torch.Tensor, device: str = "cpu",
             comparison: Comparison | None = None, flip: bool = False) -> Comparison:
    """Stream ``model``'s float32 test logits against the teacher's (same order) into a :class:`Comparison`."""
    dev.place(model, device).eval()
    comparison = comparison or Comparison()
    i = 0
    for x, y in batches:
        logits = outputs(model, x, device, flip)
        comparison.update(teacher_logits[i:i + len(x)], logits, y)
        i += len(x)
    if i != len(teacher_logits):
        raise ValueError(f"teacher logits cover {len(teacher_logits)} examples but the test set has {i}")
    return comparison


class LossMeter:
    """Mean train loss per logging interval, accumulated on the device: the host reads it (one sync) only at
    logging steps. A non-finite loss is caught then and reported with the step where it first appeared, so a
    diverging run still fails; on the CPU the means are the same float64 sums as reading every step.
    ``models``: None for one model, K for a pack (one loss per model)."""

    def __init__(self, models: int | None, device):
        shape = () if models is None else (models,)
        self.models = models
        self.sum = torch.zeros(shape, dtype=torch.float64, device=device)
        self.first_bad = torch.zeros(shape, dtype=torch.long, device=device)  # 0: every loss finite so far
        self.bad = torch.zeros(shape, dtype=torch.float32, device=device)
        self.count = 0

    def add(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach()
        self.sum += loss.double()
        new = (self.first_bad == 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(new, step, self.first_bad)
        self.bad = torch.where(new, loss.float(), self.bad)
        self.count += 1

    def read(self) -> list[float]:
        """The interval's mean loss per model (raising if any loss was not finite); starts a new interval."""
        first_bad = self.first_bad.cpu().reshape(-1)
        if (first_bad > 0).any():
            k = int((first_bad > 0).nonzero()[0])
            value = float(self.bad.cpu().reshape(-1)[k])
            who = "loss" if self.models is None else f"loss of model {k}"
            raise FloatingPointError(f"{who} became {value} at step {int(first_bad[k])}")
        means = (self.sum / self.count).cpu().reshape(-1).tolist()
        self.sum.zero_()
        self.count = 0
        return means


class Forward:
    """A training forward pass, ``torch.compile``d when asked. Compilation happens at the first call, and again
    when shapes change (a last, shorter batch), and the backward graph compiles at the first backward pass; if any
    of it fails, training goes on eagerly and ``notes`` says why (the run still completes, and records it)."""

    def __init__(self, fn, compile: bool, notes: list[str]):
        self.eager, self.notes = fn, notes
        self.fn = torch.compile(fn) if compile else fn

    def __call__(self, *args):
        try:
            return self.fn(*args)
        except (FloatingPointError, dev.OutOfMemory):
            raise
        except Exception as e:  # noqa: BLE001  (any compiler failure: train eagerly instead)
            if self.fn is self.eager:
                raise
            self.notes.append(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); trained eagerly")
            warnings.warn(self.notes[-1])
            self.fn = self.eager
            return self.fn(*args)

    def backward(self, loss: torch.Tensor, again: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Back-propagate ``loss`` (its sum: one loss per model of a pack), returning it. If a compiled step's
        backward fails, the step is done again eagerly: ``again()`` clears the gradients and returns the loss of
        an eager forward pass."""
        try:
            loss.sum().backward()
            return loss
        except (FloatingPointError, dev.OutOfMemory):
            raise
        except Exception as e:  # noqa: BLE001  (a compiler failure surfacing in backward: train eagerly instead)
            if self.fn is self.eager:
                raise
            self.notes.append(f"torch.compile failed in backward ({type(e).__name__}: {str(e)[:200]}); "
                              f"trained eagerly")
            warnings.warn(self.notes[-1])
            self.fn = self.eager
            loss = again()
            loss.sum().backward()
            return loss


def optimizer_step(forward: Forward, losses_of: Callable[[], torch.Tensor], optimizer, scheduler,
                   clip: Callable[[], object] | None) -> torch.Tensor:
    """One training step of one model or a pack (``train`` and ``train_together`` share it): the loss(es) of
    ``losses_of()``, back-propagated through ``forward`` (which falls back to eager if a compiled backward fails),
    ``clip()`` on the gradients if given, the optimiser's and the scheduler's step. Returns the loss(es)."""
    losses = losses_of()
    optimizer.zero_grad(set_to_none=True)
    losses = forward.backward(losses, lambda: optimizer.zero_grad(set_to_none=True) or losses_of())
    if clip is not None:
        clip()
    optimizer.step()
    scheduler.step()
    return losses


def train(model: nn.Module, data, objective: Objective, recipe: Recipe, data_seed: int, *,
          teacher: nn.Module | None = None, teacher_cache: torch.Tensor | None = None, device: str = "cpu",
          log_every: int = 10, progress: bool = False, compile: bool = False,
          precision: str | None = None) -> TrainLog:
    """Train ``model`` in place; returns the train-loss curve (mean loss per ``log_every`` steps).

    On CUDA the data moves onto the GPU where it fits and the optimiser step is fused; the host waits for the
    device only at logging steps. ``compile``: run the forward pass under ``torch.compile``. ``precision``:
    ``"float32"`` turns CUDA's bf16 autocast off (:func:`kdlib.device.autocast`)."""
    check_teacher_source([objective], data, teacher, teacher_cache)
    order_seed, dropout_seed = derive_seeds(data_seed, 2)
    generator = torch.Generator().manual_seed(order_seed)
    dev.place(model, device).train()
    data = dev.resident(data, device)
    if teacher is not None:
        dev.place(teacher, device).eval()
    if teacher_cache is not None:
        teacher_cache = teacher_cache.to(device)
    student_hook = _Capture(model, objective.feature_layer) if objective.kind.startswith("feature") else None
    teacher_hook = _Capture(teacher, objective.feature_layer) if objective.kind == "feature" else None
    optimizer, scheduler = recipe.build(model.named_parameters(), fused=dev.fused_optimizer(device))
    log, meter, start = TrainLog(), LossMeter(None, device), time.perf_counter()
    forward = Forward(model, compile, log.notes)
    clip = (lambda: nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)) if recipe.grad_clip else None
    with dev.seeded(dropout_seed):
        batches = data.batches(recipe.batch_size, recipe.steps, generator)
        for step, (idx, x, y) in enumerate(tqdm(batches, total=recipe.steps, disable=not progress,
                                                desc=objective.kind, leave=False), start=1):
            x, y = dev.batch(x, device), dev.batch(y, device)

            def step_loss():
                with dev.autocast(device, precision):
                    return objective_loss(objective, forward(x), x, y, idx, teacher, teacher_cache, student_hook,
                                          teacher_hook)
            meter.add(optimizer_step(forward, step_loss, optimizer, scheduler, clip), step)
            if step % log_every == 0 or step == recipe.steps:
                log.steps.append(step)
                log.losses += meter.read()
    for hook in (student_hook, teacher_hook):
        if hook is not None:
            hook.handle.remove()
    log.seconds = time.perf_counter() - start
    return log


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
