"""Placement and precision, in one place: which device a model and its batches live on, in which layout and
number format, how many CPU threads a process uses, and which GPU a worker process gets.

- A run's ``precision`` (the ``training-precision`` reading) says how CUDA computes (:func:`amp`): float32 (None,
  PyTorch's default), bf16 training steps, or FFCV's fp16 steps with a gradient scaler and fp16 evaluation. A live
  teacher's outputs are training targets and compute in the training step's precision (upcast to float32 for the
  loss); every other evaluation, cached teacher output and probe is a float32 forward pass
  (:func:`float32_forward`); the CPU stays float32 everywhere.
- Convolutional models go channels-last (NHWC, cuDNN's fast layout) on CUDA only: torch 2.14.1's CPU
  channels-last backward of a 1x1 stride-2 convolution (4 -> 8 channels, 64 px: ResNet18's downsample at
  width 4) corrupts the heap, although other shapes ran 1.3-1.4x faster on CPU.
- Worker processes (launchers) use one CPU thread each, or one GPU each.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

#: What a device raises when a model or pack does not fit (callers fall back to smaller work).
OutOfMemory = torch.cuda.OutOfMemoryError


def is_cuda(device) -> bool:
    return str(device).startswith("cuda")


_FULL_PRECISION = contextvars.ContextVar("kdlib_full_precision", default=False)


#: A run's ``precision``: None is float32 (PyTorch's default).
PRECISIONS = ("float32", "bf16", "fp16-scaler")


@dataclass(frozen=True)
class Amp:
    """How a run computes on a device type: its training steps' autocast dtype (None: no autocast), whether a
    GradScaler scales their loss (fp16's narrow range), and its evaluation forwards' autocast dtype (None: float32,
    autocast off, whatever surrounds them)."""
    device_type: str
    step: torch.dtype | None = None
    scaler: bool = False
    evaluation: torch.dtype | None = None

    def steps(self):
        """The context a training step's forward and loss run in."""
        return torch.autocast(self.device_type, dtype=self.step) if self.step else contextlib.nullcontext()

    def evaluating(self):
        """The context an evaluation forward runs in (test metrics, the teacher's cached logits)."""
        if self.evaluation:
            return torch.autocast(self.device_type, dtype=self.evaluation)
        return float32_forward(self.device_type)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.scaler else None


def amp(device, precision: str | None = None) -> Amp:
    """The :class:`Amp` of ``precision`` on ``device``: None and ``"float32"`` no autocast; ``"bf16"`` bf16 training
    steps and float32 evaluation; ``"fp16-scaler"`` (FFCV's ImageNet runs) fp16 steps with a GradScaler and fp16
    evaluation forwards. On the CPU, and inside :func:`full_precision`, float32 throughout."""
    if precision not in (None, *PRECISIONS):
        raise ValueError(f"precision={precision!r} is not allowed: use one of {list(PRECISIONS)}")
    device_type = torch.device(device).type
    if not is_cuda(device) or _FULL_PRECISION.get() or precision in (None, "float32"):
        return Amp(device_type)
    if precision == "bf16":
        return Amp(device_type, torch.bfloat16)
    return Amp(device_type, torch.float16, True, torch.float16)


def autocast(device, precision: str | None = None):
    """Training's autocast context for ``precision`` on ``device`` (:func:`amp`)."""
    return amp(device, precision).steps()


def float32_forward(device):
    """Autocast off, on every device: the float32 forward passes that metrics, cached teacher logits and probes
    read (rounded to bf16's 8 mantissa bits, tail logits would tie and the metrics would move in their third
    decimal)."""
    return torch.autocast(torch.device(device).type, enabled=False)


@contextlib.contextmanager
def full_precision():
    """Within this block CUDA trains in float32 throughout (no autocast, no TF32 convolutions): e.g. to check a pack
    against one-by-one runs to float rounding, which bf16's, fp16's and TF32's coarser rounding would blur."""
    token, tf32 = _FULL_PRECISION.set(True), torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        _FULL_PRECISION.reset(token)
        torch.backends.cudnn.allow_tf32 = tf32


def channels_last(device) -> bool:
    """Whether image models and batches use the channels-last layout on ``device``."""
    return is_cuda(device)


def place(model: nn.Module, device) -> nn.Module:
    """Move ``model`` to ``device``; on CUDA, convolutional models go channels-last."""
    model.to(device)
    if channels_last(device) and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model


def batch(x: torch.Tensor, device) -> torch.Tensor:
    """A batch tensor on ``device``; image batches (4-d) channels-last where :func:`place` makes models so."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and channels_last(device) else x


def indices_on(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` (a small CPU tensor of indices drawn by a run's generator) on ``device``: pinned and copied
    asynchronously on CUDA, so drawing a batch never waits for the GPU."""
    if torch.device(device).type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def _cuda_devices() -> list[int]:
    """The CUDA devices whose generators a seed reaches (none on a CPU-only machine)."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextlib.contextmanager
def seeded(seed: int):
    """Inside: the global generators (the CPU's and every CUDA device's, which ``torch.manual_seed`` reseeds)
    seeded with ``seed``; after: every one of them as it was."""
    with torch.random.fork_rng(devices=_cuda_devices()):
        torch.manual_seed(seed)
        yield


def rng_state() -> tuple:
    """The global generators' states: the CPU's and every CUDA device's."""
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in _cuda_devices()]


def set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for d, s in zip(_cuda_devices(), cuda):
        torch.cuda.set_rng_state(s, d)


def set_threads(threads: int | None) -> None:
    """Torch CPU threads of this process (None or 0: leave torch's default)."""
    if threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def single_thread_children():
    """Processes spawned inside start with one OpenMP thread (set before their torch loads)."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before


def gpu_slots(device, workers: int, queue_factory) -> tuple[int, object | None]:
    """For a pool of ``workers`` on ``device``: (workers actually used, a queue of GPU indices or None).

    On CUDA every worker gets one GPU of its own, so at most as many workers as GPUs run."""
    if not is_cuda(device):
        return workers, None
    n = torch.cuda.device_count()
    if n == 0:
        raise RuntimeError("--device cuda was asked for, but no GPU is visible")
    queue = queue_factory()
    for i in range(min(workers, n)):
        queue.put(i)
    return min(workers, n), queue


def take_gpu(queue) -> None:
    """In a fresh worker process: see only the next free GPU (before CUDA initialises)."""
    if queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(queue.get())


def pin_worker() -> None:
    """A worker process trains on one CPU thread: small models train as fast, and workers never compete."""
    torch.set_num_threads(1)


def synchronize(device) -> None:
    """Wait for queued device work (for timing); a no-op on CPU."""
    if is_cuda(device):
        torch.cuda.synchronize()


def resident(data, device, share: float = 0.25):
    """``data`` moved onto ``device`` when it can move (``to``/``nbytes``) and fits in ``share`` of the free
    device memory; otherwise as it is (read from host memory batch by batch). A no-op on CPU."""
    if not is_cuda(device) or not hasattr(data, "to") or not hasattr(data, "nbytes"):
        return data
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return data.to(device) if data.nbytes < share * free else data


COMPILE = ("auto", "on", "off")


def use_compile(option, device) -> bool:
    """Whether to ``torch.compile`` training steps: ``auto`` means on CUDA (where the GPU check measured it
    faster) and off on CPU (compilation costs more than small CPU runs gain); ``on`` / ``off`` force it."""
    option = {True: "on", False: "off"}.get(option, option)
    if option not in COMPILE:
        raise ValueError(f"compile={option!r} is not allowed: use one of {list(COMPILE)}")
    return option == "on" or (option == "auto" and is_cuda(device))


def fused_optimizer(device) -> bool:
    """Fused (single-kernel) optimiser steps on CUDA; the CPU keeps torch's default for bit-identical runs."""
    return is_cuda(device)


def release(device) -> None:
    """Return cached blocks to the device after a failed pack (so the one-by-one retry has the memory)."""
    if is_cuda(device):
        torch.cuda.empty_cache()


def name(device) -> str:
    """The device's model name ('NVIDIA H200', 'cpu'): what per-device measurements are remembered under."""
    return torch.cuda.get_device_name(torch.device(device)) if is_cuda(device) else "cpu"
