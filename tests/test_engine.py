"""The GPU engine's parts, proven on the CPU: a pack never kills a setup run, no host sync per step (losses read at
logging steps only, divergence still caught with its step), torch.compile with an eager fallback, --pack auto."""
import json

import pytest
import torch

from kdlib.runs import autopack
from kdlib import setups
from kdlib.engine import device as dev
from kdlib.runs import run as runs_mod
from kdlib.data.sources import ExampleData, WindowData
from kdlib.models.gpt import GPT, GPTConfig
from kdlib.engine.recipe import Recipe
from kdlib.runs.spec import plan
from kdlib.store import read_result
from kdlib.runs.setup import run_setup
from kdlib.engine.train import LossMeter, init_model, train
from kdlib.engine.objectives import Objective

TINY = GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0)


def test_any_error_in_a_pack_falls_back_to_one_by_one_and_is_recorded(tmp_path, data_dir, monkeypatch):
    setup = setups.get("tinyshakespeare-nanogpt", "smoke")

    def broken_pack(*args, **kwargs):
        raise RuntimeError("LSE is not correctly aligned (strideH)")  # what vmap'd SDPA raised on an H200

    monkeypatch.setattr(runs_mod, "train_together", broken_pack)
    run_setup(setup, tmp_path, data_dir, progress=False, pack=7)
    students = [read_result(tmp_path, s) for s in plan(setup) if s.role == "student"]
    assert all(r["status"] == "ok" for r in students)
    assert all(r["pack_fallback"] == "RuntimeError: LSE is not correctly aligned (strideH)" for r in students)
    assert all("pack" not in r for r in students)


def test_loss_meter_reads_means_at_logging_steps_and_names_the_first_bad_step():
    meter = LossMeter(None, "cpu")
    for step, loss in enumerate([1.0, 2.0, 4.0], start=1):
        meter.add(torch.tensor(loss), step)
    assert meter.read() == [pytest.approx(7 / 3)]
    meter.add(torch.tensor(1.0), 4)
    meter.add(torch.tensor(float("inf")), 5)
    meter.add(torch.tensor(float("nan")), 6)
    with pytest.raises(FloatingPointError, match="loss became inf at step 5"):
        meter.read()
    pack = LossMeter(3, "cpu")
    pack.add(torch.tensor([1.0, float("nan"), 2.0]), 8)
    with pytest.raises(FloatingPointError, match="loss of model 1 became nan at step 8"):
        pack.read()


def test_train_reads_the_loss_on_the_host_only_at_logging_steps(monkeypatch):
    reads = []
    real = LossMeter.read
    monkeypatch.setattr(LossMeter, "read", lambda self: reads.append(self.count) or real(self))
    data = WindowData(torch.randint(11, (500,)), 16)
    log = train(init_model(lambda: GPT(TINY), 0), data, Objective("ce"), Recipe("adam", lr=1e-3, batch_size=2,
                                                                              steps=10), 1, log_every=4)
    assert log.steps == [4, 8, 10] and reads == [4, 4, 2]


def test_a_loss_that_diverges_between_logging_steps_still_fails_with_its_step():
    model = torch.nn.Linear(3, 2)
    data = ExampleData(torch.randn(16, 3), torch.zeros(16, dtype=torch.long))
    real_forward = model.forward
    calls = []

    def forward(x):  # finite for two steps, then NaN
        calls.append(1)
        out = real_forward(x)
        return out * float("nan") if len(calls) == 3 else out

    model.forward = forward
    with pytest.raises(FloatingPointError, match="loss became nan at step 3"):
        train(model, data, Objective("ce"), Recipe("sgd", lr=0.1, batch_size=4, steps=8), 0, log_every=5)


def test_compile_failure_falls_back_to_eager_with_a_fallback_line_and_the_same_bits(monkeypatch, capsys):
    def failing_compile(fn, *args, **kwargs):
        def compiled(*a):
            raise RuntimeError("inductor: no C++ compiler")
        return compiled

    data = WindowData(torch.randint(11, (500,), generator=torch.Generator().manual_seed(0)), 16)
    recipe = Recipe("adam", lr=1e-3, batch_size=2, steps=3)
    eager = init_model(lambda: GPT(TINY), 0)
    eager_log = train(eager, data, Objective("ce"), recipe, 1)
    monkeypatch.setattr(torch, "compile", failing_compile)
    fallback = init_model(lambda: GPT(TINY), 0)
    log = train(fallback, data, Objective("ce"), recipe, 1, compile=True)
    line = "kdlib fallback (compile): torch.compile failed (RuntimeError: inductor: no C++ compiler); trained eagerly"
    assert log.fallbacks == [line] and capsys.readouterr().err.count(line) == 1  # in the record, and said once
    assert log.losses == eager_log.losses
    for a, b in zip(eager.parameters(), fallback.parameters()):
        assert torch.equal(a, b)


def test_a_compile_failure_on_a_later_call_also_falls_back(monkeypatch, capsys):
    """torch.compile recompiles when shapes change (a shorter last batch): a failure then also trains eagerly."""
    from kdlib.engine.train import Forward
    calls = []

    def compiled_once(fn, *args, **kwargs):
        def compiled(*a):
            calls.append(len(calls))
            if len(calls) > 1:
                raise RuntimeError("inductor: recompilation failed")
            return fn(*a)
        return compiled
    monkeypatch.setattr(torch, "compile", compiled_once)
    fallbacks = []
    forward = Forward(lambda x: x + 1, True, fallbacks)
    assert forward(1) == 2 and not capsys.readouterr().err
    assert forward(2) == 3 and "kdlib fallback (compile)" in capsys.readouterr().err
    assert forward(3) == 4 and len(calls) == 2 and "recompilation failed" in fallbacks[0]


@pytest.mark.slow
def test_compiled_training_matches_eager_on_cpu():
    data = WindowData(torch.randint(11, (500,), generator=torch.Generator().manual_seed(0)), 16)
    recipe = Recipe("adam", lr=1e-3, batch_size=2, steps=3)
    eager, compiled = init_model(lambda: GPT(TINY), 0), init_model(lambda: GPT(TINY), 0)
    eager_log = train(eager, data, Objective("kd", alpha=0.5), recipe, 1, teacher=init_model(lambda: GPT(TINY), 9))
    log = train(compiled, data, Objective("kd", alpha=0.5), recipe, 1, teacher=init_model(lambda: GPT(TINY), 9),
                compile=True)
    assert not log.fallbacks, log.fallbacks  # it really compiled
    torch.testing.assert_close(torch.tensor(log.losses), torch.tensor(eager_log.losses), rtol=1e-4, atol=1e-5)
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_compile_option_is_on_for_cuda_only_by_default_and_checked():
    assert dev.use_compile("auto", "cuda") and not dev.use_compile("auto", "cpu")
    assert dev.use_compile("on", "cpu") and not dev.use_compile("off", "cuda")
    with pytest.raises(ValueError, match=r"compile='fast' is not allowed: use one of \['auto', 'on', 'off'\]"):
        dev.use_compile("fast", "cpu")


def test_choose_pack_grows_while_throughput_rises_and_stops_at_memory():
    seconds = {1: 1.0, 2: 1.1, 4: 1.3, 8: 2.5, 16: 5.2}  # models per second: 1, 1.8, 3.1, 3.2, 3.1
    best, tried = autopack.choose_pack(seconds.__getitem__, limit=16)
    assert best == 4 and list(tried) == [1, 2, 4, 8]  # 8 gains under 5% over 4: stop

    def oom_at_8(size):
        if size >= 8:
            raise dev.OutOfMemory("CUDA out of memory")
        return {1: 1.0, 2: 1.0, 4: 1.0}[size]
    best, tried = autopack.choose_pack(oom_at_8, limit=42)
    assert best == 4 and tried[8] == "out of memory"
    assert autopack.choose_pack(lambda k: 1.0, limit=3)[0] == 3  # never beyond the students a teacher has


def test_pack_auto_means_one_on_cpu_and_is_probed_once_then_remembered(tmp_path):
    setup = setups.get("tinyshakespeare-nanogpt", "smoke")
    assert autopack.pack_size(setup, tmp_path, None, "cpu", "auto") == 1
    assert autopack.pack_size(setup, tmp_path, None, "cpu", 3) == 3
    with pytest.raises(ValueError, match="pack=0 is not allowed"):
        autopack.pack_size(setup, tmp_path, None, "cpu", 0)
    calls = []
    measure = lambda k: calls.append(k) or 1.0 / k  # every doubling pays
    assert autopack.students_per_teacher(setup) == 2 * 7
    assert autopack.pack_size(setup, tmp_path, None, "cpu", "auto", measure=measure) == 14
    memo = json.loads((tmp_path / setup.name / "smoke" / autopack.MEMO).read_text())
    assert memo["cpu"]["pack"] == 14 and calls == [1, 2, 4, 8, 14]
    assert autopack.pack_size(setup, tmp_path, None, "cpu", "auto", measure=measure) == 14 and len(calls) == 5
    compiled = lambda k: calls.append(k) or (1.0 if k < 4 else 2.0)  # compiled packs: 2 is best
    assert autopack.pack_size(setup, tmp_path, None, "cpu", "auto", measure=compiled, compile=True) == 2
    memo = json.loads((tmp_path / setup.name / "smoke" / autopack.MEMO).read_text())
    assert memo["cpu"]["pack"] == 14 and memo["cpu compiled"]["pack"] == 2  # remembered apart


def test_the_pack_probe_measures_real_packs_on_cpu(data_dir):
    from kdlib.runs.run import load_task
    from kdlib.runs.spec import teacher_spec
    setup = setups.get("tinyshakespeare-nanogpt", "smoke")
    task = load_task(teacher_spec(setup, 0), data_dir)
    measure = autopack.measure_pack(setup, task, "cpu", warmup=1, steps=2)
    assert measure(1) > 0 and measure(3) > 0


def test_data_sources_stay_in_place_on_cpu():
    data = ExampleData(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    assert dev.resident(data, "cpu") is data and data.to("cpu") is data
    stream = WindowData(torch.arange(100), 8)
    assert dev.resident(stream, "cpu") is stream and stream.nbytes == 800


def test_full_precision_turns_off_cuda_autocast_and_tf32_and_restores_them():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available" on a CPU machine
        assert isinstance(dev.autocast("cuda", "bf16"), torch.autocast)
        tf32 = torch.backends.cudnn.allow_tf32
        with dev.full_precision():
            assert not isinstance(dev.autocast("cuda", "bf16"), torch.autocast)
            assert torch.backends.cudnn.allow_tf32 is False
        assert isinstance(dev.autocast("cuda", "bf16"), torch.autocast) and torch.backends.cudnn.allow_tf32 == tf32
    assert not isinstance(dev.autocast("cpu", "bf16"), torch.autocast)


def test_a_pack_probe_that_raises_anything_stops_at_the_size_before_and_says_why():
    def cublas_at_8(size):  # cuBLAS failing to allocate surfaces as a plain RuntimeError, not OutOfMemory
        if size >= 8:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)")
        return {1: 1.0, 2: 1.0, 4: 1.0}[size]
    best, tried = autopack.choose_pack(cublas_at_8, limit=42)
    assert best == 4 and tried[8].startswith("RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED")


class _FailsInBackward(torch.autograd.Function):
    """What a torch.compile whose backward graph fails to compile (lazily, at the first backward) looks like."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("inductor: backward graph failed to compile")


def test_a_compile_failure_in_backward_also_falls_back_to_eager(monkeypatch):
    data = WindowData(torch.randint(11, (500,), generator=torch.Generator().manual_seed(0)), 16)
    recipe = Recipe("adam", lr=1e-3, batch_size=2, steps=3)
    eager = init_model(lambda: GPT(TINY), 0)
    eager_log = train(eager, data, Objective("ce"), recipe, 1)
    monkeypatch.setattr(torch, "compile", lambda fn, *a, **k: lambda *args: _FailsInBackward.apply(fn(*args)))
    model = init_model(lambda: GPT(TINY), 0)
    log = train(model, data, Objective("ce"), recipe, 1, compile=True)
    assert "torch.compile failed in backward" in log.fallbacks[0] and "backward graph failed" in log.fallbacks[0]
    assert len(log.losses) == len(eager_log.losses)
    assert log.losses[-1] == pytest.approx(eager_log.losses[-1], rel=0.2)  # trained on, eagerly


def test_seeding_saves_and_restores_the_generators_of_every_device(monkeypatch):
    """torch.manual_seed reseeds every CUDA generator too: the seeded blocks fork (and so restore) all of them."""
    forked = []
    real = torch.random.fork_rng
    monkeypatch.setattr(dev, "_cuda_devices", lambda: [0, 1])
    monkeypatch.setattr(torch.random, "fork_rng", lambda devices=None, **k: forked.append(list(devices)) or
                        real(devices=[], **k))
    monkeypatch.setattr(torch, "manual_seed", lambda seed: torch.default_generator.manual_seed(seed))
    init_model(lambda: torch.nn.Linear(2, 2), 0)
    train(torch.nn.Linear(3, 2), ExampleData(torch.randn(8, 3), torch.zeros(8, dtype=torch.long)),
          Objective("ce"), Recipe("sgd", lr=0.1, batch_size=4, steps=1), 0)
    assert forked == [[0, 1], [0, 1]]
    states = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d: states.append(("get", d)) or torch.zeros(1))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: states.append(("set", d)))
    dev.set_rng_state(dev.rng_state())  # what a pack does around each member's batch
    assert states == [("get", 0), ("get", 1), ("set", 0), ("set", 1)]


@pytest.mark.parametrize("arch, kwargs, x", [
    ("gpt", dict(block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0, style="lecture"),
     lambda: torch.randint(11, (2, 16))),
    ("vit", dict(image_size=32, width=16, depth=1, heads=2), lambda: torch.randn(2, 3, 32, 32)),
    ("ast", dict(n_mels=32, frames=63, embed_dim=16, depth=1, heads=2, patch=8, stride=6),
     lambda: torch.randn(2, 1, 32, 63)),
])
def test_a_compiled_transformer_forward_is_one_graph(arch, kwargs, x):
    """An evaluating transformer is one graph: attention reads no context variable (torch 2.11's dynamo cannot
    trace ContextVar.get and broke every attention call out of the graph). Training, solo and packed:
    tests/test_together.py."""
    from kdlib.models import build
    model = build(arch, 11 if arch == "gpt" else 10, **kwargs).eval()
    explained = torch._dynamo.explain(model)(x())
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.slow
@pytest.mark.parametrize("family", ["conv", "gpt"])
def test_a_compiled_pack_trains_as_the_eager_pack(family):
    """A compiled pack (forward and backward graphs) of BatchNorm conv nets or of GPTs trains with no fallback note,
    as the eager pack does, to float rounding."""
    import copy
    from torch import nn
    from kdlib.engine.together import train_together
    g = torch.Generator().manual_seed(0)
    if family == "conv":
        data = ExampleData(torch.randn(32, 3, 8, 8, generator=g), torch.randint(10, (32,), generator=g))
        start = init_model(lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                                                 nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                                 nn.Linear(4, 10)), 0)
    else:
        data = WindowData(torch.randint(11, (500,), generator=g), 16)
        start = init_model(lambda: GPT(TINY), 0)
    objectives, recipe = [Objective("ce"), Objective("rcd", alpha=0.5)], Recipe("sgd", lr=0.05, batch_size=8, steps=2)
    eager, compiled = [copy.deepcopy(start) for _ in objectives], [copy.deepcopy(start) for _ in objectives]
    eager_logs = train_together(eager, data, objectives, recipe, [1, 2])
    logs = train_together(compiled, data, objectives, recipe, [1, 2], compile=True)
    assert not logs[0].fallbacks, logs[0].fallbacks
    for a, b in zip(eager, compiled):  # weights, and BatchNorm's running statistics (in-place updates of views)
        for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(tb, ta, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(torch.tensor(logs[0].losses), torch.tensor(eager_logs[0].losses), rtol=1e-5, atol=1e-6)


def test_a_later_pack_of_the_same_shape_reuses_the_compiled_graph_whatever_its_objectives():
    """``--compile`` makes one graph per pack shape, not per pack: the packed model is what compiles (the losses,
    whose constants differ from pack to pack, stay outside), so a grid's packs recompile nothing."""
    from torch._dynamo.utils import counters
    from kdlib.engine.together import train_together
    data = WindowData(torch.randint(11, (500,), generator=torch.Generator().manual_seed(0)), 16)
    teacher = init_model(lambda: GPT(TINY), 9).eval()
    graphs = []
    torch._dynamo.reset()  # what earlier tests compiled is not this test's
    for objectives in ([Objective("ce"), Objective("rcd", alpha=0.5)],
                       [Objective("kd", alpha=0.9, temperature=4.0), Objective("ls", alpha=0.1)],
                       [Objective("ls", alpha=0.2), Objective("kd", alpha=0.5, temperature=2.0)]):
        counters.clear()
        logs = train_together([init_model(lambda: GPT(TINY), 0) for _ in objectives], data, objectives,
                              Recipe("sgd", lr=0.05, batch_size=4, steps=2), [1, 2], teacher=teacher, compile=True)
        assert not logs[0].fallbacks, logs[0].fallbacks
        graphs.append((counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())))
    assert graphs == [(1, 0), (1, 0), (0, 0)]  # the second pack compiles only its live teacher's forward pass
