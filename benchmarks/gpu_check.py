"""The GPU check: per-model training time of paper-profile setups one by one, packed and packed + compiled, the
FLOP rate achieved against this device's measured bf16 matmul rate, a pack-equals-one-by-one check, and the cpu
profile of tinyshakespeare-nanogpt end to end with ``--pack auto``. Prints one table; writes the per-model times
to ``<out>/gpu_check.json`` for ``python -m kdlib plan``.

Setups: tinyshakespeare-nanogpt, svhn-resnet18, speechcommands-vggish and svhn-vit at ``--profile`` (default
paper). A dataset that is absent is replaced by random data of its real shapes (timing only). Times are
extrapolated from ``--steps`` timed steps (after warm-up) to the recipe's steps. On the CPU, ``--profile smoke``
is a dry run of every part (CI runs it).
"""
from __future__ import annotations

import argparse
import os
import copy
import json
import tempfile
import time
from pathlib import Path
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdlib.runs import autopack
from kdlib import setups
from kdlib.engine import device as dev
from kdlib.data import DatasetMissing, TaskData
from kdlib.data.base import data_dir as data_folder
from kdlib.data.base import available
from kdlib.data.sources import ExampleData, WindowData
from kdlib.models import build
from kdlib.models.gpt import GPT, GPTConfig
from kdlib.engine.recipe import Recipe
from kdlib.runs.run import load_task
from kdlib.runs.spec import teacher_spec
from kdlib.store import write_json
from kdlib.runs.setup import run_setup
from kdlib.engine.together import BF16_DRAWS, train_together
from kdlib.engine.objectives import Objective, objective_loss
from kdlib.engine.train import init_model, train

SETUPS = ("tinyshakespeare-nanogpt", "svhn-resnet18", "speechcommands-vggish", "svhn-vit")
SHAPES = {"svhn": ((3, 32, 32), 10), "speechcommands": ((1, 32, 63), 35)}  # stand-ins for absent datasets


def task_for(setup, data_dir) -> tuple[TaskData, str]:
    """The setup's data, or random data of its real shapes when the dataset or its decoder (soundfile) is absent."""
    try:
        return load_task(teacher_spec(setup, setup.teacher_seeds[0]), data_dir), "real"
    except (DatasetMissing, ImportError):
        g = torch.Generator().manual_seed(0)
        if setup.dataset == "tinyshakespeare":
            tokens = torch.randint(65, (1_115_394,), generator=g)
            return TaskData(WindowData(tokens[:1_000_000], setup.dataset_kwargs["block_size"]),
                            WindowData(tokens[1_000_000:], setup.dataset_kwargs["block_size"]), 65), "random"
        shape, classes = SHAPES[setup.dataset]
        n = 4096
        x = torch.randint(256, (n, *shape), generator=g, dtype=torch.uint8).float() / 255
        y = torch.randint(classes, (n,), generator=g)
        return TaskData(ExampleData(x, y), ExampleData(x[:512], y[:512]), classes), "random"


def stand_in_text(folder: Path) -> Path:
    """A data folder holding a random tinyshakespeare.txt of the real file's length and 65 characters."""
    chars = [chr(c) for c in range(33, 98)]
    g = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    ids = torch.randint(len(chars), (1_115_394,), generator=g).tolist()
    (folder / "tinyshakespeare.txt").write_text("".join(chars[i] for i in ids) + "".join(chars))
    return folder


def matmul_rate(device, size: int, repeats: int = 20) -> float:
    """Dense matmul FLOP/s on ``device`` (bf16 on CUDA, float32 on CPU): the hardware ceiling we compare to."""
    dtype = torch.bfloat16 if dev.is_cuda(device) else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    dev.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    dev.synchronize(device)
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


KD_SHARE = 1 / 3  # the probe's packs mix CE, KD (with a live teacher) and RCD students in turn (kdlib.runs.autopack)


def _counted(fn, causal: bool) -> float:
    """FLOPs of ``fn()`` by torch's flop counter, ``causal`` attention at half its L^2 (the counter counts the full
    score matrix, of which a causal kernel computes the lower half)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    total = counter.get_total_flops()
    attention = sum(n for op, n in counter.get_flop_counts().get("Global", {}).items()
                    if "scaled_dot_product" in str(op))
    return float(total - attention / 2 if causal else total)


def step_flops(setup, task, device) -> float:
    """FLOPs of one training step of one student as a pack trains it: its forward and backward, and its share of
    the live teacher's forward passes (the KD members' batches, where no logit cache serves them)."""
    student, teacher = setup.student_model, setup.teacher
    causal = student.arch == "gpt"
    model = dev.place(init_model(lambda: build(student.arch, task.num_classes, **student.kwargs), 0), device)
    idx, x, y = next(task.train.batches(setup.student_recipe.batch_size, 1, torch.Generator().manual_seed(0)))
    x, y = dev.batch(x, device), dev.batch(y, device)

    def step():
        with dev.autocast(device, setup.precision):  # the setup's own training precision
            objective_loss(Objective("ce"), model(x), x, y, idx, None, None).backward()
    flops = _counted(step, causal)
    if not getattr(task.train, "fixed", False):
        live = dev.place(init_model(lambda: build(teacher.arch, task.num_classes, **{
            k: v for k, v in teacher.kwargs.items() if k != "weights"}), 0), device).eval()
        with torch.no_grad():
            flops += KD_SHARE * _counted(lambda: live(x), causal)
    return flops


def counting_graphs(fn):
    """``fn()``'s result, and how many graphs ``torch.compile`` made and how many graph breaks it hit meanwhile: what
    ``TORCH_LOGS=recompiles,graph_breaks`` would show, as numbers (one graph and no break: nothing recompiled)."""
    from torch._dynamo.utils import counters
    counters.clear()
    out = fn()
    return out, counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def one_by_one(setup, task, device, warmup: int, steps: int, compile: bool = False) -> float:
    """Seconds per step of one student trained alone (``kdlib.engine.train.train``), compiled as a CUDA solo run is by
    default (``compile``; the warm-up steps include the compilation)."""
    student = setup.student_model
    model = init_model(lambda: build(student.arch, task.num_classes, **student.kwargs), 0)
    train(model, task.train, Objective("ce"), replace(setup.student_recipe, steps=warmup), 1, device=device,
          compile=compile)
    dev.synchronize(device)
    start = time.perf_counter()
    train(model, task.train, Objective("ce"), replace(setup.student_recipe, steps=steps), 2, device=device,
          log_every=steps, compile=compile)
    dev.synchronize(device)
    return (time.perf_counter() - start) / steps


PACK_CHECK = {  # dropout-free members of a conv family and two transformers (causal; with broadcast tokens), a few
    # seconds of training each; each data factory takes (generator, float dtype)
    "gpt": (lambda: GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=128, dropout=0.0)),
            lambda g, dtype: WindowData(torch.randint(65, (20_000,), generator=g), 64)),
    "resnet18": (lambda: build("resnet18", 10, image_size=32, width=16),
                 lambda g, dtype: ExampleData(torch.randn(256, 3, 32, 32, generator=g, dtype=dtype),
                                              torch.randint(10, (256,), generator=g))),
    "vit": (lambda: build("vit", 10, image_size=32, width=64, depth=2, heads=4, dropout=0.0),
            lambda g, dtype: ExampleData(torch.randn(256, 3, 32, 32, generator=g, dtype=dtype),
                                         torch.randint(10, (256,), generator=g))),
}


def pack_equals_one_by_one(device) -> list[str]:
    """Three dropout-free models per family (Nano-GPT, ResNet18, ViT) trained packed and one by one for two SGD
    steps.

    float64 (``dev.full_precision``): a packed model must equal its solo run to float rounding, ``|packed - solo|``
    at most 1e-8 of ``|solo - start|``. Not float32: a ResNet on random data turns float32 rounding into 0.2-3% of
    its update within two steps, packed or not (a near-tie in a max-pool or a ReLU goes the other way; measured
    on CPU: a solo float32 run is 1% of its update away from the same run in float64), so a float32 bound would
    measure the CPU's kernels, not the pack. bf16 (CUDA only): a pack computes in a solo run's dtypes but rounds in
    another order, so a packed model must differ from its solo run by at most ``BF16_DRAWS`` times what bf16 moves
    that solo run from float32. Whole-model norms: a
    parameter's own scale would make a zero-initialised bias's rounding look huge."""
    # SGD: Adam turns float noise in a near-zero gradient into a full step, which would measure rounding, not bugs
    recipe = Recipe("sgd", lr=0.05, momentum=0.9, batch_size=8, steps=2, grad_clip=1.0)
    objectives, seeds = [Objective("ce"), Objective("rcd", 0.5), Objective("ls", 0.1)], [10, 11, 12]

    def flat(models):
        return [torch.cat([p.detach().double().flatten().cpu() for p in m.parameters()]) for m in models]

    def trained(start, data, packed, precision=None):
        models = [copy.deepcopy(start) for _ in objectives]
        if packed:
            train_together(models, data, objectives, recipe, seeds, device=device, precision=precision)
        else:
            for model, objective, seed in zip(models, objectives, seeds):
                train(model, data, objective, recipe, seed, device=device, precision=precision)
        return flat(models)

    lines = []
    for family, (make, make_data) in PACK_CHECK.items():
        start = init_model(make, 0)
        data, data64 = (make_data(torch.Generator().manual_seed(0), dtype) for dtype in (torch.float32, torch.float64))
        with dev.full_precision():
            start64 = copy.deepcopy(start).double()
            solo64, packed64 = trained(start64, data64, False), trained(start64, data64, True)
        (origin,) = flat([start])
        worst = max(float((p - s).norm() / (s - origin).norm()) for p, s in zip(packed64, solo64))
        lines.append(f"{family} float64: {'PASS' if worst <= 1e-8 else 'FAIL'}: |packed - solo| is {worst:.1e} "
                     f"of |solo - start| (tolerance 1e-08)")
        if not dev.is_cuda(device):
            lines.append(f"{family} bf16: not run (bf16 autocast is CUDA's)")
            continue
        with dev.full_precision():
            solo32 = trained(start, data, False)
        solo16, packed16 = trained(start, data, False, "bf16"), trained(start, data, True, "bf16")
        worst = max(float((p - s).norm() / (s - s32).norm().clamp_min(1e-12))
                    for p, s, s32 in zip(packed16, solo16, solo32))
        lines.append(f"{family} bf16: {'PASS' if worst <= BF16_DRAWS else 'FAIL'}: |packed - solo| is {worst:.2f}x "
                     f"what bf16 moves a solo run from float32 (tolerance {BF16_DRAWS}x)")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--profile", default="paper", choices=setups.PROFILES)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results", help="where gpu_check.json goes (read by `kdlib plan`)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement (after warm-up)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--setups", nargs="*", default=list(SETUPS))
    p.add_argument("--compile", default="on", choices=("on", "off"),
                   help="also time packs under torch.compile (off: skip; compiling on a CPU takes minutes)")
    p.add_argument("--end-to-end", default="cpu", choices=setups.PROFILES + ("none",),
                   help="profile of the end-to-end tinyshakespeare-nanogpt run with --pack auto (none: skip)")
    args = p.parse_args()
    os.environ.setdefault("KDLIB_OFFLINE", "1")  # a GPU machine may have no network: never wait on a download
    device = args.device
    rate = matmul_rate(device, 8192 if dev.is_cuda(device) else 512)
    print(f"device {dev.name(device)}; {'bf16' if dev.is_cuda(device) else 'float32'} matmul rate "
          f"{rate / 1e12:.1f} TFLOP/s; {args.profile} profile, {args.steps} timed steps per measurement")
    for line in pack_equals_one_by_one(device):
        print(f"pack equals one by one, {line}")
    header = ("setup", "data", "params (M)", "s/model alone", "pack", "s/model packed", "s/model +compile",
              "graphs (breaks)", "speed-up", "TFLOP/s", "% of rate")
    rows, record = [], {}
    for name in args.setups:
        setup = setups.get(name, args.profile)
        task, kind = task_for(setup, args.data_dir)
        steps = setup.student_recipe.steps
        alone = one_by_one(setup, task, device, args.warmup, args.steps, compile=args.compile == "on")
        measure = autopack.measure_pack(setup, task, device, args.warmup, args.steps)
        size, tried = autopack.choose_pack(measure, autopack.students_per_teacher(setup))
        packed = tried[size] / size  # the probe timed it already
        compiled, graphs = float("nan"), "-"
        if args.compile == "on":
            seconds, count, breaks = counting_graphs(
                lambda: autopack.measure_pack(setup, task, device, args.warmup, args.steps, compile=True)(size))
            compiled, graphs = seconds / size, f"{count} ({breaks})"
        best = min(packed, compiled) if compiled == compiled else packed
        flops = step_flops(setup, task, device)
        achieved = flops / best
        student = setup.student_model
        params = sum(q.numel() for q in build(student.arch, task.num_classes, **student.kwargs).parameters()) / 1e6
        rows.append((name, kind, f"{params:.2f}", f"{alone * steps:.1f}", str(size), f"{packed * steps:.1f}",
                     f"{compiled * steps:.1f}", graphs, f"x{alone / best:.2f}", f"{achieved / 1e12:.1f}",
                     f"{100 * achieved / rate:.0f}%"))
        record[name] = {args.profile: {"teacher": alone * setup.teacher_recipe.steps if setup.teacher_recipe
                                       else 0.0, "student": best * steps, "pack": size, "device": dev.name(device)}}
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    previous = Path(args.out) / "gpu_check.json"
    merged = json.loads(previous.read_text()) if previous.exists() else {}
    for name, by_profile in record.items():
        merged.setdefault(name, {}).update(by_profile)
    write_json(previous, merged)
    if args.end_to_end != "none":
        setup = setups.get("tinyshakespeare-nanogpt", args.end_to_end)
        with tempfile.TemporaryDirectory() as tmp:
            data_dir, kind = args.data_dir, ""
            if not available("tinyshakespeare", data_folder(args.data_dir)):
                data_dir, kind = stand_in_text(Path(tmp) / "data"), " (random text of its real size: no data)"
            start = time.perf_counter()
            results = run_setup(setup, Path(tmp) / "results", data_dir, device, progress=False, pack="auto")
            print(f"end to end{kind}: {setup.name} at the {args.end_to_end} profile, {len(results)} models with "
                  f"--pack auto: {time.perf_counter() - start:.0f} s wall")


if __name__ == "__main__":
    main()
