"""Per-model time of the paper profile of tinyshakespeare-nanogpt on this device, and the full-grid estimate.

Trains the paper-profile teacher and a few students (SIDDO, KD 0.9, RCD 0.9) for ``--steps`` of the recipe's
5000 iterations each, times them, and extrapolates to whole runs and to the 71-model grid of one teacher seed
(1 teacher + 10 student seeds x 7 conditions), and to all three teacher seeds (213 models). Then times the
seven students of one seed trained together (``--pack``, :mod:`kdlib.together`) against one by one.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import argparse
import time
from dataclasses import replace

import torch

from kdlib import setups
from kdlib.data import DatasetMissing, TaskData
from kdlib.data.text import char_task, load_tinyshakespeare
from kdlib.models import build
from kdlib.together import train_together
from kdlib.train import Objective, init_model, score, train

SEVEN = [Objective("ce")] + [Objective(kind, alpha=a) for a in (0.1, 0.5, 0.9) for kind in ("kd", "rcd")]


def task_for(data_dir, block_size: int) -> TaskData:
    try:
        return load_tinyshakespeare(data_dir, block_size=block_size)
    except DatasetMissing:
        print("tinyshakespeare.txt not found: timing on random characters of the same vocabulary and length")
        g = torch.Generator().manual_seed(0)
        vocab = "".join(chr(32 + i) for i in range(65))
        text = "".join(vocab[i] for i in torch.randint(65, (1_115_394,), generator=g).tolist())
        return char_task(text, block_size)


def _timed(device: str, fn) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def pack_seconds(make, teacher, data, recipe, device: str) -> float:
    """Training seconds per model when the seven students of one seed train together for ``recipe``."""
    models = [init_model(make, 0) for _ in SEVEN]
    return _timed(device, lambda: train_together(models, data, SEVEN, recipe, list(range(10, 17)), teacher=teacher,
                                                 device=device)) / len(SEVEN)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--steps", type=int, default=500, help="iterations timed per model (of the recipe's 5000)")
    p.add_argument("--profile", default="paper", choices=setups.PROFILES)
    args = p.parse_args()
    setup = setups.get("tinyshakespeare-nanogpt", args.profile)
    task = task_for(args.data_dir, setup.dataset_kwargs["block_size"])
    recipe = setup.student_recipe
    timed = replace(recipe, steps=min(args.steps, recipe.steps))
    make = lambda: build("gpt", task.num_classes, **setup.teacher.kwargs)
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}), "
          f"{sum(p.numel() for p in make().parameters()) / 1e6:.1f}M parameters, timing {timed.steps} of "
          f"{recipe.steps} iterations per model")
    teacher = init_model(make, 0)
    per_model, alone = {}, {}
    for name, objective in (("teacher (CE)", Objective("ce")), ("SIDDO", Objective("ce")),
                            ("KD 0.9", Objective("kd", alpha=0.9)), ("RCD 0.9", Objective("rcd", alpha=0.9))):
        model = teacher if name.startswith("teacher") else init_model(make, 0)
        train_s = _timed(args.device, lambda: train(model, task.train, objective, timed, data_seed=10,
                                                    device=args.device,
                                                    teacher=None if name.startswith("teacher") else teacher))
        train_s *= recipe.steps / timed.steps
        alone[name] = train_s
        start = time.perf_counter()
        score(model, task.test.eval_batches(setup.eval_batch_size), args.device)
        per_model[name] = train_s + time.perf_counter() - start
        print(f"  {name:14s} {per_model[name]:8.1f} s per full model (train extrapolated + evaluation)")
    student = (per_model["SIDDO"] + 3 * per_model["KD 0.9"] + 3 * per_model["RCD 0.9"]) / 7
    grid = per_model["teacher (CE)"] + 70 * student
    print(f"one teacher seed's grid (1 teacher + 70 students): {grid / 3600:.2f} h on one device; "
          f"all 3 teacher seeds (213 models): {3 * grid / 3600:.2f} h")
    one_by_one = (alone["SIDDO"] + 3 * alone["KD 0.9"] + 3 * alone["RCD 0.9"]) / 7
    packed = pack_seconds(make, teacher, task.train, timed, args.device) * recipe.steps / timed.steps
    packed_grid = grid - 70 * (one_by_one - packed)
    print(f"seven students of one seed trained together (--pack 7): {packed:.1f} s per model's training against "
          f"{one_by_one:.1f} s one by one: x{one_by_one / packed:.2f}; grid with packing {packed_grid / 3600:.2f} h")


if __name__ == "__main__":
    main()
