"""Model families, one readable file each; ``build(arch, num_classes, **kwargs)`` is the single entry point."""
from __future__ import annotations

import torch.nn as nn

from . import audio, gpt, vision  # noqa: F401  (importing registers them)
from .base import ARCHS


def build(arch: str, num_classes: int, **kwargs) -> nn.Module:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}: known are {sorted(ARCHS)}")
    return ARCHS[arch](num_classes, **kwargs)
