import math

import pytest
import torch
import torch.nn.functional as F

from kdlib import setups
from kdlib.models import build
from kdlib.models.audio import AST, VGGish
from kdlib.engine.train import init_model

pytestmark = pytest.mark.kernels  # numeric tolerances: CI runs them on a second kernel path too

AUDIO_SETUPS = ("speechcommands-vggish", "speechcommands-ast", "urbansound8k-vggish", "urbansound8k-ast",
                "fsdd-vggish")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def vggish_params(num_classes: int, width: float) -> int:
    """Parameter count of VGGish written out by hand: 3x3 convs 64-128-256-256-512-512, 2x3 pooled grid,
    FC hidden-hidden-128, classifier."""
    c = [round(n * width) for n in (64, 128, 256, 256, 512, 512)]
    h = round(4096 * width)
    convs = sum(9 * cin * cout + cout for cin, cout in zip([1] + c[:-1], c))
    fcs = (6 * c[-1] * h + h) + (h * h + h) + (h * 128 + 128) + (128 * num_classes + num_classes)
    return convs + fcs


@pytest.mark.parametrize("frames", [40, 63, 251])
def test_vggish_classifies_any_frame_count(frames):
    model = build("vggish", 35, width=0.0625).eval()
    assert model(torch.randn(3, 1, 32, frames)).shape == (3, 35)


def test_vggish_width_multiplier_scales_every_layer_but_the_embedding():
    assert n_params(VGGish(10)) == vggish_params(10, 1.0)
    narrow = VGGish(10, width=0.125)
    assert n_params(narrow) == vggish_params(10, 0.125)
    assert [m.out_channels for m in narrow.features if isinstance(m, torch.nn.Conv2d)] == [8, 16, 32, 32, 64, 64]
    assert narrow.classifier.in_features == 128
    with pytest.raises(ValueError, match="width must be positive"):
        VGGish(10, width=0)


def test_vggish_init_keeps_the_signal_alive_through_the_plain_relu_stack():
    model = init_model(lambda: VGGish(10, width=0.25), 0).eval()
    logits = model(torch.randn(64, 1, 32, 63))
    assert 0.1 < logits.std() < 10  # PyTorch's default init gives about 0.04 here


@pytest.mark.parametrize("frames", [63, 251, 100])
def test_ast_classifies_any_frame_count_by_interpolating_positions(frames):
    model = AST(10, frames=63, embed_dim=32, depth=2, heads=4).eval()
    rows, cols = (32 - 8) // 4 + 1, (frames - 8) // 4 + 1
    assert model.grid_size(32, frames) == (rows, cols)
    assert model(torch.randn(2, 1, 32, frames)).shape == (2, 10)
    assert model.positions((rows, cols)).shape == (1, rows * cols, 32)


def test_ast_positions_are_the_learned_table_on_its_own_grid():
    model = AST(5, frames=63, embed_dim=16, depth=1, heads=2, patch=8, stride=6)
    assert model.grid == (5, 10) and model.pos_embed.shape == (1, 2 + 50, 16)
    assert torch.equal(model.positions((5, 10)), model.pos_embed[:, 2:])


def test_ast_head_reads_the_mean_of_the_cls_and_distillation_tokens():
    model = AST(4, frames=63, embed_dim=16, depth=1, heads=2).eval()
    x = torch.randn(2, 1, 32, 63)
    seen = {}
    model.encoder.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    logits = model(x)
    expected = model.head((seen["out"][:, 0] + seen["out"][:, 1]) / 2)
    torch.testing.assert_close(logits, expected)


def test_ast_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        AST(10, embed_dim=30, heads=4)
    with pytest.raises(ValueError, match="do not fit"):
        AST(10, n_mels=4, patch=8)


@pytest.mark.parametrize("arch, kwargs", [("vggish", dict(width=0.0625)),
                                          ("ast", dict(embed_dim=32, depth=2, heads=4, stride=6))])
def test_models_fit_a_small_batch(arch, kwargs):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 32, 63, generator=g), torch.arange(16) % 4
    model = init_model(lambda: build(arch, 4, **kwargs), 0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = F.cross_entropy(model(x), y).item()
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_audio_setups_follow_the_paper_recipe():
    for name in AUDIO_SETUPS:
        s = setups.get(name, "paper")
        assert s.modality == "audio" and s.self_distillation and s.alphas == (0.1, 0.5, 0.9)
        assert s.teacher_seeds == (0, 1, 2) and s.student_seeds == tuple(range(10, 20))
        r = s.teacher_recipe
        assert (r.optimizer, r.lr, r.batch_size, r.momentum, r.schedule) == ("sgd", 0.01, 256, 0.0, "constant")
        assert s.student_recipe == r and s.dataset_kwargs == {}
    # 100 epochs x ceil(84,843 / 256) = 100 x 332; 150 x ceil(6,985 / 256) = 150 x 28
    assert setups.get("speechcommands-vggish", "paper").teacher_recipe.steps == 33_200
    assert setups.get("urbansound8k-ast", "paper").teacher_recipe.steps == 4_200
    assert setups.get("urbansound8k-ast", "paper").teacher.kwargs["frames"] == 251
    assert setups.get("speechcommands-ast", "paper").teacher.kwargs["frames"] == 63


def test_audio_cpu_and_smoke_profiles_keep_the_protocol():
    for name in AUDIO_SETUPS:
        cpu, smoke = setups.get(name, "cpu"), setups.get(name, "smoke")
        assert cpu.teacher_seeds == (0,) and len(cpu.student_seeds) >= 6 and cpu.alphas == (0.1, 0.5, 0.9)
        assert smoke.teacher_seeds == (0,) and len(smoke.student_seeds) == 2
        assert smoke.teacher_recipe.steps <= 5 and smoke.dataset_kwargs["max_train"] <= 64
    fsdd = setups.get("fsdd-vggish", "cpu")
    assert fsdd.teacher_recipe.steps == 4 * math.ceil(2700 / 32) and fsdd.teacher.kwargs == {"width": 0.125}
