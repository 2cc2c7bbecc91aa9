"""The training loop: one model under one objective and optimiser recipe, with seeded, separate random streams.

Randomness: the model's initial weights come from the *init seed* (``init_model``); the data order, dropout
and augmentation come from the *data-order seed* (``train``). Two independent streams are derived from the
data-order seed: one explicit generator for batch order and augmentation, one for the global RNG that
dropout uses. Same seeds give the same bits on CPU.
"""
from __future__ import annotations

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


@dataclass
class TrainLog:
    """The train-loss curve (mean per logging interval), wall seconds, and notes on how the run trained."""
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


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
    ``"float32"`` turns CUDA's bf16 autocast off (:func:`kdlib.engine.device.autocast`)."""
    check_teacher_source([objective], data, teacher, teacher_cache)
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
