"""An optimiser recipe, importable without torch (setups and the CLI's ``list`` stay fast)."""
from __future__ import annotations

import math
from dataclasses import dataclass

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


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

    def factor(self, step: int) -> float:
        """The learning-rate multiplier after ``step`` optimiser steps."""
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, self.steps) / self.steps))
        if self.schedule == "step":
            return self.gamma ** sum(step >= int(f * self.steps) for f in self.milestones)
        return 1.0

    def build(self, params, fused: bool = False):
        """(optimizer, LambdaLR scheduler) over ``params``; ``fused``: one kernel per step (CUDA)."""
        import torch  # here, not at the top: a recipe is read without torch (setups, `kdlib list`)
        options = {"fused": True} if fused else {}
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                  **options)
        else:
            cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
            opt = cls(params, lr=self.lr, weight_decay=self.weight_decay, **options)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, self.factor)
