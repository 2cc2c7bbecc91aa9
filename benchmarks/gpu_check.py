"""The GPU check: per-model training time of paper-profile setups one by one and packed, compared like with like;
the FLOP rate achieved against this device's measured matmul rate at the precision each setup trains in; a
pack-equals-one-by-one check; and the cpu profile of tinyshakespeare-nanogpt end to end with ``--pack auto``.

Every line is printed as it is measured. ``<out>/gpu_check.json`` gets each setup's per-model times as its row is
printed (read by ``python -m kdlib plan``), ``<out>/gpu_check_report.json`` every section as it ends (both written
atomically), so a run stopped at its time limit leaves all it measured.

Sections, in order: the matmul rates, the float64 pack-equals check and the first setup's row are required; the
other setups, the bf16 pack-equals check (CUDA only) and the end-to-end run are optional. With ``--budget
SECONDS`` (wall clock from the process's start) an optional section runs only while about the time it needs is
left (a setup: as long as the slowest setup so far took), else one line says what was skipped and why.

Like with like: a pack is the study's first pack (``--pack seed``: the students of one student seed, 7 at the
paper's grid, SIDDO and KD and RCD at three alphas, so 3 of 7 are KD); one by one, a plain member and a KD
member of that pack are timed alone and weighted as the pack holds them, with the same teacher (a live teacher
where the study's students run one, the cached logits where the training examples are fixed), the setup's
precision and the same compile setting. Compiles per setup: the student alone and packed, and a live teacher at both batch sizes (``--pack
auto`` adds an eager probe of pack sizes first); ``graphs (breaks)`` counts the pack's graphs (its model's and
its live teacher's) and the graph breaks it hit. ``fallbacks``: every slower road the timed runs took (a compile
that ran eagerly, a pack timed one by one, a failed probe size; :mod:`kdlib.engine.fallback`).

Setups: tinyshakespeare-nanogpt, svhn-resnet18, speechcommands-vggish and svhn-vit at ``--profile`` (default
paper). A dataset that is absent is replaced by random data of its real shapes (timing only). Times are
extrapolated from ``--steps`` timed steps (after warm-up) to the recipe's steps. On the CPU, ``--profile smoke``
is a dry run of every part (CI runs it).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdlib import setups
from kdlib.data import DatasetMissing, TaskData
from kdlib.data.base import available
from kdlib.data.base import data_dir as data_folder
from kdlib.data.sources import ExampleData, WindowData
from kdlib.engine import device as dev
from kdlib.engine.fallback import fallback, kinds
from kdlib.engine.objectives import Objective, objective_loss
from kdlib.engine.recipe import Recipe
from kdlib.engine.together import BF16_DRAWS, train_together
from kdlib.engine.train import init_model, train
from kdlib.models import build
from kdlib.models.gpt import GPT, GPTConfig
from kdlib.runs import autopack
from kdlib.runs.run import load_task
from kdlib.runs.setup import run_setup
from kdlib.runs.spec import packs, plan, teacher_spec
from kdlib.store import write_json

SETUPS = ("tinyshakespeare-nanogpt", "svhn-resnet18", "speechcommands-vggish", "svhn-vit")
SHAPES = {"svhn": ((3, 32, 32), 10), "speechcommands": ((1, 32, 63), 35)}  # stand-ins for absent datasets


def process_start() -> float:
    """``time.monotonic()`` when this process started (Linux: /proc), else now: a budget counts from the start."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        age = float(Path("/proc/uptime").read_text().split()[0]) - int(after_name[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        age = 0.0
    return time.monotonic() - max(age, 0.0)


class Report:
    """What a benchmark prints and keeps. Each printed line leaves at once (stdout line-buffered: a run stopped at
    its time limit has shown every line so far); ``keep`` and ``add`` rewrite the JSON file ``path`` whole and
    atomically; ``allows`` spends the wall-clock ``budget`` (seconds from the process's start; None: no limit)."""

    def __init__(self, path, budget: float | None):
        sys.stdout.reconfigure(line_buffering=True)
        self.path, self.budget = Path(path), budget
        self.data = {"budget_s": budget, "skipped": []}
        self.start = process_start()

    def keep(self, key: str, value) -> None:
        self.data[key] = value
        write_json(self.path, self.data)

    def add(self, key: str, item) -> None:
        self.keep(key, [*self.data.get(key, []), item])

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def allows(self, what: str, need: float) -> bool:
        """Whether an optional section that needs about ``need`` seconds may run; if not, says so (printed, kept)."""
        left = math.inf if self.budget is None else self.budget - self.elapsed()
        if need <= 0 or left >= need:
            return True
        line = f"skipped: {what} (needs about {need:.1f} s; {max(left, 0):.1f} s of the {self.budget:g} s budget left)"
        print(line)
        self.add("skipped", line)
        return False


def pack_option(value: str) -> str:
    """``--pack``: "seed", "auto" or a positive number."""
    if value in ("seed", "auto") or (value.isdigit() and int(value) > 0):
        return value
    raise argparse.ArgumentTypeError(f"--pack {value!r} is not allowed: use seed, auto or a positive number")


def seed_pack_size(setup) -> int:
    """How many students of one student seed can share a pack: the study's grid of one seed (7 at the paper's)."""
    return autopack.students_per_teacher(setup.scaled(student_seeds=setup.student_seeds[:1]))


def study_pack(setup, size: int) -> tuple[list[Objective], list[int]]:
    """The objectives and data-order seeds of the first pack of at most ``size`` students the study trains for the
    setup's first teacher (:func:`kdlib.runs.spec.packs`; its first run where none packs): its mix of objectives,
    KD's share included."""
    students = [s for s in plan(setup.scaled(teacher_seeds=setup.teacher_seeds[:1])) if s.role == "student"]
    jobs = packs(students, size)
    job = next((j for j in jobs if isinstance(j, tuple)), jobs[:1])
    return [s.objective for s in job], [s.student_seed for s in job]


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


def teacher_source(setup, task, device) -> tuple[torch.nn.Module | None, torch.Tensor | None]:
    """What KD students read, as the study gives it to them: a cache of the teacher's logits where the training
    examples are fixed (random logits here: timing only), else a live stand-in of the teacher's architecture."""
    if getattr(task.train, "fixed", False):
        return None, torch.randn(len(task.train), task.num_classes)
    kwargs = {k: v for k, v in setup.teacher.kwargs.items() if k != "weights"}
    live = init_model(lambda: build(setup.teacher.arch, task.num_classes, **kwargs), 0)
    return dev.place(live, device).eval(), None


def solo_run(setup, task, device, objective: Objective, seed: int, teacher, cache, compile: bool):
    """``run(steps)``: one student of ``setup`` trained alone under ``objective``, as the study trains it (its
    precision, the teacher where the objective reads one); returns its train logs."""
    student = setup.student_model
    model = init_model(lambda: build(student.arch, task.num_classes, **student.kwargs), 0)
    kd = objective.needs_teacher
    return lambda steps: [train(model, task.train, objective, replace(setup.student_recipe, steps=steps), seed,
                                teacher=teacher if kd else None, teacher_cache=cache if kd else None, device=device,
                                log_every=steps, compile=compile, precision=setup.precision)]


def pack_run(setup, task, device, objectives: list[Objective], seeds: list[int], teacher, cache, compile: bool):
    """``run(steps)``: a pack of students of ``setup`` trained together (one per objective), as the study trains it;
    returns their train logs."""
    student = setup.student_model
    models = [init_model(lambda: build(student.arch, task.num_classes, **student.kwargs), 0) for _ in objectives]
    return lambda steps: train_together(models, task.train, objectives, replace(setup.student_recipe, steps=steps),
                                        seeds, teacher=teacher, teacher_cache=cache, device=device, log_every=steps,
                                        compile=compile, precision=setup.precision)


def timed(run, warmup: int, steps: int, device) -> tuple[float, list]:
    """Seconds per step of ``run(steps)`` after a warm-up ``run(warmup)`` (which compiles, where asked), and the train
    logs of both calls."""
    logs = run(warmup)
    dev.synchronize(device)
    start = time.perf_counter()
    logs += run(steps)
    dev.synchronize(device)
    return (time.perf_counter() - start) / steps, logs


#: The matmul rates measured on CUDA, by name: (dtype, TF32 allowed). The CPU measures float32 alone.
MATMULS = {"bf16": (torch.bfloat16, False), "fp16": (torch.float16, False), "TF32": (torch.float32, True),
           "float32": (torch.float32, False)}


@contextlib.contextmanager
def tf32_matmuls(allowed: bool):
    """Float32 matmuls on CUDA may use TF32 inside (PyTorch's default: they may not)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def matmul_rate(device, kind: str, size: int, repeats: int = 20) -> float:
    """FLOP/s of a dense ``size``-square matmul in ``kind`` (a key of :data:`MATMULS`) on ``device``: the hardware
    ceiling a training step's FLOP rate is compared with."""
    dtype, tf32 = MATMULS[kind]
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    with tf32_matmuls(tf32) if dev.is_cuda(device) else contextlib.nullcontext():
        for _ in range(3):
            a @ b
        dev.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        dev.synchronize(device)
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def matmul_rates(device) -> dict[str, float]:
    """Every rate of :data:`MATMULS` on CUDA (8192-square), float32 alone on the CPU (512-square); each line printed
    as it is measured."""
    cuda = dev.is_cuda(device)
    rates = {}
    for kind in MATMULS if cuda else ["float32"]:
        rates[kind] = matmul_rate(device, kind, 8192 if cuda else 512)
        print(f"matmul rate {kind}: {rates[kind] / 1e12:.2f} TFLOP/s")
    if not cuda:
        print(f"matmul rates {', '.join(k for k in MATMULS if k != 'float32')}: not measured on the CPU")
    return rates


HALF = {"bf16": "bf16", "fp16-scaler": "fp16"}  # a half precision -> the matmul rate its steps run at


def rate_kind(setup, device, conv_share: float) -> str:
    """The matmul rate a setup's step is held against: the rate of the precision it trains in. bf16 and fp16 (the
    fp16-scaler students) are their own; float32 steps are TF32 where most of their FLOPs are convolutions (cuDNN
    uses TF32 by default) or float32 matmuls may use TF32, else float32. The CPU: float32."""
    if not dev.is_cuda(device):
        return "float32"
    if setup.precision in HALF:
        return HALF[setup.precision]
    convs = conv_share > 0.5 and torch.backends.cudnn.allow_tf32
    return "TF32" if convs or torch.backends.cuda.matmul.allow_tf32 else "float32"


def _counted(fn, causal: bool) -> tuple[float, float]:
    """FLOPs of ``fn()`` by torch's flop counter (``causal`` attention at half its L^2: the counter counts the full
    score matrix, of which a causal kernel computes the lower half), and how many of them are convolutions."""
    with FlopCounterMode(display=False) as counter:
        fn()
    by_op = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    attention = sum(n for op, n in by_op.items() if "scaled_dot_product" in op)
    convolutions = sum(n for op, n in by_op.items() if "convolution" in op)
    return float(counter.get_total_flops() - (attention / 2 if causal else 0)), float(convolutions)


def step_flops(setup, task, device, teacher, kd_share: float) -> tuple[float, float]:
    """FLOPs of one training step of one student as a pack trains it, and how many are convolutions: its forward and
    backward at the setup's precision, and its share of the live teacher's forward passes (``kd_share`` of the
    pack's members read the ``teacher``; None where a logit cache serves them)."""
    student = setup.student_model
    causal = student.arch == "gpt"
    model = dev.place(init_model(lambda: build(student.arch, task.num_classes, **student.kwargs), 0), device)
    idx, x, y = next(task.train.batches(setup.student_recipe.batch_size, 1, torch.Generator().manual_seed(0)))
    x, y = dev.batch(x, device), dev.batch(y, device)

    def step():
        with dev.autocast(device, setup.precision):
            objective_loss(Objective("ce"), model(x), x, y, idx, None, None).backward()
    flops, convolutions = _counted(step, causal)
    if teacher is not None and kd_share:
        with torch.no_grad():
            more, more_convolutions = _counted(lambda: teacher(x), causal)
        flops, convolutions = flops + kd_share * more, convolutions + kd_share * more_convolutions
    return flops, convolutions


def counting_graphs(fn):
    """``fn()``'s result, and how many graphs ``torch.compile`` made and how many graph breaks it hit meanwhile: what
    ``TORCH_LOGS=recompiles,graph_breaks`` would show, as numbers (one graph and no break: nothing recompiled)."""
    from torch._dynamo.utils import counters
    counters.clear()
    out = fn()
    return out, counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def chosen_pack(setup, task, device, pack: str, warmup: int, steps: int, record: list[str]) -> int:
    """The pack size to time: ``pack`` as a number; "seed": one student seed's students; "auto": the study's probe
    (:mod:`kdlib.runs.autopack`), run eagerly (compiling every size it tries would cost a compile each; a size that
    fails is a "probe" fallback)."""
    if pack == "seed":
        return seed_pack_size(setup)
    if pack != "auto":
        return int(pack)
    measure = autopack.measure_pack(setup, task, device, warmup, steps)
    size, tried = autopack.choose_pack(measure, autopack.students_per_teacher(setup))
    for k, seconds in tried.items():
        if isinstance(seconds, str):
            fallback("probe", f"{setup.name}: a pack of {k} failed in the probe ({seconds}); packs of {size}", record)
    dev.release(device)
    return size


def measure_setup(setup, task, data: str, device, rates: dict[str, float], args) -> tuple[dict, dict]:
    """One row of the table (:func:`cells` formats it; ``data``: "real" or "random") and the setup's record for
    ``kdlib plan``."""
    teacher, cache = teacher_source(setup, task, device)
    record: list[str] = []  # fallback lines
    size = chosen_pack(setup, task, device, args.pack, args.warmup, args.steps, record)
    objectives, seeds = study_pack(setup, size)
    compile = args.compile == "on"
    groups = {"plain": [o for o in objectives if not o.needs_teacher], "kd": [o for o in objectives if o.needs_teacher]}
    alone = {}
    for name, group in groups.items():
        if group:
            run = solo_run(setup, task, device, group[0], seeds[0], teacher, cache, compile)
            alone[name], logs = timed(run, args.warmup, args.steps, device)
            record += [line for log in logs for line in log.fallbacks]
    per_model_alone = sum(len(groups[name]) * seconds for name, seconds in alone.items()) / len(objectives)
    packed, graphs = per_model_alone, None
    if len(objectives) > 1:
        try:
            run = pack_run(setup, task, device, objectives, seeds, teacher, cache, compile)
            (seconds, logs), count, breaks = counting_graphs(lambda: timed(run, args.warmup, args.steps, device))
        except Exception as e:  # noqa: BLE001  (as the study's pack trains its members one by one instead)
            fallback("pack", f"{setup.name}: a pack of {len(objectives)} failed ({type(e).__name__}: "
                             f"{str(e)[:200]}); timed one by one", record)
            dev.release(device)
        else:
            packed, graphs = seconds / len(objectives), ((count, breaks) if compile else None)
            record += [line for log in logs for line in log.fallbacks]
    share = len(groups["kd"]) / len(objectives)  # of the pack's members, each a pass of the live teacher per step
    flops, convolutions = step_flops(setup, task, device, teacher, share)
    kind = rate_kind(setup, device, convolutions / flops)
    student = setup.student_model
    steps = setup.student_recipe.steps
    row = {"setup": setup.name, "data": data, "precision": setup.precision or "float32",
           "params_m": sum(q.numel() for q in build(student.arch, task.num_classes, **student.kwargs).parameters()) / 1e6,
           "teacher": "none" if not groups["kd"] else "cache" if cache is not None else "live",
           "pack": len(objectives), "kd_members": len(groups["kd"]), "alone_s": per_model_alone * steps,
           "packed_s": packed * steps, "graphs": graphs, "tflops": flops / packed / 1e12, "rate_kind": kind,
           "rate_share": flops / packed / rates[kind], "fallbacks": list(dict.fromkeys(record))}
    plan_record = {"student": packed * steps, "pack": len(objectives), "device": dev.name(device)}
    if setup.self_distillation and setup.teacher_recipe and "plain" in alone:  # a teacher trains as a plain student
        plan_record["teacher"] = alone["plain"] * setup.teacher_recipe.steps
    return row, plan_record


COLUMNS = ("setup", "data", "precision", "params (M)", "teacher", "pack", "KD share", "s/model alone",
           "s/model packed", "speed-up", "graphs (breaks)", "TFLOP/s", "% of matmul rate", "fallbacks", "wall s")


def cells(row: dict) -> list[str]:
    """A row of the table as printed, in :data:`COLUMNS` order."""
    return [row["setup"], row["data"], row["precision"], f"{row['params_m']:.2f}", row["teacher"], str(row["pack"]),
            f"{row['kd_members']}/{row['pack']}", f"{row['alone_s']:.1f}", f"{row['packed_s']:.1f}",
            f"x{row['alone_s'] / row['packed_s']:.2f}", "-" if row["graphs"] is None else "{} ({})".format(*row["graphs"]),
            f"{row['tflops']:.3g}", f"{100 * row['rate_share']:.0f}% of {row['rate_kind']}",
            ", ".join(kinds(row["fallbacks"])) or "none", f"{row['wall_s']:.0f}"]


def aligned(values, widths) -> str:
    return "  ".join(str(v).ljust(w) for v, w in zip(values, widths)).rstrip()


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


def pack_equals_one_by_one(device, precision: str):
    """Yields one line per family (Nano-GPT, ResNet18, ViT): three dropout-free models trained packed and one by one
    for two SGD steps, compared.

    ``precision`` "float64" (``dev.full_precision``): a packed model must equal its solo run to float rounding,
    ``|packed - solo|`` at most 1e-8 of ``|solo - start|``. Not float32: a ResNet on random data turns float32
    rounding into 0.2-3% of its update within two steps, packed or not (a near-tie in a max-pool or a ReLU goes the
    other way; measured on CPU: a solo float32 run is 1% of its update away from the same run in float64), so a
    float32 bound would measure the CPU's kernels, not the pack. "bf16" (CUDA only): a pack computes in a solo run's
    dtypes but rounds in another order, so a packed model must differ from its solo run by at most ``BF16_DRAWS``
    times what bf16 moves that solo run from float32. Whole-model norms: a parameter's own scale would make a
    zero-initialised bias's rounding look huge."""
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

    for family, (make, make_data) in PACK_CHECK.items():
        start = init_model(make, 0)
        if precision == "float64":
            data64 = make_data(torch.Generator().manual_seed(0), torch.float64)
            with dev.full_precision():
                start64 = copy.deepcopy(start).double()
                solo, packed = trained(start64, data64, False), trained(start64, data64, True)
            (origin,) = flat([start])
            worst = max(float((p - s).norm() / (s - origin).norm()) for p, s in zip(packed, solo))
            yield (f"{family} float64: {'PASS' if worst <= 1e-8 else 'FAIL'}: |packed - solo| is {worst:.1e} of "
                   f"|solo - start| (tolerance 1e-08)")
            continue
        data = make_data(torch.Generator().manual_seed(0), torch.float32)
        with dev.full_precision():
            solo32 = trained(start, data, False)
        solo16, packed16 = trained(start, data, False, "bf16"), trained(start, data, True, "bf16")
        worst = max(float((p - s).norm() / (s - s32).norm().clamp_min(1e-12))
                    for p, s, s32 in zip(packed16, solo16, solo32))
        yield (f"{family} bf16: {'PASS' if worst <= BF16_DRAWS else 'FAIL'}: |packed - solo| is {worst:.2f}x what "
               f"bf16 moves a solo run from float32 (tolerance {BF16_DRAWS}x)")


def stand_in_text(folder: Path) -> Path:
    """A data folder holding a random tinyshakespeare.txt of the real file's length and 65 characters."""
    chars = [chr(c) for c in range(33, 98)]
    g = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    ids = torch.randint(len(chars), (1_115_394,), generator=g).tolist()
    (folder / "tinyshakespeare.txt").write_text("".join(chars[i] for i in ids) + "".join(chars))
    return folder


def end_to_end(profile: str, data_dir, device) -> str:
    """tinyshakespeare-nanogpt at ``profile`` trained as the study trains it (``--pack auto``) in a scratch folder:
    one line with its wall time and the fallbacks its runs recorded."""
    setup = setups.get("tinyshakespeare-nanogpt", profile)
    torch._dynamo.reset()  # compiled afresh, as in a process of its own
    with tempfile.TemporaryDirectory() as tmp:
        kind = ""
        if not available("tinyshakespeare", data_folder(data_dir)):
            data_dir, kind = stand_in_text(Path(tmp) / "data"), " (random text of its real size: no data)"
        start = time.perf_counter()
        results = run_setup(setup, Path(tmp) / "results", data_dir, device, progress=False, pack="auto")
        seconds = time.perf_counter() - start
    found = kinds([line for r in results for line in r.fallbacks or []])
    return (f"end to end{kind}: {setup.name} at the {profile} profile, {len(results)} models with --pack auto: "
            f"{seconds:.0f} s wall; fallbacks: {', '.join(found) or 'none'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--profile", default="paper", choices=setups.PROFILES)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results", help="where gpu_check.json (read by `kdlib plan`) and "
                                                    "gpu_check_report.json go")
    p.add_argument("--budget", type=float, default=None,
                   help="wall-clock seconds from the start; optional sections that would not fit are skipped")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement (after warm-up)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--setups", nargs="*", default=list(SETUPS), help="the first is required, the rest optional")
    p.add_argument("--pack", default="seed", type=pack_option,
                   help="pack size timed: seed (one student seed's students: 7 at the paper's grid), auto (an eager "
                        "probe picks it), or a number")
    p.add_argument("--compile", default="on", choices=("on", "off"),
                   help="torch.compile solo runs and packs alike (off: both eager; compiling on a CPU takes minutes)")
    p.add_argument("--end-to-end", default="cpu", choices=setups.PROFILES + ("none",),
                   help="profile of the end-to-end tinyshakespeare-nanogpt run with --pack auto (none: skip)")
    args = p.parse_args()
    os.environ.setdefault("KDLIB_OFFLINE", "1")  # a GPU machine may have no network: never wait on a download
    out, device = Path(args.out), args.device
    report = Report(out / "gpu_check_report.json", args.budget)
    print(f"device {dev.name(device)}; {args.profile} profile; {args.steps} timed steps per measurement after "
          f"{args.warmup} warm-up; compile {args.compile}; budget "
          + ("none" if args.budget is None else f"{args.budget:g} s"))
    report.keep("device", dev.name(device))
    rates = matmul_rates(device)
    report.keep("matmul_rates", rates)
    start = time.monotonic()
    for line in pack_equals_one_by_one(device, "float64"):
        print(f"pack equals one by one, {line}")
        report.add("pack_equals", line)
    float64_seconds = time.monotonic() - start

    print(f"per model at the recipe's steps: alone (a plain and a KD member of the pack, each trained alone, weighted "
          f"as the pack holds them) and packed, both compile {args.compile}, the same teacher and precision; TFLOP/s "
          f"of the packed step against the matmul rate of the precision it trains in")
    widths = [max(len(c), 6) for c in COLUMNS]
    widths[0] = max(len(n) for n in [*args.setups, COLUMNS[0]])
    print(aligned(COLUMNS, widths))
    slowest = 0.0
    record = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").exists() else {}
    for i, name in enumerate(args.setups):
        if i and not report.allows(f"setup {name}", slowest):
            continue
        start = time.monotonic()
        torch._dynamo.reset()  # each setup compiles afresh, as in a process of its own
        setup = setups.get(name, args.profile)
        task, data = task_for(setup, args.data_dir)
        row, plan_record = measure_setup(setup, task, data, device, rates, args)
        dev.release(device)
        row["wall_s"] = time.monotonic() - start
        slowest = max(slowest, row["wall_s"])
        print(aligned(cells(row), widths))
        report.add("rows", row)
        record.setdefault(name, {})[args.profile] = plan_record
        write_json(out / "gpu_check.json", record)

    if not dev.is_cuda(device):
        for family in PACK_CHECK:
            print(f"pack equals one by one, {family} bf16: not run (bf16 autocast is CUDA's)")
    elif report.allows("the bf16 pack-equals check", 2 * float64_seconds):
        for line in pack_equals_one_by_one(device, "bf16"):
            print(f"pack equals one by one, {line}")
            report.add("pack_equals", line)
    if args.end_to_end != "none" and report.allows(f"end to end at the {args.end_to_end} profile", slowest):
        line = end_to_end(args.end_to_end, args.data_dir, device)
        print(line)
        report.keep("end_to_end", line)
    report.keep("seconds", report.elapsed())
    print(f"gpu check done in {report.elapsed():.0f} s; wrote {out / 'gpu_check.json'} and "
          f"{out / 'gpu_check_report.json'}")


if __name__ == "__main__":
    main()
