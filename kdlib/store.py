"""The results store: run folders, atomic writes, result records, claims, tensors and tables.

Layout under ``out``::

    out/runs/<run_id>/spec.json      what is trained (the hashed fields)
    out/runs/<run_id>/result.json    written last, atomically: its presence means the run is complete
    out/runs/<run_id>/model.pt       final weights (teachers: also init.pt = M0, test_logits.pt, train_logits.pt;
                                     students matching feature maps of another width: also projection.pt)
    out/runs/<run_id>/claim          held (O_EXCL) by the process training the run
    out/<setup>/<profile>/runs.csv   one row per student run of the setup (+ teachers.csv, failed.csv)

Every write goes to a temp file beside its target, is fsynced and renamed into place, so a reader never sees a
half-written file and a killed writer leaves nothing behind. Files get the permissions the user's umask gives
(0644 under umask 022), so colleagues on a shared cluster can read them.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

RESULT = "result.json"


def _file_mode() -> int:
    """Permissions of a new file under this process's umask (read once: setting it is process-wide)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default))


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_csv(df, path: Path, index: bool = False) -> None:
    """Write a pandas frame as CSV atomically."""
    write_text(path, df.to_csv(index=index))


def save_tensor(path: Path, obj) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def save_npy(path: Path, array) -> None:
    atomic_write(path, lambda f: np.save(f, array))


# ----------------------------------------------------------------------------- run folders and results

def run_dir(out, spec_or_id) -> Path:
    """``out/runs/<run_id>`` of a spec (anything with ``run_id``) or a run id."""
    run_id = spec_or_id if isinstance(spec_or_id, str) else spec_or_id.run_id
    return Path(out) / "runs" / run_id


@dataclass
class RunResult:
    """A run's completion record: what ``run_one`` returns, ``result.json`` holds (under the same keys) and the
    collected tables, the plan and the reports read.

    Every run: ``status`` ("ok" or "failed", then ``reason``), its ``spec`` (as a dict), and where it ran. A trained
    run: its ``train_curve`` (``{"step": [...], "loss": [...]}``), ``train_seconds``, ``notes`` on how it trained and
    its ``probes``. A teacher: its test and train accuracy and loss (train: measured after training on the clean
    training examples), and ``train_loss_augmented`` / ``train_accuracy_augmented``, the means over its last epoch
    of training batches as the training loop saw them (train mode, augmented where the setup augments; absent in
    results written before they existed). A student: its ``metrics`` against the teacher,
    its ``teacher``'s accuracies and losses, the ``pack`` it trained in or why its pack fell back
    (``pack_fallback``). ``fallbacks``: every slower road its training took (:mod:`kdlib.engine.fallback`). Keys written by another kdlib version are kept in ``extra`` and written back.

    Read-only mapping access (``result["metrics"]``, ``result.get("pack")``) reads the stored keys, for code
    written against the plain records."""
    run_id: str
    status: str = "ok"
    spec: dict = field(default_factory=dict)
    device: str | None = None
    precision: str | None = None  # how it computed (kdlib.engine.device.PRECISIONS); absent before 0.10
    torch: str | None = None
    host: str | None = None
    pid: int | None = None
    reason: str | None = None
    metrics: dict | None = None
    train_curve: dict | None = None
    train_seconds: float | None = None
    notes: list[str] | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    train_accuracy: float | None = None
    train_loss: float | None = None
    train_loss_augmented: float | None = None
    train_accuracy_augmented: float | None = None
    probes: dict | None = None
    pack_fallback: str | None = None
    pack: list[str] | None = None
    fallbacks: list[str] | None = None  # kdlib.engine.fallback lines: slower roads taken (compile, pack, probe)
    provenance: dict | None = None  # what made it (kdlib.provenance): versions, commit, device, data checksums
    teacher: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def final_train_loss(self) -> float:
        return self.train_curve["loss"][-1]

    def to_json(self) -> dict:
        """The record as stored: every set field under its own name, then ``extra``'s keys."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in record.items() if v is not None}, **self.extra}

    @classmethod
    def from_json(cls, record: dict) -> RunResult:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in record.items() if k in known},
                   extra={k: v for k, v in record.items() if k not in known})

    def __getitem__(self, key: str):
        record = self.to_json()
        if key not in record:
            raise KeyError(key)
        return record[key]

    def get(self, key: str, default=None):
        return self.to_json().get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.to_json()


def read_result(out, spec) -> RunResult | None:
    """The stored result of ``spec``, or None if absent or unreadable (then the run is done again)."""
    try:
        record = json.loads((run_dir(out, spec) / RESULT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("run_id") != spec.run_id or trained_as_bf16(record):
        return None
    return RunResult.from_json(record)


def trained_as_bf16(record: dict) -> bool:
    """A run trained on CUDA before results recorded their precision, under a spec without one: then the default
    was bf16 autocast, which such a spec no longer means (it means float32), so the run is trained again."""
    spec = record.get("spec") or {}
    return str(record.get("device", "")).startswith("cuda") and spec.get("precision") is None \
        and "precision" not in record


def write_result(out, spec, result: RunResult) -> RunResult:
    """Store ``result`` as the run's completion record (written last: its presence means the run is done)."""
    write_json(run_dir(out, spec) / RESULT, result.to_json())
    return result


def log_attempt(out, spec) -> None:
    """Append who starts training a run, and when, to its ``attempts.log`` (provenance)."""
    with open(run_dir(out, spec) / "attempts.log", "a") as log:
        log.write(json.dumps({"host": platform.node(), "pid": os.getpid(), "time": time.time()}) + "\n")


@contextlib.contextmanager
def claim(directory: Path):
    """Hold an exclusive claim on a run folder while training it (yields False if another live process has it).

    The claim is a file created with O_EXCL holding host and pid; a claim left by a dead process on this host
    is reclaimed. Claims from other hosts are honoured until they are older than $KDLIB_CLAIM_TIMEOUT seconds
    (default one day), since their liveness cannot be checked from here."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "claim"
    me = {"host": platform.node(), "pid": os.getpid(), "time": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if claim_is_stale(path):
                path.unlink(missing_ok=True)
                continue
            yield False
            return
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        try:
            yield True
        finally:
            path.unlink(missing_ok=True)
        return
    yield False


def claim_is_stale(path: Path) -> bool:
    """Whether the claim file ``path`` was left by a process that is gone (or is unreadably old)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):  # being written right now, or a truncated file from a crash
        try:
            return time.time() - path.stat().st_mtime > 60
        except OSError:
            return True
    if holder.get("host") == platform.node():
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return time.time() - float(holder.get("time", 0)) > float(os.environ.get("KDLIB_CLAIM_TIMEOUT", 86400))


def is_claimed(out, spec) -> bool:
    return (run_dir(out, spec) / "claim").exists()


# ----------------------------------------------------------------------------- per-setup folders and tables

def setup_dir(out, setup) -> Path:
    """``out/<setup label>/<profile>``: a setup's collected tables and executed notebooks (the label adds the
    readings chosen off their defaults, so each reading's runs are collected apart)."""
    return Path(out) / setup.label / setup.profile


def figures_dir(figures, setup) -> Path:
    """``figures/<setup label>/<profile>``: a setup's tables and figures for papers."""
    return Path(figures) / setup.label / setup.profile


def write_table(df: pd.DataFrame, stem: Path) -> Path:
    """Write ``df`` atomically as Parquet if pyarrow is installed, else CSV; returns the path."""
    try:
        import pyarrow  # noqa: F401
        path = Path(stem).with_suffix(".parquet")
        atomic_write(path, lambda f: df.to_parquet(f, index=False))
    except ImportError:
        path = Path(stem).with_suffix(".csv")
        atomic_write(path, lambda f: f.write(df.to_csv(index=False).encode()))
    return path


def read_table(stem: Path) -> pd.DataFrame:
    """Read a table written by :func:`write_table` (Parquet or CSV)."""
    stem = Path(stem)
    for suffix, reader in ((".parquet", pd.read_parquet), (".csv", pd.read_csv)):
        if stem.with_suffix(suffix).exists():
            return reader(stem.with_suffix(suffix))
    raise FileNotFoundError(f"no table {stem}.parquet or {stem}.csv: run `python -m kdlib collect` first")
