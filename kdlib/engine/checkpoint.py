"""Runs that survive preemption: a training loop's whole state, saved at a time interval and when SIGTERM comes.

A paper-profile ImageNet student trains for hours, and a cluster that preempts it (slurm sends SIGTERM, then
requeues the job) would otherwise start it again at step 0. A :class:`Checkpoint` holds everything the loop needs to
go on as if it had never stopped: the step, the weights and buffers, the optimiser's, scheduler's and gradient
scaler's states, every random state (the data-order generators, the global generators that dropout and
augmentation draw from), the data streams' positions, the loss meter and the log so far. Resumed, a run gives the
same bits as an uninterrupted one (``tests/test_checkpoint.py``).

It is written atomically (a temporary file, then ``os.replace``) beside the run's claim, read without executing code
(``weights_only=True``), and removed once the run's result is written.
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

#: Seconds between checkpoints by default (``--checkpoint-every`` takes minutes; 0 turns them off).
EVERY = 600.0

FILE = "checkpoint.pt"

_stop = threading.Event()  # set by SIGTERM: checkpoint at the end of this step, then exit


class Preempted(SystemExit):
    """The process was asked to stop (SIGTERM) and its run's checkpoint is written: it exits with 143 (as SIGTERM
    would), its claims released and no result written; run again, the run resumes. A SystemExit, so that nothing
    that catches a training failure (a pack's fallback to one by one) catches it."""

    def __init__(self, path: Path, step: int):
        super().__init__(143)
        self.path, self.step = path, step

    def __str__(self) -> str:
        return f"stopped by SIGTERM after step {self.step}; checkpoint {self.path}"


@contextlib.contextmanager
def stop_on_sigterm():
    """Within: SIGTERM asks the training loop to checkpoint at the end of its step and stop (:class:`Preempted`)
    rather than killing the process mid-step. Only the main thread can hold a signal handler; elsewhere SIGTERM
    keeps its own (a launcher's worker pool handles it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: _stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Checkpoint:
    """The checkpoint file of one run or pack: ``every`` seconds between saves (None or 0: only on SIGTERM)."""

    def __init__(self, path: Path, every: float | None = EVERY):
        self.path, self.every = Path(path), every
        self.last = time.monotonic()

    def load(self) -> dict | None:
        """The saved state (tensors on the CPU), or None when there is none."""
        import torch  # here, not at the top: the command line reads EVERY before torch loads
        if not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def due(self) -> bool:
        """Whether the loop should save now: its interval has passed, or SIGTERM asked it to stop."""
        return _stop.is_set() or bool(self.every) and time.monotonic() - self.last >= self.every

    def save(self, state: dict) -> None:
        """Write ``state`` atomically; after a SIGTERM, then stop (:class:`Preempted`)."""
        import torch
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.last = time.monotonic()
        if _stop.is_set():
            _stop.clear()
            raise Preempted(self.path, int(state["step"]))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def cpu(tree):
    """``tree`` (nested dicts, lists, tuples of tensors and plain values) with every tensor copied to the CPU."""
    import torch
    if torch.is_tensor(tree):
        return tree.detach().cpu().clone()
    if isinstance(tree, dict):
        return {k: cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(cpu(v) for v in tree)
    return tree
