"""``--pack auto``: how many students of a teacher to train together on this device.

On CUDA a short probe trains packs of growing size K (1, 2, 4, ...) for a few steps each and measures
seconds per step; the pack is the one with the most models per hour, growing only while a larger pack raises
throughput by at least ``gain`` and fits in memory. The answer is remembered per setup and device in
``out/<setup>/<profile>/pack_auto.json``, so the probe runs once. On the CPU, packs measured no faster than one
model after another, so ``auto`` means 1 there.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from ..engine import device as dev
from ..conditions import CONDITIONS
from ..engine.fallback import fallback
from ..models import build
from .run import load_task
from .spec import RunSpec, packs, plan, teacher_spec
from ..setups import Setup
from ..store import setup_dir, write_json
from ..engine.together import train_together
from ..engine.objectives import Objective
from ..engine.train import init_model

MEMO = "pack_auto.json"


def choose_pack(measure: Callable[[int], float], limit: int, gain: float = 1.05) -> tuple[int, dict]:
    """The pack size with the most models per second, and every size tried with its seconds per step.

    ``measure(K)`` returns seconds per optimiser step of a pack of K; sizes double from 1 up to ``limit`` while
    each step up raises models per second by at least ``gain``. A size that raises stops the probe at the size
    before it, whatever the error (out of memory; cuBLAS or cuDNN failing to allocate surfaces as a plain
    RuntimeError; a compiler error), and its reason is recorded: the probe never stops a setup's run; a pack of 1
    is trained one by one, which needs no probe."""
    tried, best, best_rate = {}, 1, 0.0
    size = 1
    while size <= limit:
        try:
            seconds = measure(size)
        except Exception as e:  # noqa: BLE001  (as a pack falls back one by one, so does its probe)
            tried[size] = "out of memory" if isinstance(e, dev.OutOfMemory) else f"{type(e).__name__}: {str(e)[:200]}"
            dev.release("cuda")
            break
        tried[size] = seconds
        rate = size / seconds
        if best_rate and rate < gain * best_rate:
            break
        best, best_rate = size, rate
        size = min(2 * size, limit) if size < limit else limit + 1
    return best, tried


def students_per_teacher(setup: Setup) -> int:
    """The most students that can share a pack: those of one teacher and one student architecture."""
    packable = [c for c in setup.conditions if CONDITIONS[c].packable and not (setup.feature_layer
                                                                              and CONDITIONS[c].feature_objective)]
    per_seed = sum(len(setup.alphas) if CONDITIONS[c].weighted else 1 for c in packable)
    return max(1, per_seed * len(setup.student_seeds))


def measure_pack(setup: Setup, task, device, warmup: int = 3, steps: int = 10,
                 compile: bool = False) -> Callable[[int], float]:
    """``measure(K)`` for :func:`choose_pack`: seconds per step of K students of ``setup`` as its packs train them:
    the objectives of one teacher's packable students in plan order, cycled (at the paper's grid 3 of every 7 read
    the teacher's logits), and the teacher's logits as training reads them: a cache where the training examples
    are fixed (its students read the teacher's cached logits), else a live stand-in of the teacher's architecture.
    The same mix at every K, so a larger pack is not cheaper by having fewer KD members."""
    student = setup.students()[0][1]
    make = lambda: build(student.arch, task.num_classes, **student.kwargs)
    specs = [s for s in plan(setup) if s.role == "student" and s.teacher_seed == setup.teacher_seeds[0]]
    packed = [job for job in packs(specs, len(specs)) if not isinstance(job, RunSpec)]  # the students that pack
    mix = [s.objective for job in packed for s in job] or [Objective()]
    teacher = cache = None
    if any(o.needs_teacher for o in mix):
        teacher = init_model(lambda: build(setup.teacher.arch, task.num_classes,
                                           **{k: v for k, v in setup.teacher.kwargs.items() if k != "weights"}), 0)
        if getattr(task.train, "fixed", False):  # what a teacher run leaves its students: logits of every example
            cache, teacher = torch.randn(len(task.train), task.num_classes, generator=torch.Generator().manual_seed(0)), None

    def measure(size: int) -> float:
        models = [init_model(make, 0) for _ in range(size)]
        objectives = [mix[k % len(mix)] for k in range(size)]
        seeds = list(range(size))
        recipe = replace(setup.student_recipe, steps=warmup)
        train_together(models, task.train, objectives, recipe, seeds, teacher=teacher, teacher_cache=cache,
                       device=device, log_every=warmup, compile=compile, precision=setup.precision)
        dev.synchronize(device)
        start = time.perf_counter()
        train_together(models, task.train, objectives, replace(recipe, steps=steps), seeds, teacher=teacher,
                       teacher_cache=cache, device=device, log_every=steps, compile=compile,
                       precision=setup.precision)
        dev.synchronize(device)
        seconds = (time.perf_counter() - start) / steps
        del models
        dev.release(device)
        return seconds
    return measure


def pack_size(setup: Setup, out, data_dir, device, pack, measure: Callable[[int], float] | None = None,
              compile: bool = False, fallbacks: list[str] | None = None) -> int:
    """The pack size to train ``setup`` with: ``pack`` itself when it is a number, else (``"auto"``) 1 on CPU
    and on CUDA the remembered or freshly probed best size (``measure`` replaces the probe in tests). The probe
    times packs as training will run them (``compile``: compiled), and remembers each way apart. A probe that
    failed at some size says so (a fallback line, again when remembered), appended to ``fallbacks``."""
    if pack != "auto":
        size = int(pack)
        if size < 1:
            raise ValueError(f"pack={pack!r} is not allowed: use a positive integer or 'auto'")
        return size
    if not dev.is_cuda(device) and measure is None:
        return 1
    memo_path = setup_dir(out, setup) / MEMO
    key = dev.name(device) + (" compiled" if compile else "")
    memo = json.loads(memo_path.read_text()) if memo_path.exists() else {}
    if key not in memo:
        if measure is None:
            measure = measure_pack(setup, load_task(teacher_spec(setup, setup.teacher_seeds[0]), data_dir), device,
                                   compile=compile)
        best, tried = choose_pack(measure, students_per_teacher(setup))
        failed = [k for k, v in tried.items() if isinstance(v, str)]
        memo[key] = {"pack": best, "seconds_per_step": {str(k): v for k, v in tried.items()},
                     "fallback": f"a pack of {failed[0]} failed ({tried[failed[0]]}); packs of {best}" if failed
                     else None, "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__}
        write_json(memo_path, memo)
    if memo[key].get("fallback"):
        fallback("probe", memo[key]["fallback"], fallbacks)
    return int(memo[key]["pack"])
