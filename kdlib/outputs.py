"""The one check of model outputs and labels, shared by the losses, the metrics and the audit.

Logits are ``[N, K]`` (classifiers) or ``[B, L, K]`` (sequence models, one prediction per token); labels are
class indices of the logits' shape without its last axis. Messages name the offending input (``name``,
``labels_name``: e.g. "teacher file t.npy") and the allowed values.
"""
from __future__ import annotations

import torch


def check_logits(logits: torch.Tensor, name: str = "logits", finite: bool = False) -> None:
    """``logits`` are real numbers of shape [N, K] or [N, L, K]; with ``finite``, none is NaN or inf."""
    if logits.dim() not in (2, 3) or logits.dtype == torch.bool or logits.is_complex():
        raise ValueError(f"{name}: logits must be numbers of shape [N, K] or [N, L, K] (L tokens per sequence), "
                         f"got {logits.dtype} of shape {tuple(logits.shape)}")
    if finite:
        bad = ~torch.isfinite(logits.double())
        if bad.any():
            first = int(bad.reshape(len(logits), -1).any(1).nonzero()[0])
            kind = "NaN" if torch.isnan(logits.double()).any() else "inf"
            raise ValueError(f"{name}: logits contain {kind} (first at example {first}); every logit must be "
                             f"finite: metrics are defined for finite logits only")


def check_labels(labels: torch.Tensor, logits: torch.Tensor, labels_name: str = "labels",
                 name: str = "logits", hint: str = "", check_range: bool = True) -> torch.Tensor:
    """``labels`` fit ``logits``: shape ``logits.shape[:-1]``, integer class indices in [0, K-1]; returns them
    as int64. ``hint`` is appended to the shape message (the audit explains file formats there). The range check
    reads the labels on the host; the trainer, whose labels come from a checked dataset, skips it
    (``check_range=False``) so a GPU step never waits for the host."""
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"{labels_name} has shape {tuple(labels.shape)} but {name} has logits of shape "
                         f"{tuple(logits.shape)}: expected labels of shape {tuple(logits.shape[:-1])}{hint}")
    if labels.is_floating_point():
        if not (torch.isfinite(labels).all() and (labels == labels.round()).all()):
            raise ValueError(f"{labels_name}: labels must be integer class indices, found non-integer values")
    elif labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{labels_name}: labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.long()
    K = logits.shape[-1]
    if check_range and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= K):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        where = tuple(int(i) for i in (labels == bad).nonzero()[0])
        raise ValueError(f"{labels_name}: label {bad} (at index {where[0] if len(where) == 1 else where}) is out "
                         f"of range [0, {K - 1}] for the K={K} classes of {name}")
    return labels


def as_tokens(logits: torch.Tensor, labels: torch.Tensor | None = None, name: str = "logits",
              labels_name: str = "labels", finite: bool = False, check_range: bool = True):
    """Checked ``(logits [T, K], labels [T] or None)``: sequence outputs flattened to one row per token."""
    check_logits(logits, name, finite)
    if labels is not None:
        labels = check_labels(labels, logits, labels_name, name, check_range=check_range).reshape(-1)
    return logits.reshape(-1, logits.shape[-1]), labels
