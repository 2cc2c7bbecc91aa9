"""Evaluation: a model's logits, its accuracy and loss, and its comparison with the teacher. Forward passes run in
float32, or under the autocast its run's ``precision`` gives evaluation (:func:`kdlib.engine.device.amp`: fp16 for
``"fp16-scaler"`` on CUDA, as FFCV's val loop); the logits handed on, and so every metric, are float32."""
from __future__ import annotations


import torch
import torch.nn as nn

from . import device as dev
from ..metrics import Comparison


def outputs(model: nn.Module, x: torch.Tensor, device, flip: bool = False,
            precision: str | None = None) -> torch.Tensor:
    """``model``'s logits of the batch ``x`` on the CPU, in float32; ``flip``: the sum of those of the images and of
    their horizontal flips (FFCV's val loop: ``output = model(x); output += model(flip(x))``, the
    ``imagenet-ffcv-extras`` reading)."""
    x = dev.batch(x, device)
    with dev.amp(device, precision).evaluating():
        out = model(x)
        if flip:
            out = out + model(x.flip(-1))
    return out.float().cpu()


@torch.no_grad()
def predict(model: nn.Module, batches, device: str = "cpu", flip: bool = False,
            precision: str | None = None) -> torch.Tensor:
    """Float32 logits of ``model`` (eval mode) over ``(x, y)`` batches, concatenated on the CPU."""
    dev.place(model, device).eval()
    return torch.cat([outputs(model, x, device, flip, precision) for x, _ in batches])


@torch.no_grad()
def score(model: nn.Module, batches, device: str = "cpu", keep: bool = True, flip: bool = False,
          precision: str | None = None) -> tuple[torch.Tensor | None, dict[str, float]]:
    """One pass: ``model``'s logits over ``(x, y)`` batches (None unless ``keep``) and its accuracy and loss on
    them."""
    dev.place(model, device).eval()
    comparison, logits = Comparison(), []
    for x, y in batches:
        out = outputs(model, x, device, flip, precision)
        comparison.update(out, out, y)
        if keep:
            logits.append(out)
    result = comparison.result()
    return torch.cat(logits) if keep else None, {"accuracy": result["accuracy"], "loss": result["loss"]}


def teacher_logits_on(teacher: nn.Module, data, batch_size: int, device: str = "cpu",
                      precision: str | None = None) -> torch.Tensor:
    """The teacher's logits on every (un-augmented) training example, in index order: the KD cache."""
    return predict(teacher, data.eval_batches(batch_size), device, precision=precision)


@torch.no_grad()
def evaluate(model: nn.Module, batches, teacher_logits: torch.Tensor, device: str = "cpu",
             comparison: Comparison | None = None, flip: bool = False, precision: str | None = None) -> Comparison:
    """Stream ``model``'s test logits against the teacher's (same order) into a :class:`Comparison`."""
    dev.place(model, device).eval()
    comparison = comparison or Comparison()
    i = 0
    for x, y in batches:
        logits = outputs(model, x, device, flip, precision)
        comparison.update(teacher_logits[i:i + len(x)], logits, y)
        i += len(x)
    if i != len(teacher_logits):
        raise ValueError(f"teacher logits cover {len(teacher_logits)} examples but the test set has {i}")
    return comparison
