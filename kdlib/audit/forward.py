"""Models run over a data loader, their outputs turned into scored tokens: what :func:`kdlib.audit.logits` returns
and :func:`kdlib.audit.audit_models` streams.

A loader batch is ``(x, y)``, ``x`` alone (a tensor, or a one-item tuple such as a ``TensorDataset``'s), or a dict
in Hugging Face's style with ``input_ids`` and optionally ``labels`` and ``attention_mask``. A dict is passed to the
model as keyword arguments (less ``labels``) when its ``forward`` takes them, else as ``model(input_ids)``. A
model returns logits, as a tensor or as an output with ``.logits``. Models run in eval mode under ``no_grad`` and
their logits are handed on in float32 on the CPU.

Which label a logit is scored against:

- classifier (logits ``[B, K]``): ``y``;
- sequence model (logits ``[B, L, V]``): a causal language model when the batch has no labels, has a dict's
  ``labels`` (Hugging Face's convention: the labels are the inputs and the model shifts them) or labels equal to
  the inputs. Then position t is scored against the token at t + 1, and the last position has no target. Labels
  ``y`` that differ from ``x`` are taken as already aligned (``y[:, t]`` is position t's target, as in kdlib's
  own text data) and scored as they are. ``causal_lm=True`` or ``False`` forces the shift either way.
- Padding never counts: a position is dropped when its label is ``ignore_index`` (-100), or, for a sequence
  model, when it or its target is padding (``attention_mask`` 0). Sequences of any length, differing from batch
  to batch, are fine: every scored position becomes one row, tagged with the index of its sequence (or example)
  in the loader.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """One loader batch, scored: ``labels`` [T] and ``units`` [T] (the loader index of each token's sequence or
    example), ``size`` (examples in the batch), ``sequence`` (the models give [B, L, V] logits) and ``logits``,
    which yields each model's logits [T, K] in turn (computed as it is read, so one model's are held at a time)."""
    labels: torch.Tensor
    units: torch.Tensor
    size: int
    sequence: bool
    logits: Iterator[torch.Tensor]


def scored_batches(models: list, names: list[str], loader, device="cpu", causal_lm: bool | None = None,
                   ignore_index: int | None = -100) -> Iterator[Batch]:
    """One pass over ``loader``; the first model's output decides the scored positions and the others must give
    the same shape. ``names`` name the models in messages."""
    if causal_lm not in (None, True, False):
        raise ValueError(f"causal_lm={causal_lm!r} is not allowed: use None (decide from the batch), True or False")
    seen, width = 0, None
    with _evaluating(models, device):
        for batch in loader:
            inputs, y, mask, hf_labels = _split(batch)
            out = _forward(models[0], inputs, device, names[0])
            shape = out.shape
            if width is not None and shape[-1] != width:
                raise ValueError(f"{names[0]} gives K={shape[-1]} classes on this batch but K={width} on earlier "
                                 f"ones")
            width = shape[-1]
            rows, labels, units = _targets(shape, inputs, y, mask, hf_labels, causal_lm, ignore_index)
            first = _take(out, rows)
            del out  # only the scored rows are held while the other models run
            yield Batch(labels, units + seen, shape[0], len(shape) == 3,
                        _logits(first, shape, rows, models, names, inputs, device))
            seen += shape[0]


def _logits(first: torch.Tensor, shape, rows, models, names, inputs, device) -> Iterator[torch.Tensor]:
    yield first
    for model, name in zip(models[1:], names[1:]):
        out = _forward(model, inputs, device, name)
        if out.shape != shape:
            raise ValueError(f"{name} gives logits of shape {tuple(out.shape)} but {names[0]} gives "
                             f"{tuple(shape)} on the same batch: every model must give logits over the same K "
                             f"classes at the same positions")
        out = _take(out, rows)  # the full output is freed before the caller uses these rows
        yield out


@contextmanager
def _evaluating(models: list, device):
    """Modules moved to ``device`` and in eval mode for the pass, then back in the mode they were in."""
    modules = [m for m in models if isinstance(m, torch.nn.Module)]
    modes = [m.training for m in modules]
    for m in modules:
        m.to(device).eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def _split(batch):
    """(model inputs, labels or None, attention mask or None, whether the labels are a dict's) of a batch."""
    if isinstance(batch, Mapping):
        if "input_ids" not in batch:
            raise ValueError(f"a dict batch needs 'input_ids' (and optionally 'labels', 'attention_mask'); got keys "
                             f"{sorted(map(str, batch))}")
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return inputs, batch.get("labels"), batch.get("attention_mask"), True
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        return batch[0], batch[1] if len(batch) == 2 else None, None, False
    if isinstance(batch, torch.Tensor):
        return batch, None, None, False
    what = f"a {type(batch).__name__} of {len(batch)} items" if isinstance(batch, (tuple, list)) else \
        f"a {type(batch).__name__}"
    raise ValueError(f"a loader batch is {what}: allowed are (x, y), x alone, or a dict with 'input_ids' (and "
                     f"optionally 'labels', 'attention_mask')")


def _forward(model, inputs, device, name: str) -> torch.Tensor:
    with torch.no_grad():
        if isinstance(inputs, Mapping):
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            out = model(**inputs) if _takes(model, inputs) else model(inputs["input_ids"])
        else:
            out = model(inputs.to(device))
    out = getattr(out, "logits", out)
    if not isinstance(out, torch.Tensor) or out.dim() not in (2, 3):
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise ValueError(f"{name} returned {got}: a model must return logits [B, K] or [B, L, V] (a tensor, or an "
                         f"output with .logits)")
    return out


def _takes(model, inputs: Mapping) -> bool:
    """Whether ``model`` can be called with ``inputs`` as keyword arguments."""
    params = inspect.signature(model.forward if isinstance(model, torch.nn.Module) else model).parameters
    return any(p.kind is p.VAR_KEYWORD for p in params.values()) or set(inputs) <= set(params)


def _targets(shape, inputs, y, mask, hf_labels: bool, causal_lm, ignore_index):
    """(rows of the output reshaped to [B * L, K] that are scored, their labels, their batch row)."""
    x = inputs["input_ids"] if isinstance(inputs, Mapping) else inputs
    sequence = len(shape) == 3
    if not sequence and causal_lm:
        raise ValueError(f"causal_lm=True, but the model gives logits of shape {tuple(shape)}: a causal LM gives "
                         f"[B, L, V]")
    if y is None and not sequence:
        raise ValueError(f"the batch has no labels: a classifier (logits of shape {tuple(shape)}) needs (x, y) "
                         f"batches")
    x = torch.as_tensor(x).cpu()
    labels = x if y is None else torch.as_tensor(y).cpu()
    if labels.shape != shape[:-1]:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not fit logits of shape {tuple(shape)}: "
                         f"expected labels of shape {tuple(shape[:-1])}")
    B, L = shape[0], shape[1] if sequence else 1
    labels = labels.reshape(B, L)
    real = torch.ones(B, L, dtype=torch.bool)
    if mask is not None and sequence:  # a classifier's mask is its inputs' business
        mask = torch.as_tensor(mask).cpu()
        if mask.shape != (B, L):
            raise ValueError(f"attention_mask of shape {tuple(mask.shape)} does not fit logits of shape "
                             f"{tuple(shape)}: expected {(B, L)}")
        real = mask != 0
    shift = causal_lm if causal_lm is not None else sequence and (y is None or hf_labels or torch.equal(labels, x))
    if shift:  # position t predicts the token at t + 1: both must be real tokens
        labels, real = labels[:, 1:], real[:, :-1] & real[:, 1:]
    keep = real if ignore_index is None else real & (labels != ignore_index)
    b, t = keep.nonzero(as_tuple=True)
    return b * L + t, labels[keep], b


def _take(out: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return out.reshape(-1, out.shape[-1])[rows.to(out.device)].float().cpu()
