import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlib.engine.losses import feature_map_loss, kd_loss, label_smoothing_loss, rcd_loss
from kdlib.data.sources import ExampleData
from kdlib.engine.recipe import Recipe
from kdlib.engine.objectives import Objective
from kdlib.engine.train import init_model, train

pytestmark = pytest.mark.kernels  # numeric tolerances: CI runs them on a second kernel path too


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_kd_loss_hand_computation():
    zs = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    zt = np.array([[0.3, 0.1, 2.0], [2.0, 0.0, 1.0]])
    y = np.array([1, 2])
    alpha, T = 0.3, 2.0
    ce = -np.log(softmax(zs)[np.arange(2), y]).mean()
    pt, ps = softmax(zt / T), softmax(zs / T)
    kl = (pt * np.log(pt / ps)).sum(-1).mean()
    expected = (1 - alpha) * ce + alpha * T * T * kl
    got = kd_loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(y), alpha, T)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_kd_loss_matches_torch_functional_and_flattens_sequences():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(4, 7, 11, generator=g), torch.randn(4, 7, 11, generator=g)
    y = torch.randint(11, (4, 7), generator=g)
    for alpha, T in [(0.0, 1.0), (0.5, 1.0), (0.9, 4.0), (1.0, 2.0)]:
        ref = (1 - alpha) * F.cross_entropy(zs.reshape(-1, 11), y.reshape(-1)) + alpha * T ** 2 * F.kl_div(
            F.log_softmax(zs.reshape(-1, 11) / T, -1), F.softmax(zt.reshape(-1, 11) / T, -1), reduction="batchmean")
        assert kd_loss(zs, zt, y, alpha, T).item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-7)


def test_kd_gradient_equals_section5_closed_form():
    g = torch.Generator().manual_seed(1)
    N, K, alpha = 5, 6, 0.7
    zs = torch.randn(N, K, generator=g, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(N, K, generator=g, dtype=torch.float64)
    y = torch.randint(K, (N,), generator=g)
    kd_loss(zs, zt, y, alpha).backward()
    ps, pt, onehot = F.softmax(zs.detach(), -1), F.softmax(zt, -1), F.one_hot(y, K).double()
    closed = ((1 - alpha) * (ps - onehot) + alpha * (ps - pt)) / N  # mean over samples
    torch.testing.assert_close(zs.grad, closed)
    wrong = onehot == 0  # Section 5: on incorrect classes the gradient is p_s - alpha * p_t
    torch.testing.assert_close(zs.grad[wrong] * N, (ps - alpha * pt)[wrong])


def test_rcd_is_kd_with_uniform_teacher():
    g = torch.Generator().manual_seed(2)
    zs, y = torch.randn(8, 5, generator=g), torch.randint(5, (8,), generator=g)
    for T in (1.0, 3.0):
        a = rcd_loss(zs, y, 0.6, T)
        b = kd_loss(zs, torch.zeros_like(zs), y, 0.6, T)
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_label_smoothing_matches_torch():
    g = torch.Generator().manual_seed(3)
    zs, y = torch.randn(9, 4, generator=g), torch.randint(4, (9,), generator=g)
    for eps in (0.0, 0.1, 0.5, 0.9):
        ref = F.cross_entropy(zs, y, label_smoothing=eps)
        assert label_smoothing_loss(zs, y, eps).item() == pytest.approx(ref.item(), rel=1e-6)


def test_appendix_b_rcd_and_label_smoothing_have_equal_gradients():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, 10, generator=g, dtype=torch.float64)
    y = torch.randint(10, (6,), generator=g)
    for alpha in (0.1, 0.5, 0.9):
        z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
        rcd_loss(z1, y, alpha).backward()
        label_smoothing_loss(z2, y, alpha).backward()
        torch.testing.assert_close(z1.grad, z2.grad)
        # the losses differ only by the constant alpha * H(uniform) = alpha * ln K
        diff = label_smoothing_loss(z, y, alpha) - rcd_loss(z, y, alpha)
        assert diff.item() == pytest.approx(alpha * math.log(10))


def test_appendix_b_models_trained_under_rcd_and_label_smoothing_end_equal():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(256, 8, generator=g), torch.randint(4, (256,), generator=g)
    data = ExampleData(x, y)
    build = lambda: torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    recipe = Recipe("sgd", lr=0.1, batch_size=32, steps=40, momentum=0.9)
    models = []
    for kind in ("rcd", "ls"):
        m = init_model(build, init_seed=0).double()
        train(m, ExampleData(x.double(), y), Objective(kind, alpha=0.5), recipe, data_seed=11)
        models.append(m)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-10)
    # and they did move away from the initial weights
    m0 = init_model(build, 0).double()
    assert not torch.allclose(next(m0.parameters()), next(models[0].parameters()))
    assert len(data) == 256


def test_feature_map_loss_is_mse():
    a, b = torch.arange(6.0).view(2, 3), torch.ones(2, 3)
    assert feature_map_loss(a, b).item() == pytest.approx(((np.arange(6) - 1.0) ** 2).mean())


@pytest.mark.parametrize("call, match", [
    (lambda z, y: kd_loss(z, z, y, alpha=1.5), r"alpha=1.5 .*\[0, 1\]"),
    (lambda z, y: kd_loss(z, z, y, alpha=-0.1), r"alpha=-0.1"),
    (lambda z, y: kd_loss(z, z, y, alpha=0.5, temperature=0), r"temperature=0 .*> 0"),
    (lambda z, y: kd_loss(z, z[:, :3], y, alpha=0.5), r"teacher logits shape \(4, 3\)"),
    (lambda z, y: rcd_loss(z, y + 5, alpha=0.5), r"label \d+ \(at index \d\) is out of range \[0, 4\]"),
    (lambda z, y: rcd_loss(z, y[:2], alpha=0.5), r"labels has shape \(2,\)"),
    (lambda z, y: label_smoothing_loss(z, y, epsilon=2.0), r"epsilon=2.0"),
    (lambda z, y: feature_map_loss(z, z[:2]), r"features shape"),
])
def test_bad_input_raises_clear_error(call, match):
    z, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=match):
        call(z, y)
