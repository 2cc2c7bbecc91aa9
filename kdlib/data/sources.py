"""In-memory data sources: the protocol every loader's ``TaskData.train`` / ``.test`` follows (see
:mod:`kdlib.data`): ``fixed``, ``batches(batch_size, steps, generator)`` and ``eval_batches(batch_size)``.

Both sources can live on a GPU (``to(device)``, with ``nbytes`` to decide whether they fit): their tensors
move once, the random draws (batch order, window starts) still come from the run's own CPU generator, so a run
keeps its seeded order, and the indices reach the device by asynchronous copies from pinned memory (no host
sync per step). On the CPU nothing moves and the bits are those of a CPU-only run.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ..engine.device import indices_on


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

    @property
    def nbytes(self) -> int:
        return self.x.nbytes + self.y.nbytes

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "ExampleData":
        """The same examples, augmentation and transform with the tensors on ``device``."""
        if self.x.device == torch.device(device):
            return self
        return ExampleData(self.x.to(device), self.y.to(device), self.augment, self.transform)

    #: :meth:`batches` keeps a ``position`` a checkpoint can save and resume from (:mod:`kdlib.engine.checkpoint`).
    resumable = True

    def batches(self, batch_size: int, steps: int, generator: torch.Generator, position: dict | None = None) -> Iterator:
        """``steps`` batches ``(indices, x, y)``, a fresh random order of every example per epoch (drawn, with the
        augmentation, from ``generator``). ``position``: a dict the stream keeps current after each batch (its step,
        this epoch's order and the next index); given one with a step, the stream goes on from there."""
        position = {} if position is None else position
        step, order, start = position.get("step", 0), position.get("order"), position.get("next", 0)
        while True:
            if order is None:
                order, start = indices_on(torch.randperm(len(self), generator=generator), self.x.device), 0
            order = order.to(self.x.device)
            for i in range(start, len(order), batch_size):
                if step == steps:
                    return
                idx = order[i:i + batch_size]
                if len(idx) == 1 and len(order) > 1:
                    continue  # a lone last example would break BatchNorm; it is drawn again next epoch
                x = self.x[idx]
                if self.augment is not None:
                    x = self.augment(x, generator)
                step += 1
                position.update(step=step, order=order, next=i + batch_size)
                yield idx, self._transform(x), self.y[idx]
            order = None

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

    @property
    def nbytes(self) -> int:
        return self.tokens.nbytes

    def to(self, device) -> "WindowData":
        """The same stream with its tokens on ``device``."""
        if self.tokens.device == torch.device(device):
            return self
        return WindowData(self.tokens.to(device), self.block_size)

    resumable = True  # a position is its step: each window is drawn afresh from the generator

    def batches(self, batch_size: int, steps: int, generator: torch.Generator, position: dict | None = None) -> Iterator:
        """``steps`` batches of ``batch_size`` random windows; ``position`` as in :meth:`ExampleData.batches`."""
        position = {} if position is None else position
        offsets = torch.arange(self.block_size + 1, device=self.tokens.device)
        for step in range(position.get("step", 0), steps):
            position["step"] = step + 1
            start = torch.randint(len(self.tokens) - self.block_size - 1, (batch_size,), generator=generator)
            window = self.tokens[indices_on(start, self.tokens.device)[:, None] + offsets]
            yield None, window[:, :-1], window[:, 1:]

    def eval_batches(self, batch_size: int) -> Iterator:
        """Non-overlapping windows from the start of the stream (every token predicted once; the paper's test
        accuracies are counts over 435 such windows of 256 of its 111,540 test characters)."""
        n = (len(self.tokens) - 1) // self.block_size
        x = self.tokens[:n * self.block_size].view(n, self.block_size)
        y = self.tokens[1:n * self.block_size + 1].view(n, self.block_size)
        for i in range(0, n, batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
