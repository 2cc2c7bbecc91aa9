"""Where a step goes: one Nano-GPT student step (SIDDO, alone) and one packed step (the students of one student
seed, 7 at the paper's grid, with the live teacher) of tinyshakespeare-nanogpt under ``torch.profiler``, as the
study trains them (``kdlib.engine.train.train`` and ``train_together``, compiled on CUDA by default). Prints, for
each, its wall time and device time per step, kernels per step, the split of device time between matrix products,
attention and the rest, and the top kernels; and first the device's measured bf16, fp16, TF32 and float32 matmul
rates. Writes it all to ``<out>/gpu_profile.json`` after each section.

Per step: the difference of a 2N-step and an N-step call, over N (``--steps``), so what a call does once (moving
the data, building the optimiser and its state) cancels. On CUDA the kernels are the device's (copies included),
timed on the device; on the CPU every profiled op counts, by its self CPU time (``--device cpu --profile smoke``
is the dry run CI runs). The student step is required; the packed step is optional: with ``--budget SECONDS`` it
runs only while the student step's time is left. Under two minutes on one H100 at the paper profile (not yet
run on one).
"""
from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from benchmarks import gpu_check
from kdlib import setups
from kdlib.engine import device as dev
from kdlib.engine.fallback import kinds
from kdlib.engine.objectives import Objective

SETUP = "tinyshakespeare-nanogpt"
ATTENTION = re.compile(r"attention|sdpa|flash|fmha|efficient", re.IGNORECASE)
MATMUL = re.compile(r"gemm|matmul|nvjet|cutlass|cublas|(?<![a-z])(?:add|b|baddb)?mm(?![a-z])", re.IGNORECASE)


def kind_of(name: str) -> str:
    """A kernel's or op's kind by its name: "attention", "matmul" or "other" (attention first: its kernels may be
    CUTLASS's)."""
    return "attention" if ATTENTION.search(name) else "matmul" if MATMUL.search(name) else "other"


def kernel_table(prof, cuda: bool) -> dict[str, tuple[int, float]]:
    """Calls and microseconds per name of what ran: on CUDA the device's kernels and copies, timed on the device; on
    the CPU every profiled op, by its self CPU time."""
    table = {}
    for event in prof.events():
        if cuda and event.device_type != DeviceType.CUDA:
            continue
        calls, micros = table.get(event.name, (0, 0.0))
        table[event.name] = (calls + 1, micros + (event.self_device_time_total if cuda else event.self_cpu_time_total))
    return table


def step_profile(run, warmup: int, steps: int, device) -> tuple[float, dict[str, tuple[float, float]], list]:
    """Wall seconds and kernels (name -> calls, microseconds) of one step of ``run(n)`` (a 2N-step call less an
    N-step call, over N, after a warm-up call; each wall time the shorter of two calls), and the train logs of every
    call."""
    cuda = dev.is_cuda(device)
    logs = run(warmup)
    walls, tables = [], []
    for n in (steps, steps, 2 * steps, 2 * steps):
        dev.synchronize(device)
        start = time.perf_counter()
        logs += run(n)
        dev.synchronize(device)
        walls.append(time.perf_counter() - start)
    for n in (steps, 2 * steps):
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            logs += run(n)
            dev.synchronize(device)
        tables.append(kernel_table(prof, cuda))
    once, twice = tables
    per_step = {name: (max(0.0, (calls - once.get(name, (0, 0.0))[0]) / steps),
                       max(0.0, (micros - once.get(name, (0, 0.0))[1]) / steps))
                for name, (calls, micros) in twice.items()}
    return (min(walls[2:]) - min(walls[:2])) / steps, per_step, logs


def show(title: str, models: int, wall: float, kernels: dict[str, tuple[float, float]], logs: list, top: int,
         cuda: bool) -> dict:
    """Prints one step's profile (lines below ``title``) and returns it as a record."""
    unit, clock = ("kernels", "device") if cuda else ("ops", "CPU")
    busy = sum(micros for _, micros in kernels.values())
    calls = sum(c for c, _ in kernels.values())
    split = {kind: [0.0, 0.0] for kind in ("matmul", "attention", "other")}
    for name, (c, micros) in kernels.items():
        split[kind_of(name)][0] += c
        split[kind_of(name)][1] += micros
    fallbacks = list(dict.fromkeys(line for log in logs for line in log.fallbacks))  # a pack's members share theirs
    busy_share = f" ({busy / 1e4 / wall:.0f}% of the wall time)" if cuda else ""  # a launch-bound step: far below 100
    print(f"{title}: {1e3 * wall:.2f} ms wall per step ({1e3 * wall / models:.2f} ms per model), "
          f"{busy / 1e3:.2f} ms of {clock} time{busy_share}, {calls:.0f} {unit} per step; fallbacks: "
          f"{', '.join(kinds(fallbacks)) or 'none'}")
    print("  " + ", ".join(f"{kind} {100 * micros / max(busy, 1e-9):.0f}% ({c:.0f} {unit})"
                           for kind, (c, micros) in split.items()) + f" of the {clock} time")
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]
    print(f"  top {len(ranked)} {unit} by self {clock} time per step:")
    for name, (c, micros) in ranked:
        print(f"  {micros / 1e3:9.3f} ms {100 * micros / max(busy, 1e-9):4.0f}%  x{c:<5.1f} {kind_of(name):9s} "
              f"{name[:100]}")
    return {"models": models, "wall_ms": 1e3 * wall, "busy_ms": busy / 1e3, "per_step": calls,
            "split": {kind: {"calls": c, "ms": micros / 1e3} for kind, (c, micros) in split.items()},
            "top": [[name, c, micros / 1e3] for name, (c, micros) in ranked], "fallbacks": fallbacks}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--profile", default="paper", choices=setups.PROFILES)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results", help="where gpu_profile.json goes")
    p.add_argument("--budget", type=float, default=None,
                   help="wall-clock seconds from the start; the packed step is skipped if it would not fit")
    p.add_argument("--steps", type=int, default=5, help="N: per step is a 2N-step call less an N-step call, over N")
    p.add_argument("--warmup", type=int, default=3, help="steps of the first call (which compiles, where asked)")
    p.add_argument("--compile", default="auto", choices=dev.COMPILE, help="auto: on CUDA, as the study trains")
    p.add_argument("--top", type=int, default=10, help="kernels listed per step")
    args = p.parse_args()
    os.environ.setdefault("KDLIB_OFFLINE", "1")  # a GPU machine may have no network: never wait on a download
    device, cuda = args.device, dev.is_cuda(args.device)
    report = gpu_check.Report(Path(args.out) / "gpu_profile.json", args.budget)
    compile = dev.use_compile(args.compile, device)
    setup = setups.get(SETUP, args.profile)
    task, data = gpu_check.task_for(setup, args.data_dir)
    print(f"device {dev.name(device)}; {SETUP} at the {args.profile} profile ({data} data), precision "
          f"{setup.precision or 'float32'}, compile {'on' if compile else 'off'}; per step: a {2 * args.steps}-step call less a {args.steps}-step call")
    report.keep("device", dev.name(device))
    report.keep("matmul_rates", gpu_check.matmul_rates(device))

    start = time.monotonic()
    objectives, seeds = gpu_check.study_pack(setup, gpu_check.seed_pack_size(setup))
    run = gpu_check.solo_run(setup, task, device, Objective("ce"), seeds[0], None, None, compile)
    wall, kernels, logs = step_profile(run, args.warmup, args.steps, device)
    report.keep("student step", show("student step (1 model, SIDDO)", 1, wall, kernels, logs, args.top, cuda))
    if report.allows("the packed step", time.monotonic() - start):
        teacher, cache = gpu_check.teacher_source(setup, task, device)
        run = gpu_check.pack_run(setup, task, device, objectives, seeds, teacher, cache, compile)
        wall, kernels, logs = step_profile(run, args.warmup, args.steps, device)
        kd = sum(o.needs_teacher for o in objectives)
        title = (f"packed step ({len(objectives)} models, {kd} of them KD with a "
                 f"{'cached' if cache is not None else 'live'} teacher)")
        report.keep("packed step", show(title, len(objectives), wall, kernels, logs, args.top, cuda))
    report.keep("seconds", report.elapsed())
    print(f"gpu profile done in {report.elapsed():.0f} s; wrote {report.path}")


if __name__ == "__main__":
    main()
