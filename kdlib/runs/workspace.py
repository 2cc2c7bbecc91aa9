"""Where and how a command works: the results folder, the data folder, the device, torch.compile and CPU threads.

A command resolves its :class:`Workspace` once where it starts (the CLI, ``kdlib study``, a notebook's cell) and
passes it down; launchers hand it to their workers as it is, so every process trains against the same folders.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.base import data_dir as resolve_data_dir
from ..engine import device as dev
from .. import tracking
from ..engine.checkpoint import EVERY


@dataclass(frozen=True)
class Workspace:
    """``out``: the results folder; ``data_dir``: the data folder; ``device``: "cpu" or "cuda"; ``compile``:
    "auto", "on" or "off" (:func:`kdlib.engine.device.use_compile`); ``threads``: torch CPU threads of the
    process that trains (None: torch's default); ``checkpoint_every``: seconds between a training run's checkpoints
    (0: only when SIGTERM asks; :mod:`kdlib.engine.checkpoint`); ``log_to``: where training is mirrored
    (:mod:`kdlib.tracking`); ``fallbacks``: fallback lines that hold for every
    run trained here (a failed pack-size probe's: :mod:`kdlib.engine.fallback`), which their results record."""
    out: Path
    data_dir: Path
    device: str = "cpu"
    compile: str = "auto"
    threads: int | None = 1
    checkpoint_every: float = EVERY
    fallbacks: tuple[str, ...] = ()
    log_to: str | None = None  # mirror training to "tensorboard" or "mlflow" (kdlib.tracking); None: off

    @classmethod
    def resolve(cls, out="results", data_dir=None, device: str = "cpu", compile: str = "auto",
                threads: int | None = 1, checkpoint_every: float = EVERY, log_to: str | None = None) -> Workspace:
        """A workspace from loose values: the data folder resolved (``$KDLIB_DATA_DIR``, else ``data/``), a bad
        ``compile``, ``checkpoint_every`` or ``log_to`` refused here, before any training."""
        dev.use_compile(compile, device)
        tracking.check(log_to)
        if not checkpoint_every >= 0:
            raise ValueError(f"checkpoint_every={checkpoint_every!r} is not allowed: use seconds >= 0 (0: only on "
                             f"SIGTERM)")
        return cls(Path(out), resolve_data_dir(data_dir), device, compile, threads, float(checkpoint_every),
                   log_to=log_to)

    @classmethod
    def of(cls, out, data_dir=None, device: str = "cpu", compile: str = "auto", threads: int | None = 1) -> Workspace:
        """``out`` itself when it is a workspace (then the other values must be left at their defaults: a
        workspace already says them), else one resolved from ``out`` and the other values."""
        if not isinstance(out, Workspace):
            return cls.resolve(out, data_dir, device, compile, threads)
        loose = {"data_dir": (data_dir, None), "device": (device, "cpu"), "compile": (compile, "auto"),
                 "threads": (threads, 1)}
        given = [f"{k}={v!r}" for k, (v, default) in loose.items() if v != default]
        if given:
            raise ValueError(f"{', '.join(given)} given beside a Workspace: set them in the Workspace instead")
        return out

    @property
    def compiled(self) -> bool:
        """Whether training steps run under torch.compile on this device."""
        return dev.use_compile(self.compile, self.device)
