"""Where and how a command works: the results folder, the data folder, the device, torch.compile and CPU threads.

A command resolves its :class:`Workspace` once where it starts (the CLI, ``kdlib study``, a notebook's cell) and
passes it down; launchers hand it to their workers as it is, so every process trains against the same folders.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.base import data_dir as resolve_data_dir
from ..engine import device as dev


@dataclass(frozen=True)
class Workspace:
    """``out``: the results folder; ``data_dir``: the data folder; ``device``: "cpu" or "cuda"; ``compile``:
    "auto", "on" or "off" (:func:`kdlib.engine.device.use_compile`); ``threads``: torch CPU threads of the
    process that trains (None: torch's default)."""
    out: Path
    data_dir: Path
    device: str = "cpu"
    compile: str = "auto"
    threads: int | None = 1

    @classmethod
    def resolve(cls, out="results", data_dir=None, device: str = "cpu", compile: str = "auto",
                threads: int | None = 1) -> Workspace:
        """A workspace from loose values: the data folder resolved (``$KDLIB_DATA_DIR``, else ``data/``), a bad
        ``compile`` refused here, before any training."""
        dev.use_compile(compile, device)
        return cls(Path(out), resolve_data_dir(data_dir), device, compile, threads)

    @classmethod
    def of(cls, out, data_dir=None, device: str = "cpu", compile: str = "auto") -> Workspace:
        """``out`` itself when it is a workspace, else one resolved from ``out`` and the other values."""
        return out if isinstance(out, Workspace) else cls.resolve(out, data_dir, device, compile)

    @property
    def compiled(self) -> bool:
        """Whether training steps run under torch.compile on this device."""
        return dev.use_compile(self.compile, self.device)
