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
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import device as dev
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
            self.notes.append(f"torch.compile failed in backward ({type(e).__name__}: {str(e)[:200]}); "
                              f"trained eagerly")
            warnings.warn(self.notes[-1])
            self.fn = self.eager
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


def train(model: nn.Module, data, objective: Objective, recipe: Recipe, data_seed: int, *,
          teacher: nn.Module | None = None, teacher_cache: torch.Tensor | None = None, device: str = "cpu",
          log_every: int = 10, progress: bool = False, compile: bool = False,
          precision: str | None = None, projection: nn.Module | None = None,
          last_epoch: bool = False) -> TrainLog:
    """Train ``model`` in place; returns the train-loss curve (mean loss per ``log_every`` steps).

    On CUDA the data moves onto the GPU where it fits and the optimiser step is fused; the host waits for the
    device only at logging steps. ``compile``: run the forward pass under ``torch.compile``. ``precision``: how
    training steps compute (:func:`amp`). ``projection``: a feature objective's map of the student's features to
    the teacher's width (:func:`feature_projection`), trained with the model under the same recipe.
    ``last_epoch``: also record the mean loss and accuracy of the last epoch's batches (:func:`epoch_length`), as
    they were trained (train mode, augmented), in ``log.last_epoch``."""
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
    log, meter, start = TrainLog(), LossMeter(None, device), time.perf_counter()
    forward = Forward(model, compile, log.notes)
    weights = [p for _, p in named]
    clip = (lambda: nn.utils.clip_grad_norm_(weights, recipe.grad_clip)) if recipe.grad_clip else None
    mixed = dev.amp(device, precision)
    scaler = mixed.grad_scaler()
    tail = recipe.steps - epoch_length(data, recipe) if last_epoch else recipe.steps  # later steps: the last epoch
    # the last epoch's loss and correct predictions summed over its examples (tokens), and their count
    tail_sums = torch.zeros(3, dtype=torch.float64, device=device)
    with dev.seeded(dropout_seed):
        batches = data.batches(recipe.batch_size, recipe.steps, generator)
        for step, (idx, x, y) in enumerate(tqdm(batches, total=recipe.steps, disable=not progress,
                                                desc=objective.kind, leave=False), start=1):
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
    for hook in (student_hook, teacher_hook):
        if hook is not None:
            hook.handle.remove()
    if last_epoch:
        loss, correct, count = tail_sums.tolist()
        log.last_epoch = {"loss": loss / count, "accuracy": correct / count}  # per example, as a whole-split count
    log.seconds = time.perf_counter() - start
    return log
