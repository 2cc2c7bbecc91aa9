"""Speed benchmarks, printed as ratios measured side by side in one run on the machine at hand.

    python benchmarks/bench.py --data-dir ../shared/data [--students 6]

1. Models per hour on the ``cpu`` profile of ``--setups`` (default: cifar10-resnet18, the built-in conv
   setup, and tinyshakespeare-nanogpt, the model of most built-in setups), SIDDO and KD 0.9 students of one
   teacher: kdlib's serial launcher (1 thread and torch's default), ``local --workers 2`` and the same with
   ``--pack``, against a naive baseline (one model at a time through a plain DataLoader loop that runs the
   teacher's forward pass every step, torch's default threads).
2. A KD student step (cached teacher logits) against a SIDDO step.
3. Achieved FLOP/s of a language (cpu-profile Nano-GPT) training step against this machine's fp32 matmul peak.
4. Seven cpu-profile Nano-GPT students of one seed trained together (``--pack 7``) against one by one.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from kdlib import setups
from kdlib.engine.losses import kd_loss
from kdlib.runs.run import load_model, load_task, run_one
from kdlib.runs.spec import plan
from kdlib.store import run_dir
from kdlib.runs.setup import run_setup
from kdlib.engine.together import train_together
from kdlib.engine.objectives import Objective
from kdlib.engine.train import init_model, train
from kdlib.models import build


class Windows(Dataset):
    """Every window of a token stream as a map-style dataset (the plain-PyTorch way to batch text)."""

    def __init__(self, tokens: torch.Tensor, block_size: int):
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size - 1

    def __getitem__(self, i: int):
        window = self.tokens[i:i + self.block_size + 1]
        return window[:-1], window[1:]


def naive_student(spec, teacher_model, task, threads: int) -> None:
    """One student the naive way: DataLoader batches; a KD student runs the teacher forward every step."""
    torch.set_num_threads(threads)
    recipe = spec.recipe
    model = build(spec.arch, task.num_classes, **spec.arch_kwargs)
    model.load_state_dict(teacher_model.init_state)
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    text = hasattr(task.train, "tokens")
    data = Windows(task.train.tokens, task.train.block_size) if text else TensorDataset(task.train.x, task.train.y)
    loader = DataLoader(data, batch_size=recipe["batch_size"], shuffle=True,
                        generator=torch.Generator().manual_seed(spec.student_seed))
    step = 0
    model.train()
    while step < recipe["steps"]:
        for x, y in loader:
            x = x if text else task.train.transform(x)
            if spec.condition == "kd":
                with torch.no_grad():
                    t = teacher_model(x)
                loss = kd_loss(model(x), t, y, spec.alpha)
            else:
                loss = F.cross_entropy(model(x).flatten(0, -2), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == recipe["steps"]:
                break


def throughput(data_dir, n_students: int, setup_name: str) -> dict[str, float]:
    setup = setups.get(setup_name, "cpu")
    sub = replace(setup, student_seeds=setup.student_seeds[:n_students], alphas=(0.9,), conditions=("kd",))
    teacher, *students = plan(sub)  # SIDDO and KD 0.9 per student seed
    per_hour = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        run_one(teacher, base, data_dir)
        task = load_task(teacher, data_dir)
        teacher_model = load_model(base, teacher, data_dir)
        teacher_model.init_state = torch.load(run_dir(base, teacher) / "init.pt")
        start = time.perf_counter()
        for spec in students:
            naive_student(spec, teacher_model, task, threads=torch.get_num_threads())
        per_hour["naive (DataLoader, teacher forward each step, default threads)"] = \
            len(students) * 3600 / (time.perf_counter() - start)
        default_threads = torch.get_num_threads()
        for launcher, workers, threads, pack in (("serial", 1, 1, 1), ("serial", 1, default_threads, 1),
                                                 ("local", 2, 1, 1), ("local", 2, 1, n_students)):
            name = f"kdlib {launcher} (workers={workers}, {threads} thread{'s' * (threads > 1)} each" + \
                (f", pack {pack})" if pack > 1 else ")")
            out = Path(tmp) / name.replace(" ", "_")
            shutil.copytree(run_dir(base, teacher), run_dir(out, teacher), dirs_exist_ok=True)  # the teacher is trained once
            start = time.perf_counter()
            run_setup(sub, out, data_dir, progress=False, launcher=launcher, workers=workers, threads=threads,
                      pack=pack)
            per_hour[name] = len(students) * 3600 / (time.perf_counter() - start)
        torch.set_num_threads(default_threads)
    return per_hour


def step_ratio(data_dir, steps: int = 60) -> float:
    setup = setups.get("cifar10-resnet18", "cpu")
    teacher_spec = plan(setup)[0]
    task = load_task(teacher_spec, data_dir)
    build_model = lambda: build(teacher_spec.arch, task.num_classes, **teacher_spec.arch_kwargs)
    torch.set_num_threads(1)
    cache = torch.randn(len(task.train), task.num_classes)
    recipe = replace(setup.student_recipe, steps=steps)
    times = {}
    for kind in ("ce", "kd", "ce", "kd"):  # interleaved, best of two
        model = init_model(build_model, 0)
        start = time.perf_counter()
        train(model, task.train, Objective(kind, alpha=0.9), recipe, data_seed=10,
              teacher_cache=cache if kind == "kd" else None)
        times[kind] = min(times.get(kind, float("inf")), time.perf_counter() - start)
    return times["kd"] / times["ce"]


def flops_ratio(data_dir, steps: int = 20) -> tuple[float, float, float]:
    setup = setups.get("tinyshakespeare-nanogpt", "cpu")
    spec = plan(setup)[0]
    task = load_task(spec, data_dir)
    torch.set_num_threads(1)
    model = init_model(lambda: build(spec.arch, task.num_classes, **spec.arch_kwargs), 0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    batches = task.train.batches(setup.student_recipe.batch_size, steps + 1, torch.Generator().manual_seed(0))
    _, x, y = next(batches)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
    flops = counter.get_total_flops()
    start = time.perf_counter()
    for _, x, y in batches:
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    achieved = flops * steps / (time.perf_counter() - start)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    start, n = time.perf_counter(), 10
    for _ in range(n):
        a @ b
    peak = 2 * 1024 ** 3 * n / (time.perf_counter() - start)
    return achieved, peak, achieved / peak


SEVEN = [Objective("ce")] + [Objective(kind, alpha=a) for a in (0.1, 0.5, 0.9) for kind in ("kd", "rcd")]


def pack_ratio(data_dir, steps: int = 60) -> float:
    """One-by-one over packed training seconds per model: seven cpu-profile Nano-GPT students, one thread."""
    setup = setups.get("tinyshakespeare-nanogpt", "cpu")
    spec = plan(setup)[0]
    task = load_task(spec, data_dir)
    torch.set_num_threads(1)
    make = lambda: build(spec.arch, task.num_classes, **spec.arch_kwargs)
    teacher = init_model(make, 0).eval()
    recipe = replace(setup.student_recipe, steps=steps)
    seeds = list(range(10, 10 + len(SEVEN)))
    start = time.perf_counter()
    for seed, objective in zip(seeds, SEVEN):
        train(init_model(make, 0), task.train, objective, recipe, data_seed=seed, teacher=teacher)
    alone = (time.perf_counter() - start) / len(SEVEN)
    start = time.perf_counter()
    train_together([init_model(make, 0) for _ in SEVEN], task.train, SEVEN, recipe, seeds, teacher=teacher)
    return alone / ((time.perf_counter() - start) / len(SEVEN))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--students", type=int, default=6)
    p.add_argument("--setups", nargs="+", default=["cifar10-resnet18", "tinyshakespeare-nanogpt"])
    args = p.parse_args()
    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {default_threads} default threads")
    for number, setup_name in enumerate(args.setups):
        rates = throughput(args.data_dir, args.students, setup_name)
        torch.set_num_threads(default_threads)
        naive = next(v for k, v in rates.items() if k.startswith("naive"))
        print(f"\n1{'abcdefgh'[number]}. models per hour, {setup_name} cpu profile, SIDDO and KD 0.9 students")
        for name, rate in rates.items():
            print(f"   {name:66s} {rate:8.1f}/h   x{rate / naive:.2f} vs naive")
        names = list(rates)
        print(f"   local(2 x 1 thread) / serial(1 thread): x{rates[names[3]] / rates[names[1]]:.2f}; "
              f"/ serial(default threads): x{rates[names[3]] / rates[names[2]]:.2f}", flush=True)
    print(f"\n2. KD step (cached teacher logits) / SIDDO step: x{step_ratio(args.data_dir):.3f}  (target <= 1.1)")
    achieved, peak, ratio = flops_ratio(args.data_dir)
    print(f"\n3. language training step: {achieved / 1e9:.2f} GFLOP/s achieved, fp32 matmul peak "
          f"{peak / 1e9:.2f} GFLOP/s (1 thread): {ratio:.1%} of peak")
    print(f"\n4. seven Nano-GPT students trained together (--pack 7) / one by one, models per hour: "
          f"x{pack_ratio(args.data_dir):.2f}")


if __name__ == "__main__":
    main()
