"""Training a pack of models together equals training them one by one (no dropout), to float rounding."""
import contextlib
import copy
import dataclasses

import pytest
from conftest import assert_pack_matches_members
import torch

from kdlib.models import build
from kdlib.models.packed import pack
from kdlib.models.gpt import GPT, GPTConfig
from kdlib.engine.together import BF16_DRAWS, train_together
from kdlib.data.sources import ExampleData, WindowData
from kdlib.engine.recipe import Recipe
from kdlib.engine.objectives import Objective
from kdlib.engine.train import init_model, train
from kdlib.engine.evaluate import teacher_logits_on

pytestmark = pytest.mark.kernels  # numeric tolerances: CI runs them on a second kernel path too

NO_DROPOUT = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
MIXED = [Objective("ce"), Objective("kd", alpha=0.5, temperature=2.0), Objective("rcd", alpha=0.9),
         Objective("ls", alpha=0.1), Objective("kd", alpha=0.9)]


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def one_by_one_and_together(start, data, objectives, recipe, seeds, **teacher):
    alone = [copy.deepcopy(start) for _ in objectives]
    logs = [train(m, data, o, recipe, s, **teacher) for m, o, s in zip(alone, objectives, seeds)]
    packed = [copy.deepcopy(start) for _ in objectives]
    packed_logs = train_together(packed, data, objectives, recipe, seeds, **teacher)
    return alone, logs, packed, packed_logs


def assert_same_runs(alone, logs, packed, packed_logs):
    for k, (a, b) in enumerate(zip(alone, packed)):
        sa, sb = state(a), state(b)
        assert sa.keys() == sb.keys()
        for name in sa:
            torch.testing.assert_close(sb[name], sa[name], rtol=1e-3, atol=1e-4, msg=f"model {k}: {name}")
        assert packed_logs[k].steps == logs[k].steps
        torch.testing.assert_close(torch.tensor(packed_logs[k].losses), torch.tensor(logs[k].losses),
                                   rtol=1e-5, atol=1e-6)


def test_gpt_pack_with_a_live_teacher_and_clipping_equals_one_by_one():
    tokens = torch.randint(11, (3000,), generator=torch.Generator().manual_seed(0))
    data = WindowData(tokens, NO_DROPOUT.block_size)
    teacher = init_model(lambda: GPT(NO_DROPOUT), 99).eval()
    start = init_model(lambda: GPT(NO_DROPOUT), 0)
    recipe = Recipe("adamw", lr=3e-3, batch_size=4, steps=7, weight_decay=0.1, grad_clip=0.5, schedule="cosine")
    runs = one_by_one_and_together(start, data, MIXED, recipe, [10, 11, 12, 13, 14], teacher=teacher)
    assert_same_runs(*runs)
    alone, _, packed, _ = runs
    assert not torch.equal(state(alone[0])["wte.weight"], state(alone[1])["wte.weight"])  # the runs differ
    assert packed[0].lm_head.weight is packed[0].wte.weight  # weight tying survives


def test_batchnorm_pack_with_a_teacher_cache_equals_one_by_one():
    g = torch.Generator().manual_seed(1)
    data = ExampleData(torch.randn(64, 3, 8, 8, generator=g), torch.randint(10, (64,), generator=g))
    make = lambda: build("resnet18", 10, image_size=8, in_channels=3, width=4)
    teacher = init_model(make, 5)
    cache = teacher_logits_on(teacher, data, 16)
    recipe = Recipe("sgd", lr=0.01, batch_size=16, steps=6, momentum=0.9, weight_decay=5e-4, schedule="step",
                    milestones=(0.5,))
    runs = one_by_one_and_together(init_model(make, 0), data, MIXED[:3], recipe, [10, 11, 12],
                                   teacher_cache=cache)
    assert_same_runs(*runs)
    assert int(runs[2][0].bn1.num_batches_tracked) == 6  # BatchNorm statistics were tracked per model


def test_augmentation_from_the_global_rng_matches_each_solo_run():
    def noisy_flip(x, generator):  # draws from the global RNG, as torchvision's transforms do
        flip = torch.rand(len(x)) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x) + 0.05 * torch.randn_like(x)

    g = torch.Generator().manual_seed(2)
    data = ExampleData(torch.randn(64, 3, 8, 8, generator=g), torch.randint(10, (64,), generator=g),
                       augment=noisy_flip)
    make = lambda: build("resnet18", 10, image_size=8, in_channels=3, width=4)
    recipe = Recipe("adam", lr=1e-3, batch_size=16, steps=5)
    runs = one_by_one_and_together(init_model(make, 0), data, MIXED[:3], recipe, [10, 11, 12],
                                   teacher=init_model(make, 5).eval())
    assert_same_runs(*runs)


FAMILIES = {  # every packable family, without dropout, on inputs of its real layout
    "vgg19_bn": (lambda: build("vgg19_bn", 10, image_size=32, width=4, dropout=0.0), (3, 32, 32)),
    "vit": (lambda: build("vit", 10, image_size=32, width=16, depth=2, heads=2, dropout=0.0), (3, 32, 32)),
    "vggish": (lambda: build("vggish", 10, width=1 / 32, hidden=64, embedding=16), (1, 32, 63)),
    "ast": (lambda: build("ast", 10, n_mels=32, frames=63, embed_dim=16, depth=2, heads=2, patch=8, stride=8),
            (1, 32, 63)),
    "resnet18-blurpool": (lambda: build("resnet18", 10, image_size=16, width=8, blurpool=True), (3, 16, 16)),
}


def family_and_data(family):
    g = torch.Generator().manual_seed(3)
    if family.startswith("gpt"):  # gpt: nanoGPT's model; gpt-lecture: the lecture's (both GPT readings)
        config = dataclasses.replace(NO_DROPOUT, style=family.partition("-")[2] or "nanogpt")
        return lambda: GPT(config), WindowData(torch.randint(11, (3000,), generator=g), NO_DROPOUT.block_size)
    make, shape = FAMILIES.get(family) or (lambda: build("resnet18", 10, image_size=16, width=4), (3, 16, 16))
    return make, ExampleData(torch.randn(48, *shape, generator=g), torch.randint(10, (48,), generator=g))


ALL_FAMILIES = sorted({**FAMILIES, "gpt": None, "gpt-lecture": None, "resnet18": None})


def member_batches(data, K: int, batch_size: int = 8) -> torch.Tensor:
    """The inputs of a pack of ``K``, ``[K, batch_size, ...]``: a batch of ``data`` per member."""
    return torch.stack([next(data.batches(batch_size, 1, torch.Generator().manual_seed(k)))[1] for k in range(K)])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_packable_family_trains_packed_as_one_by_one(family):
    make, shape = FAMILIES[family]
    g = torch.Generator().manual_seed(3)
    data = ExampleData(torch.randn(48, *shape, generator=g), torch.randint(10, (48,), generator=g))
    teacher = init_model(make, 5).eval()
    # SGD: Adam would turn the float noise in a conv bias's (theoretically zero) gradient before BatchNorm into
    # full-size steps, so packed and solo runs would differ by amplified rounding, not by a bug
    recipe = Recipe("sgd", lr=0.05, momentum=0.9, batch_size=8, steps=4, grad_clip=1.0)
    runs = one_by_one_and_together(init_model(make, 0), data, MIXED[:4], recipe, [10, 11, 12, 13],
                                   teacher=teacher)
    assert_same_runs(*runs)


def test_packed_attention_folds_the_pack_into_one_fused_call(monkeypatch):
    """Inside a pack, attention is one plain SDPA call over K*B sequences (vmap's own SDPA batching is bypassed),
    and its gradients equal each model's own."""
    import torch.nn.functional as F
    from kdlib.models import attention as attn
    shapes = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(attn.F, "scaled_dot_product_attention",
                        lambda q, *a, **k: shapes.append(tuple(q.shape)) or real(q, *a, **k))
    models = [GPT(NO_DROPOUT) for _ in range(3)]
    data = WindowData(torch.randint(11, (500,)), 16)
    train_together(models, data, [Objective("ce")] * 3, Recipe("adam", lr=1e-3, batch_size=4, steps=1), [1, 2, 3])
    assert shapes and all(s == (3 * 4, 2, 16, 8) for s in shapes)  # K*B = 12 sequences, 2 heads, L 16, D 8


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_a_packed_model_computes_each_members_outputs_and_gradients(family):
    """In float64 a pack's forward pass is each member's own, and so are the gradients of each member's weights, in
    a plain model's state-dict names; each member's state dict loads into the plain model."""
    make, data = family_and_data(family)
    models = [init_model(make, seed).double() for seed in range(3)]
    x = member_batches(data, 3)
    x = x.double() if x.is_floating_point() else x
    packed = pack(models)
    assert_pack_matches_members(packed, models, x)
    for k, model in enumerate(models):
        plain = copy.deepcopy(model)
        plain.load_state_dict(packed.member_state(k))  # strict: the same keys and shapes
        for name, tensor in model.state_dict().items():  # BatchNorm's running statistics moved as the model's
            torch.testing.assert_close(plain.state_dict()[name], tensor, rtol=1e-12, atol=1e-12, msg=name)
    packed.eval()  # evaluation too: BatchNorm's running statistics, no dropout, no transformer fast path
    out = packed(x)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model.eval()(x[k]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_a_compiled_pack_is_one_graph_and_so_is_a_solo_forward_after_it(family):
    """What ``train_together(compile=True)`` compiles, the packed forward pass (its backward is derived from that
    graph), is one graph without breaks for every packable family: no vmap, autograd.Function or context variable
    in it. A compiled solo forward pass in the same process afterwards is one graph too (a pack through vmap
    marked the models' code to be skipped for the rest of the process)."""
    make, data = family_and_data(family)
    models = [init_model(make, seed) for seed in range(2)]
    x = member_batches(data, 2, 4)
    for model, inputs in ((pack(models), x), (models[0], x[0])):
        explained = torch._dynamo.explain(model)(inputs)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_a_packed_ast_interpolates_each_members_positions_for_longer_clips():
    """Clips longer than the AST was built for interpolate its positional embedding: per member in a pack."""
    models = [init_model(FAMILIES["ast"][0], seed).double() for seed in range(2)]
    x = torch.randn(2, 3, 1, 32, 127, dtype=torch.float64)  # 4 s clips into a model made for 1 s
    out = pack(models)(x)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model(x[k]), rtol=1e-12, atol=1e-12)


def test_a_pack_names_the_layer_it_cannot_hold():
    class Grouped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4)

        def forward(self, x):
            return self.norm(self.conv(x))
    with pytest.raises(ValueError, match=r"cannot pack norm.weight of GroupNorm \(shape \(4,\)\): packable are"):
        pack([Grouped(), Grouped()])
    models = [torch.nn.Sequential(torch.nn.Linear(3, 3)) for _ in range(2)]
    models[1].register_buffer("scale", torch.ones(1))
    models[0].register_buffer("scale", torch.zeros(1))
    with pytest.raises(ValueError, match="cannot pack buffer scale: it differs between the models"):
        pack(models)
    with pytest.raises(ValueError, match="cannot pack an Embedding with padding_idx, max_norm, scale_grad_by_freq"):
        pack([torch.nn.Sequential(torch.nn.Embedding(5, 2, scale_grad_by_freq=True)) for _ in range(2)])


def test_a_pack_writes_back_every_buffer_and_keeps_frozen_weights_frozen():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.frozen, self.linear = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
            self.frozen.requires_grad_(False)
            self.register_buffer("offset", torch.ones(3), persistent=False)

        def forward(self, x):
            return self.linear(self.frozen(x) + self.offset)
    models = [init_model(Model, seed) for seed in range(2)]
    packed = pack(models)
    assert [p.requires_grad for p in packed.parameters()] == [False, False, True, True]
    with torch.no_grad():
        packed.body.linear.weight.add_(1)
    packed.copy_into(models)
    assert torch.equal(models[1].linear.weight, packed.body.linear.weight[1])
    assert torch.equal(models[1].offset, torch.ones(3))


def test_pack_rejects_mixed_architectures_and_feature_objectives():
    a, b = GPT(NO_DROPOUT), GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16))
    data = WindowData(torch.randint(11, (500,)), 16)
    recipe = Recipe("adam", lr=1e-3, batch_size=2, steps=1)
    with pytest.raises(ValueError, match="share one architecture"):
        train_together([a, b], data, [Objective("ce")] * 2, recipe, [1, 2])
    with pytest.raises(ValueError, match=r"\['feature'\] cannot be trained together"):
        train_together([a], data, [Objective("feature", alpha=0.5, feature_layer="blocks.0")], recipe, [1])
    with pytest.raises(ValueError, match="one objective and one data seed per model"):
        train_together([a], data, [Objective("ce")] * 2, recipe, [1])


def test_pack_names_the_model_whose_loss_diverges():
    models = [GPT(NO_DROPOUT), GPT(NO_DROPOUT)]
    with torch.no_grad():
        models[1].lm_head.weight.fill_(float("nan"))
    data = WindowData(torch.randint(11, (500,)), 16)
    with pytest.raises(FloatingPointError, match="model 1 became nan at step 1"):
        train_together(models, data, [Objective("ce")] * 2, Recipe("adam", lr=1e-3, batch_size=2, steps=2), [1, 2])


# ----------------------------------------------------------------------------- packs of runs


def test_packs_group_students_that_can_share_a_step():
    from kdlib import setups
    from kdlib.runs.spec import RunSpec, packs, plan
    students = [s for s in plan(setups.get("tinyshakespeare-nanogpt", "smoke")) if s.role == "student"]
    jobs = packs(students, 4)
    assert [len(j) if isinstance(j, tuple) else 1 for j in jobs] == [4, 4, 3, 3]  # 14 split evenly: two shapes
    sizes = lambda n, size: [len(j) for j in packs(students[:n], size)]
    assert sizes(14, 5) == [5, 5, 4] and sizes(14, 7) == [7, 7] and sizes(13, 13) == [13]
    assert sorted(s.run_id for j in jobs for s in j) == sorted(s.run_id for s in students)
    assert packs(students, 1) == students
    feature = [s for s in plan(setups.get("tinyshakespeare-nanogpt-featuremap-block4", "smoke"))
               if s.role == "student"]
    jobs = packs(feature, 8)
    alone = [j for j in jobs if isinstance(j, RunSpec)]
    assert {s.condition for s in alone} == {"kd", "rcd"} and all(s.feature_layer for s in alone)
    with pytest.raises(ValueError, match="pack size 0 is not allowed"):
        packs(students, 0)
    from kdlib.runs.run import run_pack
    pico = [s for s in plan(setups.get("tinyshakespeare-nanogpt-to-picogpt", "smoke")) if s.role == "student"]
    with pytest.raises(ValueError, match="cannot train together"):
        run_pack([students[0], pico[0]], plan(setups.get("tinyshakespeare-nanogpt", "smoke"))[0], "unused")


@pytest.mark.slow
def test_packed_setup_matches_one_by_one_and_resumes(tmp_path, data_dir, smoke_store):
    import pandas as pd
    from kdlib import setups
    from kdlib.runs.spec import plan
    from kdlib.store import read_result
    from kdlib.analysis.collect import collect
    from kdlib.runs.setup import run_setup
    setup = setups.get("digits-resnet18", "smoke")  # no dropout, no augmentation: packing changes nothing
    run_setup(setup, tmp_path / "packed", data_dir, progress=False, pack=5, launcher="local", workers=2)
    alone = collect(setup, smoke_store, write=False)[0]  # the session's one-by-one runs
    packed = collect(setup, tmp_path / "packed", write=False)[0]
    assert set(packed["pack_size"]) == {5, 4} and set(alone["pack_size"]) == {1}
    drop = ["train_seconds", "pack_size"]
    pd.testing.assert_frame_equal(packed.drop(columns=drop), alone.drop(columns=drop), rtol=1e-3, atol=1e-4)
    result = read_result(tmp_path / "packed", plan(setup)[1])
    assert plan(setup)[1].run_id in result["pack"] and len(result["pack"]) == 5
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "packed" / "runs").glob("*/result.json")}
    run_setup(setup, tmp_path / "packed", data_dir, progress=False, pack=5)  # resumes: trains nothing
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "packed" / "runs").glob("*/result.json")}


def test_a_diverging_member_is_retrained_alone_and_recorded(tmp_path, data_dir, monkeypatch):
    from kdlib.runs import run as runs_mod
    from kdlib import setups
    from kdlib.runs.spec import plan
    from kdlib.store import read_result
    from kdlib.runs.setup import run_setup
    setup = setups.get("tinyshakespeare-nanogpt", "smoke")
    real = runs_mod.train

    def diverge(model, data, objective, recipe, data_seed, **kw):
        if objective.kind == "rcd" and objective.alpha == 0.5 and data_seed == 10:
            raise FloatingPointError("loss became inf at step 2")
        return real(model, data, objective, recipe, data_seed, **kw)

    def pack_diverges(models, data, objectives, recipe, data_seeds, **kw):
        raise FloatingPointError("loss of model 3 became inf at step 2")

    monkeypatch.setattr(runs_mod, "train", diverge)
    monkeypatch.setattr(runs_mod, "train_together", pack_diverges)
    run_setup(setup, tmp_path, data_dir, progress=False, pack=7)
    results = {s.run_id: read_result(tmp_path, s) for s in plan(setup)}
    failed = [r for r in results.values() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["spec"]["condition"] == "rcd" and "diverged" in failed[0]["reason"]
    assert all("pack" not in r for r in results.values())  # the pack fell back to one-by-one training


# ----------------------------------------------------------------------------- the CUDA path, emulated on CPU


@contextlib.contextmanager
def cuda_like_autocast():
    """bf16 autocast on CPU with CUDA's cast list for ``aten::convolution``: vmap turns a pack's conv2d into a
    batched ``convolution``, which CUDA's autocast casts to bf16 and CPU's lets through in float32."""
    table = torch._C._dispatch_dump_table("aten::convolution")
    assert "AutocastCUDA: registered" in table and "AutocastCPU: fallthrough" in table  # what this emulates
    lib = torch.library.Library("aten", "IMPL")

    def convolution(input, weight, bias, *args):
        cast = lambda t: t.to(torch.bfloat16) if t is not None and t.dtype == torch.float32 else t
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)):
            return torch.ops.aten.convolution(cast(input), cast(weight), cast(bias), *args)
    lib.impl("convolution", convolution, "AutocastCPU")
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    finally:
        lib._destroy()


def flat(model):
    return torch.cat([v.float().flatten() for v in state(model).values() if v.is_floating_point()])


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_a_bf16_pack_is_as_close_to_one_by_one_as_bf16_rounding_allows(family, monkeypatch):
    """What a CUDA pack runs (bf16 autocast with CUDA's cast list, fused optimiser steps), on CPU. A pack computes in
    a solo run's dtypes (the test below) but rounds in another order (batched products), so it is another bf16 draw
    of the same run: each packed model's weights and losses must differ from its solo bf16 run by at most what
    bf16 moves that run from float32, times ``BF16_DRAWS`` (the objectives' losses differ far more: a mix-up
    fails)."""
    from kdlib.engine import device as dev
    make, data = family_and_data(family)
    # SGD, as above: Adam's normalised steps turn rounding in near-zero gradients into full-size steps
    recipe = Recipe("sgd", lr=0.05, momentum=0.9, batch_size=8, steps=3, grad_clip=1.0)
    start, teacher, seeds = init_model(make, 0), init_model(make, 5).eval(), [10, 11, 12]
    fp32 = [copy.deepcopy(start) for _ in seeds]
    fp32_logs = [train(model, data, objective, recipe, seed, teacher=teacher)
                 for model, objective, seed in zip(fp32, MIXED, seeds)]
    monkeypatch.setattr(dev, "fused_optimizer", lambda device: True)
    with cuda_like_autocast():
        alone, logs, packed, packed_logs = one_by_one_and_together(start, data, MIXED[:3], recipe, seeds,
                                                                   teacher=teacher)
    for k in range(len(seeds)):
        weights_moved = (flat(alone[k]) - flat(fp32[k])).norm()
        assert weights_moved > 0  # the solo runs were bf16
        assert (flat(packed[k]) - flat(alone[k])).norm() <= BF16_DRAWS * weights_moved, k
        solo, pack, float32 = (torch.tensor(log.losses) for log in (logs[k], packed_logs[k], fp32_logs[k]))
        assert ((pack - solo).abs() <= BF16_DRAWS * (solo - float32).abs() + 1e-4).all(), (k, pack, solo, float32)


def output_dtypes(model: torch.nn.Module, seen: dict) -> None:
    """Record the dtype of every submodule's first output in ``seen`` (by name) from now on."""
    def hook(name):
        def record(module, args, out):
            seen.setdefault(name, (out if torch.is_tensor(out) else out[0]).dtype)
        return record
    for name, module in model.named_modules():
        if name:
            module.register_forward_hook(hook(name))


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_a_bf16_pack_computes_in_a_solo_runs_dtypes_layer_by_layer(family, monkeypatch):
    """Under CUDA's autocast (emulated), every layer of a packed model hands on the dtype the same layer hands on in a
    solo run: bf16 after linear layers, convolutions, attention and BatchNorm, float32 after LayerNorm and the
    embeddings. (Packs through vmap cast only the matrix product of a batched linear layer or convolution, and ran
    BatchNorm in float32: their activations were float32 throughout, about twice a solo run's memory traffic.)"""
    from kdlib.engine import together
    make, data = family_and_data(family)
    recipe = Recipe("sgd", lr=0.05, batch_size=8, steps=1)
    start, solo, seen = init_model(make, 0), {}, {}
    model = copy.deepcopy(start)
    output_dtypes(model, solo)
    monkeypatch.setattr(together, "pack", lambda models: output_dtypes(packed := pack(models), seen) or packed)
    with cuda_like_autocast():
        train(model, data, MIXED[0], recipe, 10)
        train_together([copy.deepcopy(start) for _ in range(2)], data, [MIXED[0], MIXED[3]], recipe, [10, 11])
    assert len(solo) > 10 and torch.bfloat16 in solo.values()  # the solo run was bf16: the comparison says something
    assert {name.removeprefix("body."): dtype for name, dtype in seen.items() if name != "body"} == solo


@pytest.mark.parametrize("family", [f for f in ALL_FAMILIES if not f.startswith("gpt")])
def test_a_channels_last_pack_computes_each_members_outputs(family):
    """CUDA places conv nets channels-last (:func:`kdlib.engine.device.place`); a pack of such models still computes each
    member's outputs. Forward only: torch 2.14.1's CPU channels-last convolution backward corrupts the heap (see
    kdlib.engine.device)."""
    make, data = family_and_data(family)
    models = [init_model(make, s).to(memory_format=torch.channels_last) for s in range(3)]
    x = torch.stack([data.x[:8]] * 3)
    out = pack(models)(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
    for k in range(3):
        torch.testing.assert_close(out[k], models[k](x[k].contiguous(memory_format=torch.channels_last)), rtol=1e-4,
                                   atol=1e-5)


def test_a_packs_member_losses_back_propagate_in_one_full_size_gradient_whatever_k():
    """Indexing each member's logits (``logits[k]``) made K full-size zero gradients and K-1 full-size sums in the
    backward pass (O(K^2) memory traffic at the logits' size); one ``unbind`` stacks the members' gradients once."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class FullSize(TorchDispatchMode):
        """Counts the tensors of the packed logits' size that ops create (views excluded)."""

        def __init__(self, numel):
            super().__init__()
            self.numel, self.ops = numel, []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if torch.is_tensor(out) and out.numel() == self.numel and not out._is_view():
                self.ops.append(str(func))
            return out

    data = WindowData(torch.randint(11, (500,), generator=torch.Generator().manual_seed(0)), 16)
    tiny = GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    counted = {}
    for K in (2, 8):
        with FullSize(K * 4 * 16 * 11) as mode:
            train_together([init_model(lambda: GPT(tiny), 0) for _ in range(K)], data, [Objective("ce")] * K,
                           Recipe("sgd", lr=0.05, batch_size=4, steps=1), list(range(K)))
        counted[K] = mode.ops
    assert len(counted[8]) == len(counted[2]) and "aten.select_backward.default" not in counted[8], counted
