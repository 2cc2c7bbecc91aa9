"""An optimiser recipe, importable without torch (setups and the CLI's ``list`` stay fast)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step", "cyclic")
CYCLIC_START = 1e-4  # FFCV's cyclic schedule starts at 1e-4 x lr (its get_cyclic_lr)


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
    # Fields added later default to None and are left out of a run's spec (``fields``), so existing run ids hold:
    peak: float | None = None  # "cyclic": the fraction of ``steps`` where the learning rate peaks
    no_decay: str | None = None  # parameters whose name contains this get no weight decay ("bn": FFCV's rule)
    epoch_length: int | None = None  # optimiser steps per epoch when the schedule moves once per epoch

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: allowed are {list(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: allowed are {list(SCHEDULES)}")
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"steps={self.steps}, batch_size={self.batch_size} and lr={self.lr} must be positive")
        if self.schedule == "cyclic" and not 0 < (self.peak or 0) < 1:
            raise ValueError(f"peak={self.peak} is not allowed: a cyclic schedule peaks inside the run, 0 < peak < 1")

    def factor(self, step: int) -> float:
        """The learning-rate multiplier after ``step`` optimiser steps.

        ``cyclic`` is FFCV's: linear from ``CYCLIC_START`` at step 0 to 1 at ``peak``, then linear to 0 at the end,
        per optimiser step (FFCV interpolates per iteration between its per-epoch values, which are these). With
        ``epoch_length`` the schedule moves once per epoch, as a PyTorch scheduler stepped after each epoch (the
        paper's cosine annealing "with a T_max set at 100" over 100 epochs)."""
        if self.epoch_length:
            step -= step % self.epoch_length
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, self.steps) / self.steps))
        if self.schedule == "step":
            return self.gamma ** sum(step >= int(f * self.steps) for f in self.milestones)
        if self.schedule == "cyclic":
            x = min(step, self.steps) / self.steps
            if x <= self.peak:
                return CYCLIC_START + (1 - CYCLIC_START) * x / self.peak
            return (1 - x) / (1 - self.peak)
        return 1.0

    def fields(self) -> dict:
        """The recipe as a run spec holds it: every field but the unset (None) ones."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def build(self, named_params, fused: bool = False):
        """(optimizer, LambdaLR scheduler) over ``named_params`` ((name, tensor) pairs, as ``named_parameters()``
        gives); ``fused``: one kernel per step (CUDA). Names containing ``no_decay`` get no weight decay."""
        import torch  # here, not at the top: a recipe is read without torch (setups, `kdlib list`)
        named = list(named_params)
        exempt = [p for n, p in named if self.no_decay and self.no_decay in n]
        groups = [{"params": [p for n, p in named if not (self.no_decay and self.no_decay in n)]}]
        if exempt:
            groups.append({"params": exempt, "weight_decay": 0.0})
        options = {"fused": True} if fused else {}
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                  **options)
        else:
            cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
            opt = cls(groups, lr=self.lr, weight_decay=self.weight_decay, **options)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, self.factor)
