"""Evaluation in float32: a model's logits, its accuracy and loss, and its comparison with the teacher."""
from __future__ import annotations


import torch
import torch.nn as nn

from . import device as dev
from ..metrics import Comparison


def outputs(model: nn.Module, x: torch.Tensor, device, flip: bool = False) -> torch.Tensor:
    """``model``'s float32 logits of the batch ``x`` on the CPU; ``flip``: averaged with those of the horizontally
    flipped images (FFCV's test-time flip, the ``imagenet-ffcv-extras`` reading)."""
    x = dev.batch(x, device)
    with dev.float32_forward(device):
        out = model(x)
        if flip:
            out = (out + model(x.flip(-1))) / 2
    return out.cpu()


@torch.no_grad()
def predict(model: nn.Module, batches, device: str = "cpu", flip: bool = False) -> torch.Tensor:
    """Float32 logits of ``model`` (eval mode) over ``(x, y)`` batches, concatenated on the CPU."""
    dev.place(model, device).eval()
    return torch.cat([outputs(model, x, device, flip) for x, _ in batches])


@torch.no_grad()
def score(model: nn.Module, batches, device: str = "cpu", keep: bool = True,
          flip: bool = False) -> tuple[torch.Tensor | None, dict[str, float]]:
    """One float32 pass: ``model``'s logits over ``(x, y)`` batches (None unless ``keep``) and its accuracy and
    loss on them."""
    dev.place(model, device).eval()
    comparison, logits = Comparison(), []
    for x, y in batches:
        out = outputs(model, x, device, flip)
        comparison.update(out, out, y)
        if keep:
            logits.append(out)
    result = comparison.result()
    return torch.cat(logits) if keep else None, {"accuracy": result["accuracy"], "loss": result["loss"]}


def teacher_logits_on(teacher: nn.Module, data, batch_size: int, device: str = "cpu") -> torch.Tensor:
    """The teacher's logits on every (un-augmented) training example, in index order: the KD cache."""
    return predict(teacher, data.eval_batches(batch_size), device)


@torch.no_grad()
def evaluate(model: nn.Module, batches, teacher_logits: torch.Tensor, device: str = "cpu",
             comparison: Comparison | None = None, flip: bool = False) -> Comparison:
    """Stream ``model``'s float32 test logits against the teacher's (same order) into a :class:`Comparison`."""
    dev.place(model, device).eval()
    comparison = comparison or Comparison()
    i = 0
    for x, y in batches:
        logits = outputs(model, x, device, flip)
        comparison.update(teacher_logits[i:i + len(x)], logits, y)
        i += len(x)
    if i != len(teacher_logits):
        raise ValueError(f"teacher logits cover {len(teacher_logits)} examples but the test set has {i}")
    return comparison
