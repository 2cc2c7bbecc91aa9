"""What made a result: kdlib's version and commit, Python, torch, CUDA, the device, the data files' checksums and
the readings, recorded in every ``result.json`` (``provenance``), summarised per collected setup
(``provenance.json`` beside its tables), shown by ``kdlib report`` and the scorecard; ``kdlib collect`` warns when
one table mixes runs of several kdlib versions or commits.
"""
from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from collections import Counter
from pathlib import Path

FILE = "provenance.json"


@functools.lru_cache(maxsize=1)
def commit() -> str | None:
    """The git commit of kdlib's checkout (``-dirty`` with uncommitted changes), or None for an installed kdlib."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if dirty else "")) or None


@functools.lru_cache(maxsize=8)
def environment(device: str) -> dict:
    """kdlib, Python, torch and CUDA versions and the device's name, as this process runs."""
    import torch
    from .. import __version__
    from ..engine import device as dev
    return {"kdlib": __version__, "commit": commit(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "device": dev.name(device)}


_SHA: dict = {}


def _sha256(path: Path) -> str:
    """A file's SHA-256 (remembered per path, size and modification time), or a folder's: of its files' relative
    paths and sizes, listed afresh each time (hashing every image of a large folder would take longer than training
    from it)."""
    digest = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(path)}\t{f.stat().st_size}\n".encode())
        return "listing:" + digest.hexdigest()
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA[key] = digest.hexdigest()
    return _SHA[key]


def data_checksums(dataset: str, root, dataset_kwargs: dict | None = None) -> dict[str, str]:
    """Checksums of what a dataset reads from the data folder ``root``: its files (a folder: its listing's), an
    image folder's tree; a dataset of your own code is named, with no file to hash."""
    from ..data.base import SOURCES
    source, root = SOURCES[dataset], Path(root)
    paths = [root / f for f in source.files]
    if dataset == "imagefolder" and dataset_kwargs and "path" in dataset_kwargs:
        given = Path(dataset_kwargs["path"])
        paths.append(given if given.is_absolute() else root / given)
    found = {str(p.relative_to(root) if p.is_relative_to(root) else p): _sha256(p) for p in paths if p.exists()}
    return found or {dataset: "no data files (built in, or your own code)"}


def record(spec, device: str, root) -> dict:
    """The provenance of a run of ``spec`` trained here, on data from ``root``."""
    return {**environment(device), "data": data_checksums(spec.dataset, root, spec.dataset_kwargs),
            "readings": spec.tags.get("readings", {})}


def summarise(records: list[dict]) -> dict:
    """What the runs of one table were made with: for each field, its values and how many runs had each."""
    counted = {}
    for name in ("kdlib", "commit", "python", "torch", "cuda", "device"):
        counted[name] = dict(Counter(str(r.get(name)) for r in records))
    counted["data"] = dict(Counter(json.dumps(r.get("data"), sort_keys=True) for r in records))
    counted["runs"] = len(records)
    return counted


def mixed(summary: dict) -> str | None:
    """A warning when the runs come from several kdlib versions or commits, else None."""
    made = {k: v for k, v in summary.items() if k in ("kdlib", "commit") and len(v) > 1}
    if not made:
        return None
    said = "; ".join(f"{k}: " + ", ".join(f"{value} ({n} runs)" for value, n in v.items()) for k, v in made.items())
    return f"this table mixes runs of several kdlib versions ({said}): their results may not be comparable"


def describe(summary: dict) -> str:
    """One line: what made the runs (each field's values, the most common first)."""
    def values(name):
        items = sorted(summary.get(name, {}).items(), key=lambda kv: -kv[1])
        return "/".join(v for v, _ in items) or "unknown"
    unknown = summary.get("kdlib", {}).get("None", 0)
    older = f"; {unknown} runs from before results recorded it" if unknown else ""
    return (f"made by kdlib {values('kdlib')} (commit {values('commit')}), Python {values('python')}, torch "
            f"{values('torch')} (built for CUDA {values('cuda')}), on {values('device')}; "
            f"{len(summary.get('data', {}))} set(s) of data checksums{older}")
