"""The architecture registry that model families add themselves to."""
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
