"""The audit's inputs: teacher, student and control outputs saved by any framework (.npy, .npz, .pt, .csv; logits
``[N, K]`` or ``[N, L, K]``), read and checked against each other and the labels, with errors that say which file
and what to do. Files are read as data only, never executing code from them (``np.load(allow_pickle=False)``,
``torch.load(weights_only=True)``)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..metrics import labels_for
from ..outputs import check_logits

SUFFIXES = (".npy", ".npz", ".pt", ".csv")


def load_outputs(path, what: str, role: str | None = None) -> torch.Tensor:
    """Logits ([N, K] or [N, L, K]) or labels ([N] or [N, L]) saved by any framework.

    .npy: one array. .npz / .pt: one array or tensor, or the entry named ``what`` when there are several (so one
    file may hold both 'logits' and 'labels'). .csv: one row per example, K columns of logits or one column of
    labels, an optional header row, no index column; CSV cannot hold sequence outputs. Errors name the file as
    ``"{role} file {path}"`` (role defaults to ``what``).
    """
    if what not in ("logits", "labels"):
        raise ValueError(f"what={what!r} is not allowed: use 'logits' or 'labels'")
    path = Path(path)
    file = f"{role or what} file {path}"
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{file}: unknown file type {path.suffix!r}; allowed are {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{file} does not exist")
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                x = _pick(dict(z), what, file)
        elif suffix == ".pt":
            x = torch.load(path, map_location="cpu", weights_only=True)
            x = _pick(x, what, file) if isinstance(x, Mapping) else x
        else:
            x = _read_csv(path, what, file)
        if not isinstance(x, (np.ndarray, torch.Tensor)):
            raise ValueError(f"it holds a {type(x).__name__}, not an array or tensor")
        return torch.as_tensor(x)
    except (ValueError, TypeError, OSError, RuntimeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{file}: cannot read it as {suffix}: {e}") from e


def _pick(entries: Mapping, what: str, file: str):
    if len(entries) == 1:
        return next(iter(entries.values()))
    if what in entries:
        return entries[what]
    raise ValueError(f"{file} holds several entries {sorted(map(str, entries))}: name one {what!r}")


def _read_csv(path: Path, what: str, file: str) -> np.ndarray:
    cells = pd.read_csv(path, header=None, dtype=str, keep_default_na=False).to_numpy()
    if len(cells) and _is_header(cells[0]):
        cells = cells[1:]
    try:
        x = cells.astype(float)
    except ValueError as e:
        raise ValueError(f"{file}: non-numeric value in the CSV ({e})") from None
    if what == "labels":
        if x.shape[1] != 1:
            raise ValueError(f"{file} has {x.shape[1]} columns: a labels CSV holds one column of class "
                             f"indices (sequence labels [N, L] must be saved as .npy, .npz or .pt)")
        x = x[:, 0]
    return x


def _is_header(row) -> bool:
    """A first row with a non-number, or pandas' default column names 0, 1, ..., K-1 (K > 1), is a header."""
    return not all(map(_is_number, row)) or (len(row) > 1 and list(row) == [str(i) for i in range(len(row))])


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _resolve(spec, what: str, role: str) -> tuple[str, torch.Tensor]:
    """(name used in messages and the report, tensor) for a path or an in-memory array."""
    if isinstance(spec, (str, os.PathLike)):
        return f"{role} file {spec}", load_outputs(spec, what, role)
    return f"{role} (in-memory)", torch.as_tensor(spec if isinstance(spec, torch.Tensor) else np.asarray(spec))


def _check(teacher, models, labels, ignore_index: int | None = -100) -> torch.Tensor:
    """Raise a ValueError naming the file for every mismatch; return the labels as class indices (``ignore_index``
    kept, for the metrics to drop)."""
    tname, t = teacher
    for name, x in [teacher, *models]:
        check_logits(x, name, finite=True)
    N, K = t.shape[0], t.shape[-1]
    for name, x in models:
        if x.shape[0] != N:
            raise ValueError(f"{name} has N={x.shape[0]} examples but {tname} has N={N}: every file must hold the "
                             f"same test examples in the same order{_header_hint(name, x.shape[0], N)}")
        if x.shape[-1] != K:
            raise ValueError(f"{name} has K={x.shape[-1]} classes but {tname} has K={K}")
        if x.shape != t.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)} but {tname} has shape {tuple(t.shape)}")
    lname, y = labels
    hint = (" (for sequence models save [N, L, K] logits with [N, L] labels as .npy, .npz or .pt: CSV holds "
            "[N, K] logits only)" if y.dim() == t.dim() else _header_hint(lname, len(y), N))
    return labels_for(y, t, ignore_index, lname, tname, hint)


def _header_hint(name: str, n: int, N: int) -> str:
    """A CSV with one row too many probably starts with a numeric header (pandas' default for a Series is '0')."""
    return (" (its first row looks like data: if it is a header such as pandas' default '0', name the column or "
            "drop the header)" if name.lower().endswith(".csv") and n == N + 1 else "")


def _control_groups(controls) -> dict[str, list]:
    """Controls as {name: [model per seed]} from a mapping, or a sequence whose items are one control each."""
    if isinstance(controls, (str, os.PathLike, np.ndarray, torch.Tensor)):
        controls = [controls]
    if isinstance(controls, Mapping):
        groups = {str(k): _as_list(v) for k, v in controls.items()}
    else:
        groups = {}
        for i, c in enumerate(controls):
            seeds = _as_list(c)
            name = Path(seeds[0]).stem if isinstance(seeds[0], (str, os.PathLike)) else f"control{i + 1}"
            groups[name if name not in groups else f"{name}_{i + 1}"] = seeds
    for name, seeds in groups.items():
        if name == "student" or not seeds:
            raise ValueError(f"control {name!r}: a control needs a name other than 'student' and at least one model")
    return groups


def _as_list(spec) -> list:
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]
