"""A live teacher's logits are training targets: they compute in the training step's precision (bf16 on CUDA when a
run trains in bf16), compiled like the student's forward pass, and reach the loss in float32; a cached teacher's
logits stay float32. bf16 emulated on the CPU (CPU autocast)."""
import copy

import pytest
import torch

from kdlib.data.sources import ExampleData, WindowData
from kdlib.engine import device as dev
from kdlib.engine import objectives as objectives_mod
from kdlib.engine.losses import kd_loss
from kdlib.engine.objectives import Objective
from kdlib.engine.recipe import Recipe
from kdlib.engine.together import train_together
from kdlib.engine.train import init_model, train
from kdlib.models.gpt import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=64, dropout=0.0)


def pattern(n=3000):
    """A token stream with structure (a cycle with 10% noise), so that trained models are confident."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.tensor([i % 13 * 5 % 65 for i in range(n)])
    return torch.where(torch.rand(n, generator=g) < 0.1, torch.randint(65, (n,), generator=g), tokens)


@pytest.fixture(scope="module")
def trained():
    """A teacher and a student of the same architecture, each trained from its own seed (as at the end of KD)."""
    data = WindowData(pattern(), 32)
    models = [init_model(lambda: GPT(CONFIG), seed) for seed in (1, 2)]
    for seed, model in enumerate(models):
        train(model, data, Objective("ce"), Recipe("adamw", lr=3e-3, batch_size=16, steps=150), seed)
    return models


def test_bf16_teacher_targets_move_the_students_gradient_less_than_bf16_moves_its_own_step(trained):
    """What a bf16 run changes: its student's forward pass was bf16 before this change; now its teacher's is too.
    The teacher's rounding moves the KD gradient less than the student's own rounding does, at every alpha and T
    of the paper's grid (measured: 0.02-0.7% against 0.4-1.1% of the gradient's norm)."""
    teacher, student = copy.deepcopy(trained[0]).eval(), copy.deepcopy(trained[1])
    tokens = pattern()
    x, y = tokens[:256].view(8, 32), tokens[1:257].view(8, 32)

    def gradient(student_bf16, teacher_bf16, alpha, temperature):
        student.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=student_bf16):
            logits = student(x)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=teacher_bf16):
            targets = teacher(x)
        kd_loss(logits.float(), targets.float(), y, alpha, temperature).backward()
        return torch.cat([p.grad.flatten() for p in student.parameters()])

    for temperature in (1.0, 4.0):
        for alpha in (0.1, 0.5, 0.9):
            exact = gradient(False, False, alpha, temperature)
            by_teacher = (gradient(False, True, alpha, temperature) - exact).norm()
            by_student = (gradient(True, False, alpha, temperature) - exact).norm()
            assert 0 < by_teacher < by_student, (alpha, temperature, by_teacher, by_student)


def emulated_bf16(monkeypatch):
    """CUDA's bf16 training steps, on the CPU: amp() gives bf16 autocast whatever the device."""
    monkeypatch.setattr(dev, "amp", lambda device, precision=None: dev.Amp("cpu", torch.bfloat16))


def spy(monkeypatch, teacher):
    """Records the dtype the teacher's last layer hands out, and the dtype of the targets the KD loss receives."""
    seen = {"teacher": [], "targets": []}
    teacher.lm_head.register_forward_hook(lambda m, i, out: seen["teacher"].append(out.dtype))
    real = objectives_mod.kd_loss
    monkeypatch.setattr(objectives_mod, "kd_loss", lambda logits, targets, *a, **k: seen["targets"].append(
        targets.dtype) or real(logits, targets, *a, **k))
    return seen


def test_a_live_teacher_runs_in_the_steps_precision_and_the_loss_reads_float32(monkeypatch):
    emulated_bf16(monkeypatch)
    tiny = GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    teacher = init_model(lambda: GPT(tiny), 9).eval()
    seen = spy(monkeypatch, teacher)
    data = WindowData(torch.randint(11, (500,), generator=torch.Generator().manual_seed(0)), 16)
    recipe = Recipe("sgd", lr=0.05, batch_size=4, steps=2)
    train(init_model(lambda: GPT(tiny), 0), data, Objective("kd", alpha=0.5), recipe, 1, teacher=teacher)
    assert seen == {"teacher": [torch.bfloat16] * 2, "targets": [torch.float32] * 2}
    seen["teacher"].clear(), seen["targets"].clear()
    train_together([init_model(lambda: GPT(tiny), 0) for _ in range(3)], data,
                   [Objective("kd", alpha=0.5), Objective("ce"), Objective("kd", alpha=0.9)], recipe, [1, 2, 3],
                   teacher=teacher)
    assert seen == {"teacher": [torch.bfloat16] * 2, "targets": [torch.float32] * 4}  # one pass for both KD members


def test_a_cached_teacher_stays_float32(monkeypatch):
    emulated_bf16(monkeypatch)
    cache = torch.randn(40, 5, dtype=torch.float64).float()
    data = ExampleData(torch.randn(40, 3), torch.randint(5, (40,)))
    seen = []
    real = objectives_mod.kd_loss
    monkeypatch.setattr(objectives_mod, "kd_loss", lambda logits, targets, *a, **k: seen.append(targets) or real(
        logits, targets, *a, **k))
    train(torch.nn.Linear(3, 5), data, Objective("kd", alpha=0.5), Recipe("sgd", lr=0.1, batch_size=8, steps=1), 0,
          teacher_cache=cache)
    (targets,) = seen
    assert targets.dtype == torch.float32
    assert all(any(torch.equal(row, c) for c in cache) for row in targets)  # the cached float32 rows themselves


def test_kd_members_of_one_data_seed_share_one_teacher_pass_and_train_as_alone():
    """A seed's KD students at every alpha see the same batches: the pack's teacher reads them once."""
    tiny = GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    teacher = init_model(lambda: GPT(tiny), 9).eval()
    rows = []
    teacher.lm_head.register_forward_hook(lambda m, i, out: rows.append(out.shape[0]))
    data = WindowData(torch.randint(11, (500,), generator=torch.Generator().manual_seed(0)), 16)
    recipe = Recipe("sgd", lr=0.05, batch_size=4, steps=2)
    objectives = [Objective("kd", alpha=0.1), Objective("kd", alpha=0.9, temperature=2.0), Objective("ce"),
                  Objective("kd", alpha=0.5)]
    seeds = [10, 10, 10, 11]
    start = init_model(lambda: GPT(tiny), 0)
    packed = [copy.deepcopy(start) for _ in objectives]
    train_together(packed, data, objectives, recipe, seeds, teacher=teacher)
    assert rows == [2 * 4] * 2  # per step: the batches of seeds 10 and 11, not of three KD members
    for model, objective, seed in zip(packed, objectives, seeds):
        alone = copy.deepcopy(start)
        train(alone, data, objective, recipe, seed, teacher=teacher)
        for a, b in zip(alone.parameters(), model.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
