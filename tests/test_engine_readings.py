"""The engine's side of the readings: FFCV's fp16 with a GradScaler, FFCV's flip (a sum), students initialised from
their own seed, the feature-map projection for a narrower student, RCD's M0 feature target, and the teachers'
training-loop metrics. Each number is checked against an independent computation."""
import copy
import shutil
import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdlib import setups
from kdlib.data.sources import ExampleData, WindowData
from kdlib.engine import device as dev
from kdlib.engine.evaluate import evaluate, predict, score
from kdlib.engine.objectives import Objective
from kdlib.engine.recipe import Recipe
from kdlib.engine.together import train_together
from kdlib.engine.device import Amp, amp
from kdlib.engine.train import derive_seeds, epoch_length, feature_projection, init_model, train
from kdlib.models import build
from kdlib.models.gpt import GPT, GPTConfig
from kdlib.runs import run as runs
from kdlib.runs.spec import RunSpec, plan
from kdlib.runs.workspace import Workspace
from kdlib.store import RunResult, read_result, run_dir, write_json

pytestmark = pytest.mark.kernels  # bit-for-bit comparisons: CI runs them on a second kernel path too

TINY = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1)


def tokens(n=3000, seed=0):
    return torch.randint(11, (n,), generator=torch.Generator().manual_seed(seed))


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- 1. fp16 with a GradScaler

def test_amp_picks_autocast_dtype_and_scaler_per_device_and_precision():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available": the plan is pure, nothing runs on CUDA
        assert amp("cuda", "fp16-scaler") == Amp("cuda", torch.float16, True, torch.float16)  # FFCV's ImageNet
        assert amp("cuda:1", "fp16-scaler") == Amp("cuda", torch.float16, True, torch.float16)
        assert amp("cuda", "bf16") == Amp("cuda", torch.bfloat16, False, None)  # bf16 steps, float32 evaluation
        assert amp("cuda", "float32") == Amp("cuda")
        assert amp("cuda", None) == Amp("cuda")  # None: float32, PyTorch's default
        with dev.full_precision():  # a pack checked against solo runs trains in float32 whatever the precision
            assert amp("cuda", "fp16-scaler") == Amp("cuda") and amp("cuda", "bf16") == Amp("cuda")
        for precision in (None, "float32", "fp16-scaler"):
            assert amp("cpu", precision) == Amp("cpu")  # the CPU is float32 throughout
        with pytest.raises(ValueError, match="fp8"):
            amp("cuda", "fp8")
        assert isinstance(Amp("cuda", torch.float16, True).grad_scaler(), torch.amp.GradScaler)
    assert amp("cpu", "fp16-scaler").grad_scaler() is None


def test_fp16_scaler_on_cpu_trains_and_evaluates_bit_identical_to_float32():
    """One model and a pack of two, with dropout and gradient clipping, and their evaluation."""
    data = WindowData(tokens(), TINY.block_size)
    recipe = Recipe("adam", lr=1e-2, batch_size=4, steps=5, grad_clip=0.5)
    x = tokens(64, 1).view(4, 16)
    runs = {}
    for precision in ("float32", "fp16-scaler"):
        solo = init_model(lambda: GPT(TINY), 0)
        log = train(solo, data, Objective("ce"), recipe, 10, precision=precision, log_every=1)
        pack = [init_model(lambda: GPT(TINY), 0) for _ in range(2)]
        logs = train_together(pack, data, [Objective("ce"), Objective("rcd", alpha=0.5)], recipe, [10, 11],
                              precision=precision, log_every=1)
        logits, metrics = score(solo, [(x, x)], precision=precision)
        runs[precision] = (solo, log.losses, pack, [lg.losses for lg in logs], logits, metrics)
    (a, la, pa, pla, za, ma), (b, lb, pb, plb, zb, mb) = runs["float32"], runs["fp16-scaler"]
    assert not torch.equal(flat(a), flat(init_model(lambda: GPT(TINY), 0)))  # it trained
    assert same_state(a, b) and la == lb
    assert all(same_state(m, n) for m, n in zip(pa, pb)) and pla == plb
    assert torch.equal(za, zb) and ma == mb


class RecordingScaler(torch.amp.GradScaler):
    """A GradScaler that records its calls in order (a class attribute, reset by the test)."""
    calls: list = []

    def scale(self, outputs):
        self.calls.append("scale")
        return super().scale(outputs)

    def unscale_(self, optimizer):
        self.calls.append("unscale_")
        return super().unscale_(optimizer)

    def step(self, optimizer, *args, **kwargs):
        self.calls.append("step")
        return super().step(optimizer, *args, **kwargs)

    def update(self, new_scale=None):
        self.calls.append("update")
        return super().update(new_scale)


def test_the_scaler_scales_the_loss_and_unscales_before_clipping(monkeypatch):
    """The GradScaler path of a CUDA fp16 run, on CPU in float32: its power-of-two scale is exact, so a run through it
    equals the unscaled float32 run bit for bit, but only if the gradients are unscaled before they are clipped (a
    clip of the scaled gradients would shrink them 65,536 times too much)."""
    scaled = lambda device, precision: Amp("cpu", scaler=precision == "fp16-scaler")
    monkeypatch.setattr(dev, "amp", scaled)  # what train, train_together and evaluation ask
    monkeypatch.setattr(torch.amp, "GradScaler", RecordingScaler)
    data = WindowData(tokens(), TINY.block_size)
    recipe = Recipe("sgd", lr=0.5, momentum=0.9, batch_size=4, steps=3, grad_clip=0.1)
    models = {}
    for precision in ("float32", "fp16-scaler"):
        RecordingScaler.calls = []
        solo = init_model(lambda: GPT(TINY), 0)
        train(solo, data, Objective("ce"), recipe, 10, precision=precision)
        pack = [init_model(lambda: GPT(TINY), 0) for _ in range(2)]
        train_together(pack, data, [Objective("ce")] * 2, recipe, [10, 11], precision=precision)
        models[precision] = (solo, pack, RecordingScaler.calls)
    assert models["float32"][2] == []
    assert models["fp16-scaler"][2] == ["scale", "unscale_", "step", "update"] * 6  # 3 solo steps, 3 packed
    assert same_state(models["float32"][0], models["fp16-scaler"][0])
    assert all(same_state(a, b) for a, b in zip(models["float32"][1], models["fp16-scaler"][1]))


def test_the_emulated_cuda_fp16_path_trains_and_evaluates_under_fp16_with_float32_metrics(monkeypatch):
    """What a CUDA fp16-scaler run computes, emulated by CPU's fp16 autocast: training steps in fp16 (weights near the
    float32 run's, not equal), evaluation forwards in fp16, the logits handed to the metrics float32."""
    fp16 = lambda device, precision: Amp("cpu", torch.float16, True, torch.float16)
    data = WindowData(tokens(), TINY.block_size)
    recipe = Recipe("adam", lr=1e-3, batch_size=4, steps=4, grad_clip=1.0)
    reference = init_model(lambda: GPT(TINY), 0)
    train(reference, data, Objective("ce"), recipe, 10)
    monkeypatch.setattr(dev, "amp", fp16)
    model, seen = init_model(lambda: GPT(TINY), 0), []
    handle = model.lm_head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    train(model, data, Objective("ce"), recipe, 10)
    x = tokens(64, 1).view(4, 16)
    logits = predict(model, [(x, x)], precision="fp16-scaler")
    handle.remove()
    assert set(seen) == {torch.float16} and len(seen) == recipe.steps + 1
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    moved = (flat(model) - flat(reference)).abs().max()
    assert 0 < moved < 1e-2


# ----------------------------------------------------------------------------- 2. FFCV's flip: a sum

def test_eval_flip_sums_the_logits_of_the_image_and_its_flip():
    model = init_model(lambda: build("resnet18", 4, image_size=32, width=4), 0).eval()
    x, y = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3, 0])
    with torch.no_grad():
        plain, flipped = model(x), model(torch.flip(x, dims=[3]))  # FFCV: output += model(ch.flip(images, dims=[3]))
    expected = plain + flipped
    assert torch.equal(predict(model, [(x, y)], flip=True), expected)
    logits, metrics = score(model, [(x, y)], flip=True)
    assert torch.equal(logits, expected)
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(expected.double(), y)), rel=1e-6)
    comparison = evaluate(model, [(x, y)], expected, flip=True).result()
    assert comparison["prediction_agreement"] == 1.0 and comparison["activation_distance"] == 0.0


# ----------------------------------------------------------------------------- 3. students from their own seed

def student_spec(condition: str, student_seed: int, init: str = "student-seed", **fields) -> RunSpec:
    return RunSpec(condition=condition, teacher_seed=0, student_seed=student_seed, dataset="toy", dataset_kwargs={},
                   arch="gpt", arch_kwargs={}, recipe={}, init=init, alpha=None if condition == "siddo" else 0.5,
                   teacher_id="t", **fields)


def test_student_seed_init_is_the_same_for_every_condition_of_a_seed_and_differs_between_seeds(tmp_path):
    make = lambda: GPT(TINY)
    models = {(c, s): runs._initial_model(student_spec(c, s), make, tmp_path)
              for c in ("siddo", "kd", "rcd") for s in (10, 11)}
    for s in (10, 11):
        with torch.random.fork_rng():
            torch.manual_seed(s)
            direct = make()  # the student seed's draw, made here without kdlib's seeding
        assert all(same_state(models[(c, s)], direct) for c in ("siddo", "kd", "rcd"))
    assert not torch.equal(flat(models[("kd", 10)]), flat(models[("kd", 11)]))
    by_teacher_seed = runs._initial_model(student_spec("kd", 10, "seed"), make, tmp_path)  # unchanged: teacher seed
    assert same_state(by_teacher_seed, init_model(make, 0)) and not same_state(by_teacher_seed, models[("kd", 10)])
    torch.save(init_model(make, 5).state_dict(), tmp_path / "init.pt")
    assert same_state(runs._initial_model(student_spec("kd", 10, "teacher"), make, tmp_path), init_model(make, 5))
    with pytest.raises(ValueError, match="init='student'"):
        runs._initial_model(student_spec("kd", 10, "student"), make, tmp_path)


# ----------------------------------------------------------------------------- 4 and 5. feature maps

NANO = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=6, n_embd=384, dropout=0.0)
PICO = replace(NANO, n_embd=192)


def block_output(model: GPT, x: torch.Tensor, block: int) -> torch.Tensor:
    """The output of ``model.blocks[block]`` on ``x``, by running the model's layers by hand."""
    h = model.wte(x) + model.wpe(torch.arange(x.shape[1]))
    for b in model.blocks[:block + 1]:
        h = b(h)
    return h


def first_batch(data, seed: int, batch_size: int):
    """The first training batch a run with data-order seed ``seed`` draws (the trainer's own generator)."""
    _, x, y = next(data.batches(batch_size, 1, torch.Generator().manual_seed(derive_seeds(seed, 2)[0])))
    return x, y


def test_feature_projection_exists_only_between_widths_and_is_seeded_apart():
    assert feature_projection(384, 384, 0) is None
    torch.manual_seed(99)
    state = torch.get_rng_state()
    a, b, c = feature_projection(192, 384, 0), feature_projection(192, 384, 0), feature_projection(192, 384, 1)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    assert isinstance(a, nn.Linear) and (a.in_features, a.out_features) == (192, 384)
    assert same_state(a, b) and not same_state(a, c)
    assert not same_state(a, init_model(lambda: nn.Linear(192, 384), 0))  # not the model's own init stream


@pytest.mark.parametrize("kind, teacher_seed", [("feature", None), ("feature_rcd_init", 3)])
def test_a_pico_student_matches_the_teacher_through_a_trained_projection(kind, teacher_seed):
    """A 192-wide student against a 384-wide teacher: the first step's loss is (1-alpha) CE + alpha MSE(projection of
    the student's block output, the teacher's block output), computed here by hand (RCD: the teacher's untrained
    M0), and the projection trains with the student."""
    data, alpha, seed = WindowData(tokens(), NANO.block_size), 0.5, 12
    teacher = init_model(lambda: GPT(NANO), 3 if teacher_seed is None else teacher_seed)
    if teacher_seed is None:  # a trained teacher
        train(teacher, data, Objective("ce"), Recipe("adam", lr=1e-3, batch_size=4, steps=2), 0)
    student, projection = init_model(lambda: GPT(PICO), 0), feature_projection(192, 384, 0)
    start_student, start_projection = copy.deepcopy(student), copy.deepcopy(projection)
    objective = Objective(kind, alpha=alpha, feature_layer="blocks.1")
    log = train(student, data, objective, Recipe("adam", lr=1e-3, batch_size=4, steps=2), seed,
                teacher=teacher if objective.needs_teacher else None, projection=projection, log_every=1)
    x, y = first_batch(data, seed, 4)
    with torch.no_grad():
        ce = F.cross_entropy(start_student(x).flatten(0, 1), y.flatten())
        mapped = start_projection(block_output(start_student, x, 1))
        target = block_output(teacher, x, 1)
        expected = (1 - alpha) * ce + alpha * F.mse_loss(mapped, target)
    assert log.losses[0] == pytest.approx(float(expected), rel=1e-5)
    assert not torch.equal(projection.weight, start_projection.weight)  # it trains
    assert not torch.equal(flat(student), flat(start_student))
    assert not student.blocks[1]._forward_hooks and not teacher.blocks[1]._forward_hooks


def test_equal_widths_train_without_a_projection_exactly_as_before(smoke_store, data_dir, tmp_path):
    """The Nano-GPT feature-map setup (a Nano-GPT student): no projection file, and each student's weights are those
    of the plain training call (no projection), bit for bit."""
    setup = setups.get("tinyshakespeare-nanogpt-featuremap-block4", "smoke").scaled(student=None)
    specs = plan(setup)
    teacher_spec, out = specs[0], tmp_path / "store"
    shutil.copytree(run_dir(smoke_store, teacher_spec), run_dir(out, teacher_spec))
    for spec in (next(s for s in specs if s.condition == c) for c in ("kd", "rcd")):
        assert runs.run_one(spec, out, data_dir, teacher=teacher_spec).status == "ok"
        assert not (run_dir(out, spec) / "projection.pt").exists()
        task, objective = runs.load_task(spec, data_dir), spec.objective
        teacher = runs.load_model(out, teacher_spec, data_dir, "init.pt" if objective.row.teacher_init else "model.pt")
        model = runs.load_model(out, teacher_spec, data_dir, "init.pt").train()  # self-distillation: from M0
        recipe = runs._recipe(spec)
        train(model, task.train, objective, recipe, spec.student_seed,
              teacher=teacher if objective.needs_teacher else None, log_every=max(1, recipe.steps // 50))
        stored = torch.load(run_dir(out, spec) / "model.pt")
        assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items()), spec.condition


def pico_featuremap_specs(target: str | None):
    """The smoke Nano-GPT feature-map setup (a Pico-GPT student, the default reading): its teacher, KD and RCD
    students, RCD's feature target set to ``target``."""
    specs = plan(setups.get("tinyshakespeare-nanogpt-featuremap-block4", "smoke"))
    assert specs[1].arch_kwargs["n_embd"] == specs[0].arch_kwargs["n_embd"] // 2
    kd = next(s for s in specs if s.condition == "kd")
    rcd = next(s for s in specs if s.condition == "rcd")
    return specs[0], kd, replace(rcd, feature_rcd_target=target)


def test_a_pico_feature_run_stores_its_projection_beside_a_plain_pico_model(smoke_store, data_dir, tmp_path):
    teacher, kd, rcd = pico_featuremap_specs("teacher-init")
    out = tmp_path / "store"
    shutil.copytree(run_dir(smoke_store, teacher), run_dir(out, teacher))  # the same teacher as the Nano setup's
    ws = Workspace.of(out, data_dir)
    assert rcd.objective.kind == "feature_rcd_init" and kd.objective.kind == "feature"
    prepared = runs._prepare_student(rcd, teacher, ws)  # RCD's teacher is the teacher's M0
    assert same_state(prepared.teacher, runs.load_model(ws, teacher, which="init.pt"))
    assert not same_state(prepared.teacher, runs.load_model(ws, teacher))
    width = teacher.arch_kwargs["n_embd"]
    assert (prepared.projection.in_features, prepared.projection.out_features) == (width // 2, width)
    for spec in (kd, rcd):
        result = runs.run_one(spec, ws, teacher=teacher)
        assert result.status == "ok", result.reason
        saved = torch.load(run_dir(out, spec) / "projection.pt")
        start = feature_projection(width // 2, width, spec.teacher_seed)
        assert saved["weight"].shape == (width, width // 2) and not torch.equal(saved["weight"], start.weight)
        model = runs.load_model(ws, spec)  # a plain Pico-GPT: its state dict holds no projection
        assert model.config.n_embd == width // 2 and not any("projection" in k for k in model.state_dict())


def test_rcd_feature_target_is_checked_and_none_keeps_zeros(smoke_store, data_dir, tmp_path):
    """RCD's zeros are matched at the student's own width, with no projection: a projection to a zero target could
    shrink itself to nothing and switch the term off, leaving RCD plain CE."""
    teacher, _, rcd = pico_featuremap_specs(None)
    assert rcd.objective.kind == "feature_rcd" and not rcd.objective.needs_teacher
    shutil.copytree(run_dir(smoke_store, teacher), run_dir(tmp_path, teacher))
    prepared = runs._prepare_student(rcd, teacher, Workspace.of(tmp_path, data_dir))
    assert prepared.projection is None and prepared.teacher is None
    student, data = copy.deepcopy(prepared.model), WindowData(tokens(), rcd.arch_kwargs["block_size"])
    alpha, recipe = rcd.alpha, Recipe("adam", lr=1e-3, batch_size=4, steps=1)
    log = train(prepared.model, data, rcd.objective, recipe, 12, log_every=1)
    x, y = first_batch(data, 12, 4)
    captured = []  # one forward in train mode with the trainer's dropout stream, as the step's own
    hook = student.blocks[int(rcd.feature_layer.rpartition(".")[2])].register_forward_hook(
        lambda m, i, o: captured.append(o))
    with torch.no_grad(), dev.seeded(derive_seeds(12, 2)[1]):
        logits = student.train()(x)
    hook.remove()
    features = captured[0]
    expected = (1 - alpha) * F.cross_entropy(logits.flatten(0, 1), y.flatten()) + alpha * features.pow(2).mean()
    assert features.shape[-1] == rcd.arch_kwargs["n_embd"]  # the Pico-GPT's own width
    assert log.losses[0] == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="no teacher's feature map"):
        train(student, data, rcd.objective, recipe, 12, projection=feature_projection(8, 16, 0))
    _, _, bad = pico_featuremap_specs("teacher-final")
    with pytest.raises(ValueError, match="teacher-final"):
        bad.objective


# ----------------------------------------------------------------------------- 6. the training loop's metrics

def augmented_data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 6, generator=g), torch.randint(3, (20,), generator=g)
    noisy = lambda batch, generator: batch + 0.3 * torch.randn(batch.shape, generator=generator)
    return ExampleData(x, y, augment=noisy)


def mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def rerun_last_epoch(model, data, recipe: Recipe, seed: int, last: int) -> tuple[float, float]:
    """The trainer's loop for plain cross-entropy, written out here, logging each batch's summed loss, correct
    predictions and examples: the loss and accuracy per example over the last ``last`` batches (whole-split counts,
    a partial batch weighing what it holds)."""
    order, dropout = derive_seeds(seed, 2)
    generator = torch.Generator().manual_seed(order)
    optimizer, scheduler = recipe.build(model.named_parameters())
    model.train()
    losses, corrects, counts = [], [], []
    with dev.seeded(dropout):
        for _, x, y in data.batches(recipe.batch_size, recipe.steps, generator):
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()) * y.numel())
            corrects.append(int((logits.argmax(-1) == y).sum()))
            counts.append(y.numel())
    assert len(losses) == recipe.steps
    return sum(losses[-last:]) / sum(counts[-last:]), sum(corrects[-last:]) / sum(counts[-last:])


def test_the_last_epochs_training_metrics_equal_a_rerun_of_the_loop():
    data, recipe = augmented_data(), Recipe("sgd", lr=0.3, batch_size=8, steps=6)  # two whole epochs
    assert epoch_length(data, recipe) == 3  # 20 examples in batches of 8: 8, 8, 4
    model = init_model(mlp, 0)
    log = train(model, data, Objective("ce"), recipe, 4, last_epoch=True)
    loss, accuracy = rerun_last_epoch(init_model(mlp, 0), data, recipe, 4, 3)
    assert log.last_epoch == {"loss": pytest.approx(loss, rel=1e-6), "accuracy": pytest.approx(accuracy, rel=1e-12)}
    everything = rerun_last_epoch(init_model(mlp, 0), data, recipe, 4, 6)
    assert log.last_epoch["loss"] != pytest.approx(everything[0], rel=1e-6)  # the last epoch, not the whole run
    assert train(init_model(mlp, 0), data, Objective("ce"), recipe, 4).last_epoch is None  # only when asked
    assert epoch_length(data, replace(recipe, epoch_length=2)) == 2
    assert epoch_length(WindowData(tokens(1001), 10), replace(recipe, batch_size=7, steps=100)) == 15


def test_a_teachers_result_records_its_training_loops_last_epoch(smoke_store, data_dir):
    spec = plan(setups.get("tinyshakespeare-nanogpt", "smoke"))[0]
    result, task = read_result(smoke_store, spec), runs.load_task(spec, data_dir)
    recipe = runs._recipe(spec)
    last = epoch_length(task.train, recipe)
    model = init_model(lambda: runs.build_model(spec, task.num_classes), spec.teacher_seed)
    loss, accuracy = rerun_last_epoch(model, task.train, recipe, spec.teacher_seed, last)
    assert result.train_loss_augmented == pytest.approx(loss, rel=1e-6)
    assert result.train_accuracy_augmented == pytest.approx(accuracy, rel=1e-12)
    assert result.train_loss != result.train_loss_augmented  # the clean train metrics are measured apart


def test_results_written_before_the_training_loop_metrics_still_read(tmp_path):
    spec = plan(setups.get("tinyshakespeare-nanogpt", "smoke"))[0]
    old = {"run_id": spec.run_id, "status": "ok", "spec": {"condition": "teacher"}, "train_loss": 2.5,
           "train_accuracy": 0.3, "test_loss": 2.6}
    write_json(run_dir(tmp_path, spec) / "result.json", old)
    result = read_result(tmp_path, spec)
    assert result.train_loss == 2.5 and result.train_loss_augmented is None and result.train_accuracy_augmented is None
    assert result.to_json() == old and result.extra == {}
    assert RunResult.from_json({**old, "train_loss_augmented": 2.4}).train_loss_augmented == 2.4
