"""Model families, one readable file each; ``build(arch, num_classes, **kwargs)`` is the single entry point.

A family's module is imported when one of its architectures is first built (:data:`FAMILIES`), so a process that
trains only GPTs never imports torchvision (3 s)."""
from __future__ import annotations

import importlib

import torch.nn as nn

from .base import ARCHS

#: Architecture -> the family module that registers it.
FAMILIES = {"gpt": "gpt", "resnet18": "vision", "resnet50": "vision", "vgg19": "vision", "vgg19_bn": "vision",
            "vit": "vision", "vggish": "audio", "ast": "audio"}


def build(arch: str, num_classes: int, **kwargs) -> nn.Module:
    if arch not in FAMILIES:
        raise ValueError(f"unknown architecture {arch!r}: known are {sorted(FAMILIES)}")
    importlib.import_module(f"{__name__}.{FAMILIES[arch]}")
    return ARCHS[arch](num_classes, **kwargs)
