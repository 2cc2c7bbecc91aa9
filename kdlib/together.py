"""Train several same-architecture models together, one optimiser step for all of them per batch.

Where many small students share a GPU, one model per step leaves the device mostly idle (kernel launches
dominate); stacking K students' weights and running their forward passes as one vectorised call
(``torch.func.vmap`` over ``functional_call``) does K models' work per launch. Each model keeps everything
that defines its run in :func:`kdlib.train.train`: its own data-order generator and augmentation stream (so
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

import copy
import time

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from . import device as dev
from .conditions import packable_objectives
from .recipe import Recipe
from .models.attention import folding
from .train import Forward, LossMeter, Objective, TrainLog, check_teacher_source, derive_seeds, objective_loss


#: How far a bf16 pack may lie from its solo bf16 run, in units of how far bf16 moves that solo run from float32: a
#: pack computes in a solo run's dtypes but rounds in another order (batched products), another bf16 draw of the
#: same run, and two independent draws lie about sqrt(2) times as far apart as each from float32 (measured on the
#: emulated CUDA path: at most 1.04x, every packable family; tests/test_together.py, benchmarks/gpu_check.py).
BF16_DRAWS = 1.5


def check_packable(models: list[nn.Module], objectives: list[Objective], data_seeds: list[int]) -> None:
    if not models or not len(models) == len(objectives) == len(data_seeds):
        raise ValueError(f"need one objective and one data seed per model: got {len(models)} models, "
                         f"{len(objectives)} objectives, {len(data_seeds)} data seeds")
    allowed = packable_objectives()  # logit objectives; feature matching needs per-model hooks
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
                   precision: str | None = None) -> list[TrainLog]:
    """Train ``models`` in place, model ``k`` under ``objectives[k]`` with data-order seed ``data_seeds[k]``.

    Same contract as :func:`kdlib.train.train` per model; returns one train-loss curve per model. A
    non-finite loss raises FloatingPointError naming the model, so the caller can retrain the pack alone.
    Attention folds the pack into its batch (:func:`kdlib.models.attention.folding`): one fused kernel for
    all K models. ``compile``: the vectorised forward pass runs under ``torch.compile``."""
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
    skeleton = _solo_dtypes(dev.place(copy.deepcopy(models[0]), device).train())
    params, buffers = stack_module_state([dev.place(m, device) for m in models])
    cast_names = _autocast_cast_names(skeleton, params)
    if teacher is not None:
        dev.place(teacher, device).eval()
    if teacher_cache is not None:
        teacher_cache = teacher_cache.to(device)
    optimizer, scheduler = recipe.build(params.items(), fused=dev.fused_optimizer(device))

    def forward(p, b, x):
        return functional_call(skeleton, (_as_autocast_casts(p, cast_names, x.device.type), b), (x,),
                               tie_weights=False)

    logs, meter, start = [TrainLog() for _ in range(K)], LossMeter(K, device), time.perf_counter()
    batched = Forward(vmap(forward, randomness="different"), compile, logs[0].notes)
    kd = [k for k, o in enumerate(objectives) if o.kind == "kd"]
    kd_rows = torch.tensor(kd, device=device)  # on the device once: a list index would copy (and sync) each step
    with dev.seeded(shared_dropout_seed):
        streams = [data.batches(recipe.batch_size, recipe.steps, g) for g in generators]
        for step in tqdm(range(1, recipe.steps + 1), disable=not progress, desc=f"{K} models", leave=False):
            batches = _next_batches(streams, member_rng)
            idx = [b[0] for b in batches]
            x = dev.batch(torch.stack([b[1] for b in batches]), device)
            y = dev.batch(torch.stack([b[2] for b in batches]), device)
            live = None
            if kd and teacher_cache is None:  # one float32 teacher pass over every KD member's batch
                with torch.no_grad(), dev.float32_forward(device):
                    live = teacher(x.index_select(0, kd_rows).flatten(0, 1)).unflatten(0, (len(kd), -1))

            def step_losses():
                with dev.autocast(device, precision), folding():
                    logits = batched(params, buffers, x)
                    return torch.stack([
                        objective_loss(o, logits[k], x[k], y[k], *_teacher_source(k, idx, kd, teacher,
                                                                                   teacher_cache, live))
                        for k, o in enumerate(objectives)])
            losses = step_losses()
            optimizer.zero_grad(set_to_none=True)
            # the models share no weights: the sum gives each exactly its own loss's gradient
            losses = batched.backward(losses, lambda: optimizer.zero_grad(set_to_none=True) or step_losses())
            if recipe.grad_clip:
                _clip_per_model(list(params.values()), recipe.grad_clip)
            optimizer.step()
            scheduler.step()
            meter.add(losses, step)
            if step % log_every == 0 or step == recipe.steps:
                for log, loss in zip(logs, meter.read()):
                    log.steps.append(step)
                    log.losses.append(loss)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for k, model in enumerate(models):
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                tensor.copy_((params if name in params else buffers)[name][k])
    for log in logs:
        log.seconds = seconds / K  # each model's share of the pack's time
        log.notes = logs[0].notes
    return logs


def _solo_dtypes(skeleton: nn.Module) -> nn.Module:
    """The pack's layers compute in a solo run's dtypes (with :func:`_as_autocast_casts`), in place.

    BatchNorm computes in its running statistics' dtype (float32, or float64 in a float64 pack) and hands on its
    input's dtype: vmap's batching rule runs a stack of BatchNorms as one, with a dummy weight of the input's dtype
    beside the running statistics, which CPU's kernel rejects under bf16 autocast ("expected scalar type BFloat16
    but found Float"); a solo run's BatchNorm reads and writes bf16, computing in float32 inside, as this does.
    A convolution's input is cast to autocast's dtype before vmap's batching rule sees it (autocast would cast it
    after, too late: the rule's kernel rejects float32 input beside a bf16 bias). Without autocast every cast is a
    no-op: float32 and float64 packs keep their bits."""
    for module in skeleton.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.forward = _in_stats_dtype(module)
        elif isinstance(module, nn.modules.conv._ConvNd):
            module.forward = _input_in_autocast_dtype(module.forward)
    return skeleton


def _in_stats_dtype(module: nn.Module):
    forward = module.forward

    def run(x: torch.Tensor) -> torch.Tensor:
        return forward(x.to(module.running_mean.dtype)).to(x.dtype)
    return run


def _input_in_autocast_dtype(forward):
    def run(x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        return forward(x)
    return run


#: Modules whose own parameters feed the matrix products that autocast runs in its lower precision.
_LOWER_PRECISION = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention)


def _autocast_cast_names(skeleton: nn.Module, params: dict) -> dict[str, tuple[str, bool]]:
    """Every name of every parameter of ``skeleton`` (tied weights under each of their names), mapped to (the
    name it is stacked under in ``params``, whether autocast casts it where that name is used)."""
    canonical = {id(p): name for name, p in skeleton.named_parameters()}
    names = {}
    for module_name, module in skeleton.named_modules(remove_duplicate=False):
        for name, p in module.named_parameters(prefix=module_name, recurse=False, remove_duplicate=False):
            names[name] = (canonical[id(p)], isinstance(module, _LOWER_PRECISION)
                           and name.rpartition(".")[2] not in ("bias_k", "bias_v"))  # attention's extra keys
    assert {c for c, _ in names.values()} == set(params), "every stacked parameter is named"
    return names


def _as_autocast_casts(params: dict, names: dict, device_type: str) -> dict:
    """The parameters a packed forward pass uses: under autocast, those of linear layers, convolutions and attention
    projections cast to autocast's dtype beforehand. vmap's batched linear and convolution reach autocast as a
    matrix product plus a separate bias add: autocast casts the product, the float32 bias then promotes the sum,
    and every activation after it would stay float32 where a solo run's is bf16. Cast first, the pack's dtypes are
    a solo run's, layer by layer (``tests/test_together.py``); gradients flow back through the cast into the
    float32 weights, as autocast's own casts do. Outside autocast: the parameters as they are."""
    if not torch.is_autocast_enabled(device_type):
        return {name: params[c] for name, (c, _) in names.items()}
    dtype = torch.get_autocast_dtype(device_type)
    return {name: params[c].to(dtype) if cast and params[c].is_floating_point() else params[c]
            for name, (c, cast) in names.items()}


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


def _teacher_source(k: int, idx, kd: list[int], teacher, teacher_cache, live):
    """(index, teacher, cache) for model ``k``'s loss: the KD cache at its batch's examples, or its rows of
    the teacher outputs computed for the whole pack (passed as a cache indexed by its place among KD models)."""
    if live is not None and k in kd:
        return kd.index(k), None, live
    return idx[k], teacher, teacher_cache


def _clip_per_model(params: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` applied to each model of the stack on its own (leading dim = model)."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.reshape(len(g), -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))
