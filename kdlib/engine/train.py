"""The training loop: one model under one objective and optimiser recipe, with seeded, separate random streams.

Randomness: the model's initial weights come from the *init seed* (``init_model``); the data order, dropout
and augmentation come from the *data-order seed* (``train``). Two independent streams are derived from the
data-order seed: one explicit generator for batch order and augmentation, one for the global RNG that
dropout uses. A feature-map projection's weights come from a third stream of the init seed
(:func:`feature_projection`). Same seeds give the same bits on CPU.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import device as dev
from .checkpoint import Checkpoint, cpu
from .fallback import fallback
from .objectives import Capture, Objective, check_teacher_source, objective_loss
from .recipe import Recipe


def derive_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 63-bit seeds from one integer seed (numpy SeedSequence)."""
    return [int(s.generate_state(1, np.uint64)[0] >> np.uint64(1)) for s in np.random.SeedSequence(seed).spawn(n)]


def init_model(build: Callable[[], nn.Module], init_seed: int) -> nn.Module:
    """Build a model whose initial weights depend only on ``init_seed`` (global RNG untouched)."""
    with dev.seeded(init_seed):
        return build()


def feature_projection(student_width: int, teacher_width: int, init_seed: int) -> nn.Linear | None:
    """The PyTorch KD tutorial's regressor for feature-map matching between models of different widths: a learned
    per-token map from the student's feature width to the teacher's, trained with the student and used only in the
    loss; None where the widths agree (the features are matched directly). Its weights come from the run's
    ``init_seed`` through a stream of their own (neither the model's init stream nor the data-order ones)."""
    if student_width == teacher_width:
        return None
    return init_model(lambda: nn.Linear(student_width, teacher_width), derive_seeds(init_seed, 3)[2])


def epoch_length(data, recipe: Recipe) -> int:
    """Optimiser steps of one pass over ``data``, at most the run's: the recipe's ``epoch_length``, else one batch
    per ``batch_size`` examples (a token stream: its non-overlapping windows, the examples its train metrics
    count)."""
    if recipe.epoch_length:
        return min(recipe.epoch_length, recipe.steps)
    n = len(data) if hasattr(data, "__len__") else (len(data.tokens) - 1) // data.block_size
    per_epoch = n // recipe.batch_size if getattr(data, "drop_last", False) else math.ceil(n / recipe.batch_size)
    return max(1, min(per_epoch, recipe.steps))


@dataclass
class TrainLog:
    """The train-loss curve (mean per logging interval), wall seconds, and notes on how the run trained;
    ``last_epoch``: the mean loss and accuracy of the last epoch's training batches, where asked for."""
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)  # kdlib.engine.fallback lines
    last_epoch: dict[str, float] | None = None


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

    def state(self) -> dict:
        """What a checkpoint keeps of the interval in progress."""
        return {"sum": self.sum, "first_bad": self.first_bad, "bad": self.bad, "count": self.count}

    def load(self, state: dict) -> None:
        for name in ("sum", "first_bad", "bad"):
            getattr(self, name).copy_(state[name])
        self.count = state["count"]

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


#: How many graphs ``torch.compile`` may make of one function (dynamo's ``recompile_limit``, 8 by default, which a
#: study's packs of several families and sizes cross in one process, after which dynamo runs further shapes eagerly
#: and says nothing). Past it, compilation now fails loudly and :class:`Forward` trains eagerly with a fallback line.
RECOMPILE_LIMIT = 64


def compiled(fn):
    """``torch.compile(fn)`` under :data:`RECOMPILE_LIMIT`, with hitting the limit an error rather than a silent
    eager run."""
    config = torch._dynamo.config
    config.recompile_limit = RECOMPILE_LIMIT
    config.fail_on_recompile_limit_hit = True
    return torch.compile(fn)


class Forward:
    """A forward pass (a training step's, or a live teacher's), ``torch.compile``d when asked. Compilation happens
    at the first call, and again when shapes change (a last, shorter batch), and the backward graph compiles at the
    first backward pass; if any of it fails, or the recompile limit is hit, training goes on eagerly, and a fallback
    line (:mod:`kdlib.engine.fallback`) says why, in the terminal and in ``fallbacks`` (the run records it)."""

    def __init__(self, fn, compile: bool, fallbacks: list[str]):
        self.eager, self.fallbacks = fn, fallbacks
        self.fn = compiled(fn) if compile else fn

    def __call__(self, *args):
        try:
            return self.fn(*args)
        except (FloatingPointError, dev.OutOfMemory):
            raise
        except Exception as e:  # noqa: BLE001  (any compiler failure: train eagerly instead)
            if self.fn is self.eager:
                raise
            self._eager(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); trained eagerly")
            return self.fn(*args)

    def _eager(self, why: str) -> None:
        fallback("compile", why, self.fallbacks)
        self.fn = self.eager

    def backward(self, loss: torch.Tensor, again: Callable[[], torch.Tensor],
                 scale: Callable[[torch.Tensor], torch.Tensor] = lambda total: total) -> torch.Tensor:
        """Back-propagate ``scale(loss.sum())`` (one loss per model of a pack; ``scale``: a GradScaler's), returning
        ``loss``. If a compiled step's backward fails, the step is done again eagerly: ``again()`` clears the
        gradients and returns the loss of an eager forward pass."""
        try:
            scale(loss.sum()).backward()
            return loss
        except (FloatingPointError, dev.OutOfMemory):
            raise
        except Exception as e:  # noqa: BLE001  (a compiler failure surfacing in backward: train eagerly instead)
            if self.fn is self.eager:
                raise
            self._eager(f"torch.compile failed in backward ({type(e).__name__}: {str(e)[:200]}); trained eagerly")
            loss = again()
            scale(loss.sum()).backward()
            return loss


def optimizer_step(forward: Forward, losses_of: Callable[[], torch.Tensor], optimizer, scheduler,
                   clip: Callable[[], object] | None, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One training step of one model or a pack (``train`` and ``train_together`` share it): the loss(es) of
    ``losses_of()``, back-propagated through ``forward`` (which falls back to eager if a compiled backward fails),
    ``clip()`` on the gradients if given, the optimiser's and the scheduler's step. With a ``scaler`` (fp16) the
    loss is scaled before the backward pass, the gradients unscaled before clipping, and the scaler steps the
    optimiser (skipping a step whose gradients overflowed) and updates its scale. Returns the (unscaled) loss(es)."""
    losses = losses_of()
    optimizer.zero_grad(set_to_none=True)
    again = lambda: optimizer.zero_grad(set_to_none=True) or losses_of()
    losses = forward.backward(losses, again) if scaler is None else forward.backward(losses, again, scaler.scale)
    if clip is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        clip()
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()
    return losses


def open_stream(data, batch_size: int, steps: int, generator: torch.Generator, saved: dict | None = None):
    """A run's stream of training batches and the position it keeps (:meth:`kdlib.data.sources.ExampleData.batches`),
    continued from ``saved`` (:func:`stream_state`) where given: a resumable source from its saved position and
    generator state; any other source replays the batches already trained (the same draws from its freshly seeded
    generator, at the cost of loading them again)."""
    if not getattr(data, "resumable", False):
        stream = data.batches(batch_size, steps, generator)
        for _ in range(saved["step"] if saved else 0):
            next(stream)
        return stream, {}
    position = dict(saved["position"]) if saved else {}
    if saved:
        generator.set_state(saved["generator"])
    return data.batches(batch_size, steps, generator, position), position


def stream_state(step: int, generator: torch.Generator, position: dict) -> dict:
    """What a checkpoint keeps of a batch stream after ``step`` steps (:func:`open_stream` reads it back)."""
    return {"step": step, "generator": generator.get_state(), "position": position}


def log_state(log: TrainLog) -> dict:
    return {"steps": log.steps, "losses": log.losses, "notes": log.notes, "fallbacks": log.fallbacks}


def resumed_log(saved: dict) -> TrainLog:
    """The log of a run resumed from the checkpoint ``saved``, noting where it resumed."""
    log = TrainLog(**{k: list(v) for k, v in saved["log"].items()})
    log.notes.append(f"resumed from a checkpoint after step {saved['step']}")
    return log


def restore(saved: dict | None, model: nn.Module, optimizer, scheduler, scaler, meter: LossMeter) -> tuple[int, float]:
    """A training loop's shared state from the checkpoint ``saved`` (the model's or pack's, the optimiser's, the
    scheduler's, the gradient scaler's, the loss meter's); returns the first step to train and the origin of the
    run's seconds (without a checkpoint: step 1, now)."""
    if not saved:
        return 1, time.perf_counter()
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(saved["scaler"])
    meter.load(saved["meter"])
    return saved["step"] + 1, time.perf_counter() - saved["seconds"]


def train(model: nn.Module, data, objective: Objective, recipe: Recipe, data_seed: int, *,
          teacher: nn.Module | None = None, teacher_cache: torch.Tensor | None = None, device: str = "cpu",
          log_every: int = 10, progress: bool = False, compile: bool = False,
          precision: str | None = None, projection: nn.Module | None = None,
          last_epoch: bool = False, checkpoint: Checkpoint | None = None,
          on_log: Callable[[int, float], None] | None = None) -> TrainLog:
    """Train ``model`` in place; returns the train-loss curve (mean loss per ``log_every`` steps).

    On CUDA the data moves onto the GPU where it fits and the optimiser step is fused; the host waits for the
    device only at logging steps. ``compile``: run the forward passes (the model's, a live teacher's) under
    ``torch.compile``. ``precision``: how training steps compute (:func:`amp`), a live teacher's logits or features
    included (they are training targets; upcast to float32 for the loss). ``projection``: a feature objective's map
    of the student's features to the teacher's width (:func:`feature_projection`), trained with the model under
    the same recipe. ``last_epoch``: also record the mean loss and accuracy of the last epoch's batches
    (:func:`epoch_length`), as they were trained (train mode, augmented), in ``log.last_epoch``. ``checkpoint``:
    where the loop saves its state at the checkpoint's interval and on SIGTERM, and resumes from if it exists
    (:mod:`kdlib.engine.checkpoint`). ``on_log(step, loss)``: called at each logging step (a tracker's curve)."""
    check_teacher_source([objective], data, teacher, teacher_cache)
    if projection is not None and objective.row.teacher != "features":
        raise ValueError(f"objective {objective.kind!r} matches no teacher's feature map: it takes no projection "
                         f"(a constant target is matched at the student's own width)")
    order_seed, dropout_seed = derive_seeds(data_seed, 2)
    generator = torch.Generator().manual_seed(order_seed)
    dev.place(model, device).train()
    data = dev.resident(data, device)
    if teacher is not None:
        dev.place(teacher, device).eval()
    if teacher_cache is not None:
        teacher_cache = teacher_cache.to(device)
    student_hook = Capture(model, objective.feature_layer) if objective.row.feature_layer else None
    teacher_hook = Capture(teacher, objective.feature_layer) if objective.row.teacher == "features" else None
    named = list(model.named_parameters())
    if projection is not None:
        dev.place(projection, device).train()
        named += projection.named_parameters(prefix="projection")
    optimizer, scheduler = recipe.build(named, fused=dev.fused_optimizer(device))
    saved = checkpoint.load() if checkpoint is not None else None
    log, meter = (resumed_log(saved) if saved else TrainLog()), LossMeter(None, device)
    forward = Forward(model, compile, log.fallbacks)
    if objective.row.teacher == "logits" and teacher is not None:  # hooks on a feature teacher stay eager
        teacher = Forward(teacher, compile, log.fallbacks)
    weights = [p for _, p in named]
    clip = (lambda: nn.utils.clip_grad_norm_(weights, recipe.grad_clip)) if recipe.grad_clip else None
    mixed = dev.amp(device, precision)
    scaler = mixed.grad_scaler()
    tail = recipe.steps - epoch_length(data, recipe) if last_epoch else recipe.steps  # later steps: the last epoch
    # the last epoch's loss and correct predictions summed over its examples (tokens), and their count
    tail_sums = torch.zeros(3, dtype=torch.float64, device=device)
    first, start = restore(saved, model, optimizer, scheduler, scaler, meter)
    if saved:
        if projection is not None:
            projection.load_state_dict(saved["projection"])
        tail_sums.copy_(saved["tail"])
    with dev.seeded(dropout_seed):
        batches, position = open_stream(data, recipe.batch_size, recipe.steps, generator, saved and saved["stream"])
        if saved:
            dev.set_rng_state(saved["rng"])
        for step, (idx, x, y) in enumerate(tqdm(batches, initial=first - 1, total=recipe.steps,
                                                disable=not progress, desc=objective.kind, leave=False), start=first):
            x, y = dev.batch(x, device), dev.batch(y, device)
            logits = []

            def step_loss():
                with mixed.steps():
                    logits[:] = [forward(x)]
                    return objective_loss(objective, logits[0], x, y, idx, teacher, teacher_cache, student_hook,
                                          teacher_hook, projection)
            loss = optimizer_step(forward, step_loss, optimizer, scheduler, clip, scaler)
            meter.add(loss, step)
            if step > tail:
                correct = (logits[0].detach().argmax(-1) == y).double().sum()
                tail_sums += torch.stack([loss.detach().double() * y.numel(), correct,
                                          torch.tensor(float(y.numel()), dtype=torch.float64, device=device)])
            if step % log_every == 0 or step == recipe.steps:
                log.steps.append(step)
                log.losses += meter.read()
                if on_log is not None:
                    on_log(step, log.losses[-1])
            if checkpoint is not None and step < recipe.steps and checkpoint.due():
                checkpoint.save(cpu({
                    "step": step, "seconds": time.perf_counter() - start, "model": model.state_dict(),
                    "projection": None if projection is None else projection.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": None if scaler is None else scaler.state_dict(), "rng": dev.rng_state(),
                    "stream": stream_state(step, generator, position), "meter": meter.state(), "tail": tail_sums,
                    "log": log_state(log)}))
    for hook in (student_hook, teacher_hook):
        if hook is not None:
            hook.handle.remove()
    if last_epoch:
        loss, correct, count = tail_sums.tolist()
        log.last_epoch = {"loss": loss / count, "accuracy": correct / count}  # per example, as a whole-split count
    log.seconds = time.perf_counter() - start
    return log
