import pytest
import torch

from kdlib.models.gpt import GPT, GPTConfig
from kdlib.data.sources import ExampleData, WindowData
from kdlib.engine.recipe import Recipe
from kdlib.engine.objectives import Objective
from kdlib.engine.train import init_model, train
from kdlib.engine.evaluate import teacher_logits_on

pytestmark = pytest.mark.kernels  # numeric tolerances: CI runs them on a second kernel path too

TINY = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1)


def tokens(n=2000, seed=0):
    return torch.randint(11, (n,), generator=torch.Generator().manual_seed(seed))


def params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_init_seed_alone_sets_initial_weights():
    torch.manual_seed(123)
    a = init_model(lambda: GPT(TINY), 0)
    torch.manual_seed(456)
    b = init_model(lambda: GPT(TINY), 0)
    c = init_model(lambda: GPT(TINY), 1)
    assert torch.equal(params(a), params(b)) and not torch.equal(params(a), params(c))


def test_same_seeds_same_bits_and_data_seed_changes_the_run():
    recipe = Recipe("adam", lr=1e-3, batch_size=4, steps=6)
    data = WindowData(tokens(), TINY.block_size)
    runs = []
    for data_seed in (10, 10, 11):
        m = init_model(lambda: GPT(TINY), 0)
        log = train(m, data, Objective("ce"), recipe, data_seed=data_seed, log_every=2)
        runs.append((params(m), log.losses))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0], runs[2][0])
    assert len(runs[0][1]) == 3


def test_batch_order_is_independent_of_global_rng():
    data = ExampleData(torch.arange(20.0)[:, None], torch.zeros(20, dtype=torch.long))
    orders = []
    for g in (1, 2):
        torch.manual_seed(g)
        orders.append([idx.tolist() for idx, _, _ in data.batches(8, 5, torch.Generator().manual_seed(5))])
    assert orders[0] == orders[1] and len(orders[0]) == 5 and len(orders[0][2]) == 4  # 8, 8, 4 per epoch


def test_teacher_cache_gives_the_same_student_as_running_the_teacher():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randint(3, (64,), generator=g)
    data = ExampleData(x, y)
    build = lambda: torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    teacher = init_model(build, 0)
    train(teacher, data, Objective("ce"), Recipe("sgd", lr=0.5, batch_size=16, steps=20), data_seed=0)
    cache = teacher_logits_on(teacher, data, batch_size=7)
    students = []
    for kwargs in (dict(teacher=teacher), dict(teacher_cache=cache)):
        s = init_model(build, 0)
        train(s, data, Objective("kd", alpha=0.7, temperature=2.0), Recipe("sgd", lr=0.5, batch_size=16, steps=20),
              data_seed=12, **kwargs)
        students.append(params(s))
    torch.testing.assert_close(students[0], students[1])


def test_feature_objective_uses_hooks_and_removes_them():
    data = WindowData(tokens(), TINY.block_size)
    teacher = init_model(lambda: GPT(TINY), 0)
    student = init_model(lambda: GPT(TINY), 0)
    before = params(student)
    recipe = Recipe("adam", lr=1e-2, batch_size=4, steps=3)
    for kind in ("feature", "feature_rcd"):
        train(student, data, Objective(kind, alpha=0.5, feature_layer="blocks.1"), recipe, 3, teacher=teacher)
    assert not torch.equal(before, params(student))
    assert not student.blocks[1]._forward_hooks and not teacher.blocks[1]._forward_hooks


def test_schedules():
    m = torch.nn.Linear(2, 2)
    opt, sched = Recipe("sgd", lr=1.0, batch_size=1, steps=10, schedule="cosine").build(m.named_parameters())
    for _ in range(10):
        opt.step(); sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    recipe = Recipe("sgd", lr=1.0, batch_size=1, steps=10, schedule="step", milestones=(0.5,))
    opt, sched = recipe.build(m.named_parameters())
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
    assert lrs[4] == 1.0 and lrs[5] == pytest.approx(0.1)


@pytest.mark.parametrize("make, match", [
    (lambda: Objective("distill"), r"unknown objective 'distill'.*'ce', 'kd'"),
    (lambda: Objective("kd", alpha=2), r"alpha=2"),
    (lambda: Objective("feature", alpha=0.5), r"feature_layer"),
    (lambda: Recipe("rmsprop", lr=1, batch_size=1, steps=1), r"unknown optimizer 'rmsprop'"),
    (lambda: Recipe("sgd", lr=1, batch_size=1, steps=1, schedule="poly"), r"unknown schedule 'poly'"),
])
def test_bad_configuration(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_placement_keeps_the_default_layout_on_cpu():
    """Channels-last is for CUDA only: torch 2.14.1's CPU channels-last backward of a 1x1 stride-2 convolution
    corrupts the heap (this model's downsample at 64 px)."""
    from kdlib.models import build
    from kdlib.engine.device import batch as inputs, place
    model = place(build("resnet18", 10, image_size=64, in_channels=3, width=4), "cpu")
    x = inputs(torch.randn(8, 3, 64, 64), "cpu")
    assert all(p.is_contiguous() for p in model.parameters()) and x.is_contiguous()
    torch.nn.functional.cross_entropy(model(x), torch.randint(10, (8,))).backward()  # crashed channels-last
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
