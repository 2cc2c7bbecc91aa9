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

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .losses import check_alpha, check_temperature, feature_map_loss, kd_loss, label_smoothing_loss, rcd_loss
from .metrics import Comparison

OBJECTIVES = ("ce", "kd", "rcd", "ls", "feature", "feature_rcd")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


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


@dataclass(frozen=True)
class Recipe:
    """Optimiser and schedule; ``steps`` counts optimiser steps (epochs x batches per epoch for epoch recipes)."""
    optimizer: str
    lr: float
    batch_size: int
    steps: int
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    milestones: tuple[float, ...] = ()  # fractions of ``steps`` where a "step" schedule multiplies lr by gamma
    gamma: float = 0.1
    grad_clip: float = 0.0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: allowed are {list(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: allowed are {list(SCHEDULES)}")
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"steps={self.steps}, batch_size={self.batch_size} and lr={self.lr} must be positive")

    def build(self, params) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        else:
            cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
            opt = cls(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.schedule == "cosine":
            factor = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, self.steps) / self.steps))
        elif self.schedule == "step":
            bounds = [int(f * self.steps) for f in self.milestones]
            factor = lambda s: self.gamma ** sum(s >= b for b in bounds)
        else:
            factor = lambda s: 1.0
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


class ExampleData:
    """Fixed examples held in memory as tensors, batched by a seeded permutation per epoch.

    ``augment(x, generator)`` (optional) randomly transforms a training batch; with it the examples are no
    longer fixed, so the teacher runs on the augmented batch instead of a cache. ``transform(x)`` (optional)
    is a deterministic per-batch step applied after it and at evaluation (e.g. uint8 -> normalised float, so
    large image sets stay compact in memory).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, augment: Callable | None = None,
                 transform: Callable | None = None):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} labels")
        self.x, self.y, self.augment, self.transform = x, y, augment, transform

    @property
    def fixed(self) -> bool:
        return self.augment is None

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, steps: int, generator: torch.Generator) -> Iterator:
        step = 0
        while True:
            order = torch.randperm(len(self), generator=generator)
            for i in range(0, len(order), batch_size):
                if step == steps:
                    return
                idx = order[i:i + batch_size]
                if len(idx) == 1 and len(order) > 1:
                    continue  # a lone last example would break BatchNorm; it is drawn again next epoch
                x = self.x[idx]
                if self.augment is not None:
                    x = self.augment(x, generator)
                yield idx, self._transform(x), self.y[idx]
                step += 1

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.transform is None else self.transform(x)

    def eval_batches(self, batch_size: int) -> Iterator:
        for i in range(0, len(self), batch_size):
            yield self._transform(self.x[i:i + batch_size]), self.y[i:i + batch_size]


class WindowData:
    """Random contiguous windows of a token stream, as nanoGPT's ``get_batch``: a random crop per example."""

    fixed = False

    def __init__(self, tokens: torch.Tensor, block_size: int):
        if len(tokens) <= block_size + 1:
            raise ValueError(f"token stream of length {len(tokens)} is too short for block_size {block_size}")
        self.tokens, self.block_size = tokens.long(), block_size

    def batches(self, batch_size: int, steps: int, generator: torch.Generator) -> Iterator:
        offsets = torch.arange(self.block_size + 1)
        for _ in range(steps):
            start = torch.randint(len(self.tokens) - self.block_size - 1, (batch_size,), generator=generator)
            window = self.tokens[start[:, None] + offsets]
            yield None, window[:, :-1], window[:, 1:]

    def eval_batches(self, batch_size: int, max_windows: int | None = None) -> Iterator:
        """Non-overlapping windows from the start of the stream (every token predicted once)."""
        n = (len(self.tokens) - 1) // self.block_size
        n = n if max_windows is None else min(n, max_windows)
        x = self.tokens[:n * self.block_size].view(n, self.block_size)
        y = self.tokens[1:n * self.block_size + 1].view(n, self.block_size)
        for i in range(0, n, batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]


def autocast(device: str):
    """bf16 autocast on CUDA (the paper-scale GPU path); a no-op on CPU, where everything stays float32."""
    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def place(model: nn.Module, device: str) -> nn.Module:
    """Move ``model`` to ``device``; on CUDA, convolutional models go channels-last (NHWC), cuDNN's fast layout.

    Not on CPU: there torch 2.14.1's channels-last backward of a 1x1 stride-2 convolution (4 -> 8 channels,
    64 px: ResNet18's downsample at width 4) corrupts the heap, although other shapes ran 1.3-1.4x faster."""
    model.to(device)
    if _channels_last(device) and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model


def inputs(x: torch.Tensor, device: str) -> torch.Tensor:
    """A batch on ``device``; image batches (4-d) channels-last where :func:`place` makes models so."""
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and _channels_last(device) else x


def _channels_last(device: str) -> bool:
    return str(device).startswith("cuda")


def derive_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 63-bit seeds from one integer seed (numpy SeedSequence)."""
    return [int(s.generate_state(1, np.uint64)[0] >> np.uint64(1)) for s in np.random.SeedSequence(seed).spawn(n)]


def init_model(build: Callable[[], nn.Module], init_seed: int) -> nn.Module:
    """Build a model whose initial weights depend only on ``init_seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
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
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def predict(model: nn.Module, batches, device: str = "cpu") -> torch.Tensor:
    """Logits of ``model`` (eval mode) over ``(x, y)`` batches, concatenated on the CPU."""
    place(model, device).eval()
    with autocast(device):
        return torch.cat([model(inputs(x, device)).float().cpu() for x, _ in batches])


@torch.no_grad()
def score(model: nn.Module, batches, device: str = "cpu") -> tuple[torch.Tensor, dict[str, float]]:
    """One pass: ``model``'s logits over ``(x, y)`` batches and its accuracy and loss on them."""
    place(model, device).eval()
    comparison, logits = Comparison(), []
    for x, y in batches:
        with autocast(device):
            out = model(inputs(x, device)).float().cpu()
        comparison.update(out, out, y)
        logits.append(out)
    result = comparison.result()
    return torch.cat(logits), {"accuracy": result["accuracy"], "loss": result["loss"]}


def teacher_logits_on(teacher: nn.Module, data: ExampleData, batch_size: int, device: str = "cpu") -> torch.Tensor:
    """The teacher's logits on every (un-augmented) training example, in index order: the KD cache."""
    return predict(teacher, data.eval_batches(batch_size), device)


@torch.no_grad()
def evaluate(model: nn.Module, batches, teacher_logits: torch.Tensor, device: str = "cpu",
             comparison: Comparison | None = None) -> Comparison:
    """Stream ``model``'s test logits against the teacher's (same order) into a :class:`Comparison`."""
    place(model, device).eval()
    comparison = comparison or Comparison()
    i = 0
    for x, y in batches:
        with autocast(device):
            logits = model(inputs(x, device)).float().cpu()
        comparison.update(teacher_logits[i:i + len(x)], logits, y)
        i += len(x)
    if i != len(teacher_logits):
        raise ValueError(f"teacher logits cover {len(teacher_logits)} examples but the test set has {i}")
    return comparison


def train(model: nn.Module, data, objective: Objective, recipe: Recipe, data_seed: int, *,
          teacher: nn.Module | None = None, teacher_cache: torch.Tensor | None = None, device: str = "cpu",
          log_every: int = 10, progress: bool = False) -> TrainLog:
    """Train ``model`` in place; returns the train-loss curve (mean loss per ``log_every`` steps)."""
    check_teacher_source([objective], data, teacher, teacher_cache)
    order_seed, dropout_seed = derive_seeds(data_seed, 2)
    generator = torch.Generator().manual_seed(order_seed)
    place(model, device).train()
    if teacher is not None:
        place(teacher, device).eval()
    student_hook = _Capture(model, objective.feature_layer) if objective.kind.startswith("feature") else None
    teacher_hook = _Capture(teacher, objective.feature_layer) if objective.kind == "feature" else None
    optimizer, scheduler = recipe.build(model.parameters())
    log, running, count, start = TrainLog(), 0.0, 0, time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(dropout_seed)
        batches = data.batches(recipe.batch_size, recipe.steps, generator)
        for step, (idx, x, y) in enumerate(tqdm(batches, total=recipe.steps, disable=not progress,
                                                desc=objective.kind, leave=False), start=1):
            x, y = inputs(x, device), y.to(device)
            with autocast(device):
                logits = model(x)
                loss = _loss(objective, logits, x, y, idx, teacher, teacher_cache, student_hook, teacher_hook)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            scheduler.step()
            running, count = running + loss.item(), count + 1
            if step % log_every == 0 or step == recipe.steps:
                log.steps.append(step)
                log.losses.append(running / count)
                running, count = 0.0, 0
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


def _loss(objective, logits, x, y, idx, teacher, teacher_cache, student_hook, teacher_hook):
    if logits.dtype in (torch.float16, torch.bfloat16):  # the loss in float32 under autocast
        logits = logits.float()
    kind = objective.kind
    if kind == "ce":
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    if kind == "rcd":
        return rcd_loss(logits, y, objective.alpha, objective.temperature)
    if kind == "ls":
        return label_smoothing_loss(logits, y, objective.alpha)
    if kind == "kd":
        if teacher_cache is not None:
            t = teacher_cache[idx].to(logits.device)
        else:
            with torch.no_grad():
                t = teacher(x)
        return kd_loss(logits, t, y, objective.alpha, objective.temperature)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    if kind == "feature":
        with torch.no_grad():
            teacher(x)
        target = teacher_hook.out
    else:  # feature_rcd: a constant target of the same shape
        target = torch.zeros_like(student_hook.out)
    return (1 - objective.alpha) * ce + objective.alpha * feature_map_loss(student_hook.out, target)
