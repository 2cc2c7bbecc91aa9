"""Model families, one readable file each; ``build(arch, num_classes, **kwargs)`` is the single entry point."""
from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

ARCHS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Decorator: register ``fn(num_classes, **kwargs) -> nn.Module`` under ``name``."""
    def wrap(fn):
        ARCHS[name] = fn
        return fn
    return wrap


def build(arch: str, num_classes: int, **kwargs) -> nn.Module:
    _import_families()
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}: known are {sorted(ARCHS)}")
    return ARCHS[arch](num_classes, **kwargs)


def _import_families():
    from . import gpt, vision, audio  # noqa: F401  (importing registers them)
