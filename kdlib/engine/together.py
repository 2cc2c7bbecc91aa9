"""Train several same-architecture models together, one optimiser step for all of them per batch.

Where many small students share a GPU, one model per step leaves the device mostly idle (kernel launches
dominate); one packed model (:func:`kdlib.models.packed.pack`: the K students' weights stacked in each layer,
their batches folded into one) does K models' work per launch, and compiles into one graph. Each model keeps everything
that defines its run in :func:`kdlib.engine.train.train`: its own data-order generator and augmentation stream (so
it sees exactly the batches it would see alone), its own objective (KD, RCD, SIDDO and label smoothing mix
freely in one pack), the same loss functions, and optimiser updates and gradient clipping that act per model.
Without dropout the result equals training the models one by one, to float rounding
(``tests/test_together.py``). With dropout, the masks come from one stream shared by the pack (seeded from the
members' data-order seeds), so a packed model is an equally valid draw of its run but not the same bits as its
solo run; runs record their pack.

On CPU, packing measured about as fast as one model after another (the models are already compute-bound
there); it is meant for GPUs. ``benchmarks/gpu_check.py`` measures both on a lent GPU.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import device as dev
from .recipe import Recipe
from ..models.packed import pack
from .checkpoint import Checkpoint, cpu
from .train import (Forward, LossMeter, TrainLog, derive_seeds, log_state, open_stream, optimizer_step, restore,
                    resumed_log, stream_state)
from .objectives import OBJECTIVES, Objective, check_teacher_source, objective_loss


#: How far a bf16 pack may lie from its solo bf16 run, in units of how far bf16 moves that solo run from float32: a
#: pack computes in a solo run's dtypes but rounds in another order (batched products), another bf16 draw of the
#: same run, and two independent draws lie about sqrt(2) times as far apart as each from float32 (measured on the
#: emulated CUDA path: at most 1.02x, every packable family; tests/test_together.py, benchmarks/gpu_check.py).
BF16_DRAWS = 1.5


def check_packable(models: list[nn.Module], objectives: list[Objective], data_seeds: list[int]) -> None:
    if not models or not len(models) == len(objectives) == len(data_seeds):
        raise ValueError(f"need one objective and one data seed per model: got {len(models)} models, "
                         f"{len(objectives)} objectives, {len(data_seeds)} data seeds")
    allowed = [kind for kind, row in OBJECTIVES.items() if row.packable]  # feature maps need per-model hooks
    bad = [o.kind for o in objectives if o.kind not in allowed]
    if bad:
        raise ValueError(f"objectives {bad} cannot be trained together: allowed are {list(allowed)}")
    shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("models trained together must share one architecture (same parameter names and shapes)")


def train_together(models: list[nn.Module], data, objectives: list[Objective], recipe: Recipe,
                   data_seeds: list[int], *, teacher: nn.Module | None = None,
                   teacher_cache: torch.Tensor | None = None, device: str = "cpu", log_every: int = 10,
                   progress: bool = False, compile: bool = False,
                   precision: str | None = None, checkpoint: Checkpoint | None = None,
                   on_log: Callable[[int, list[float]], None] | None = None) -> list[TrainLog]:
    """Train ``models`` in place, model ``k`` under ``objectives[k]`` with data-order seed ``data_seeds[k]``.

    Same contract as :func:`kdlib.engine.train.train` per model (``precision``, ``checkpoint`` and ``on_log``, which
    gets the members' losses, too, except that
    an fp16 pack shares one GradScaler, so a step that overflows in one member is skipped for all); returns one
    train-loss curve per model. A non-finite loss raises FloatingPointError naming the model, so the caller can
    retrain the pack alone; so does a ValueError from :func:`~kdlib.models.packed.pack` for a layer a pack cannot
    hold. ``compile``: the packed forward pass (and a live teacher's) runs under ``torch.compile``, as a solo run's
    does: one graph, its backward derived from it, which later packs of the same shape reuse (the losses, whose
    constants differ from pack to pack, would recompile it for each)."""
    check_packable(models, objectives, data_seeds)
    check_teacher_source(objectives, data, teacher, teacher_cache)
    K = len(models)
    seeds = [derive_seeds(s, 2) for s in data_seeds]
    generators = [torch.Generator().manual_seed(order) for order, _ in seeds]
    shared_dropout_seed = int(np.random.SeedSequence([d for _, d in seeds]).generate_state(1, np.uint64)[0] >> 1)
    # Augmentations that draw from the global RNG see, per model, the stream its solo run would give them.
    member_rng = []
    for _, dropout_seed in seeds:
        with dev.seeded(dropout_seed):
            member_rng.append(dev.rng_state())
    data = dev.resident(data, device)
    packed = pack([dev.place(m, device) for m in models])
    if teacher is not None:
        dev.place(teacher, device).eval()
    if teacher_cache is not None:
        teacher_cache = teacher_cache.to(device)
    optimizer, scheduler = recipe.build(packed.body.named_parameters(), fused=dev.fused_optimizer(device))
    saved = checkpoint.load() if checkpoint is not None else None
    log = resumed_log(saved) if saved else TrainLog()  # the pack's: its fallbacks and notes are every member's
    meter = LossMeter(K, device)
    curves = [list(c) for c in saved["curves"]] if saved else [[] for _ in range(K)]
    kd = [k for k, o in enumerate(objectives) if o.row.teacher == "logits"]  # members that read the teacher's logits
    # KD members of one data-order seed (a seed's KD at every alpha) see the same batches: the teacher's logits on
    # them are computed once, on the first such member's batch, and read by all
    first = {}
    for k in kd:
        first.setdefault(data_seeds[k], k)
    seen = list(first.values())  # the KD members whose batches the teacher sees
    target_row = {k: seen.index(first[data_seeds[k]]) for k in kd}
    kd_rows = torch.tensor(seen, device=device)  # on the device once: a list index would copy (and sync) each step

    # compiled, the packed model is one graph that every later pack of its shape reuses, whatever its objectives
    forward = Forward(packed, compile, log.fallbacks)
    live = Forward(teacher, compile, log.fallbacks) if teacher is not None and kd else None
    weights = list(packed.parameters())
    clip = (lambda: _clip_per_model(weights, recipe.grad_clip)) if recipe.grad_clip else None
    mixed = dev.amp(device, precision)
    scaler = mixed.grad_scaler()  # one loss scale for the pack: an overflow in any member skips the pack's step
    first, start = restore(saved, packed, optimizer, scheduler, scaler, meter)
    if saved:
        member_rng = list(saved["member_rng"])
    with dev.seeded(shared_dropout_seed):
        opened = [open_stream(data, recipe.batch_size, recipe.steps, g, saved and saved["streams"][k])
                  for k, g in enumerate(generators)]
        streams, positions = [s for s, _ in opened], [p for _, p in opened]
        if saved:
            dev.set_rng_state(saved["rng"])
        for step in tqdm(range(first, recipe.steps + 1), initial=first - 1, total=recipe.steps,
                         disable=not progress, desc=f"{K} models", leave=False):
            batches = _next_batches(streams, member_rng)
            x = dev.batch(torch.stack([b[1] for b in batches]), device)
            y = dev.batch(torch.stack([b[2] for b in batches]), device)
            with mixed.steps():  # a live teacher's targets in the step's precision, as a solo run's
                targets = _kd_targets(seen, kd_rows, x, [b[0] for b in batches], live, teacher_cache)

            def step_losses():
                with mixed.steps():
                    members = forward(x).unbind(0)  # one view per member: their gradients stack back in one copy
                    return torch.stack([objective_loss(o, members[k], x[k], y[k], *_teacher_rows(k, target_row, targets))
                                        for k, o in enumerate(objectives)])
            # the models share no weights: the sum of their losses gives each exactly its own loss's gradient
            meter.add(optimizer_step(forward, step_losses, optimizer, scheduler, clip, scaler), step)
            if step % log_every == 0 or step == recipe.steps:
                losses = meter.read()
                for curve, loss in zip(curves, losses):
                    curve.append((step, loss))
                if on_log is not None:
                    on_log(step, losses)
            if checkpoint is not None and step < recipe.steps and checkpoint.due():
                checkpoint.save(cpu({
                    "step": step, "seconds": time.perf_counter() - start, "model": packed.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": None if scaler is None else scaler.state_dict(), "rng": dev.rng_state(),
                    "member_rng": member_rng, "meter": meter.state(), "log": log_state(log),
                    "curves": curves, "streams": [stream_state(step, g, p) for g, p in zip(generators, positions)]}))
    seconds = time.perf_counter() - start
    packed.copy_into(models)
    return [TrainLog([s for s, _ in curve], [loss for _, loss in curve], seconds / K,  # each model's share
                     list(log.notes), list(log.fallbacks)) for curve in curves]


def _next_batches(streams, member_rng: list[torch.Tensor]) -> list:
    """The next batch of every model, each drawn under that model's own global-RNG state."""
    shared, batches = dev.rng_state(), []
    for k, stream in enumerate(streams):
        dev.set_rng_state(member_rng[k])
        batch = next(stream, None)
        if batch is None:
            raise ValueError(f"the data of model {k} ran out of batches before the recipe's steps")
        batches.append(batch)
        member_rng[k] = dev.rng_state()
    dev.set_rng_state(shared)
    return batches


def _kd_targets(seen: list[int], kd_rows: torch.Tensor, x: torch.Tensor, idx: list, live, teacher_cache):
    """The teacher's logits on the batches of the KD members ``seen`` (one per data-order seed), ``[len(seen), B,
    ...]`` in float32 (None without KD members): the cache at their batches' examples, or one pass of the live
    teacher over all their batches (in the caller's autocast: the step's precision)."""
    if not seen:
        return None
    if teacher_cache is not None:
        return torch.stack([teacher_cache[idx[k]] for k in seen])
    with torch.no_grad():
        return live(x.index_select(0, kd_rows).flatten(0, 1)).float().unflatten(0, (len(seen), -1))


def _teacher_rows(k: int, target_row: dict[int, int], targets):
    """(index, teacher, cache) for model ``k``'s loss: a KD member's rows of the pack's teacher targets (passed as a
    cache indexed by the row of its batch); nothing for the others."""
    return (target_row[k], None, targets) if k in target_row else (None, None, None)


def _clip_per_model(params: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` applied to each model of the stack on its own (leading dim = model)."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.reshape(len(g), -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))
