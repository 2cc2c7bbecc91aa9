import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score

from kdlib.metrics import Comparison, compare

pytestmark = pytest.mark.kernels  # numeric tolerances: CI runs them on a second kernel path too


def test_identical_models_are_identical():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(50, 7, generator=g), torch.randint(7, (50,), generator=g)
    r = compare(z, z, y)
    for k in ("activation_distance", "js_divergence", "rank_disagreement", "prediction_disagreement",
              "variation_of_information", "procrustes_distance"):
        assert r[k] == pytest.approx(0.0, abs=1e-9), k
    assert r["prediction_agreement"] == r["correct_agreement"] == r["incorrect_agreement"] == 1.0


def test_one_hot_teacher_against_ideal_rcd_09_output_matches_table_3():
    K = 10
    teacher = torch.full((3, K), -1e4, dtype=torch.float64)
    teacher[:, 0] = 0.0  # one-hot softmax
    rcd = torch.log(0.1 * torch.nn.functional.one_hot(torch.zeros(3, dtype=torch.long), K).double() + 0.9 / K)
    r = compare(teacher, rcd, torch.zeros(3, dtype=torch.long))
    assert r["activation_distance"] == pytest.approx(math.sqrt(0.81 ** 2 + 9 * 0.09 ** 2), abs=1e-9)
    assert round(r["activation_distance"], 3) == 0.854  # paper Table 3 RCD 0.9: 0.849
    assert round(r["js_divergence"], 3) == 0.432  # paper Table 3 RCD 0.9: 0.431


def test_hand_worked_rank_and_agreement():
    teacher = torch.tensor([[3.0, 2.0, 1.0], [0.0, 5.0, 1.0], [1.0, 0.0, 2.0], [0.0, 1.0, 2.0]])
    model = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [2.0, 0.0, 1.0], [0.0, 1.0, 2.0]])
    labels = torch.tensor([0, 0, 2, 1])  # teacher correct on 0 and 2, wrong on 1 and 3
    r = compare(teacher, model, labels)
    # orders: [0,1,2] vs [0,2,1] -> 2/3; same; [2,0,1] vs [0,2,1] -> 2/3 (last place agrees); same
    assert r["rank_disagreement"] == pytest.approx((2 / 3 + 0 + 2 / 3 + 0) / 4)
    assert r["prediction_agreement"] == pytest.approx(3 / 4)
    assert r["correct_agreement"] == pytest.approx(1 / 2)  # sample 0 agrees, sample 2 does not
    assert r["incorrect_agreement"] == pytest.approx(1.0)  # both teacher errors copied
    assert r["accuracy"] == pytest.approx(1 / 4)  # model predicts 0,1,0,2 vs labels 0,0,2,1
    c = Comparison().update(teacher, model, labels)
    assert c.copied_errors[0, 1] == 1 and c.copied_errors[1, 2] == 1 and c.copied_errors.sum() == 2


def test_against_scipy_and_sklearn():
    g = torch.Generator().manual_seed(1)
    t, m = torch.randn(200, 6, generator=g) * 2, torch.randn(200, 6, generator=g) * 2
    y = torch.randint(6, (200,), generator=g)
    r = compare(t, m, y)
    p, q = torch.softmax(t.double(), -1).numpy(), torch.softmax(m.double(), -1).numpy()
    assert r["activation_distance"] == pytest.approx(np.linalg.norm(p - q, axis=1).mean())
    assert r["js_divergence"] == pytest.approx((jensenshannon(p, q, axis=1) ** 2).mean())
    lp = torch.log_softmax(m.double(), -1).numpy()
    assert r["loss"] == pytest.approx(-lp[np.arange(200), y.numpy()].mean())
    pt, pm = p.argmax(1), q.argmax(1)
    vi = entropy(np.bincount(pt)) + entropy(np.bincount(pm)) - 2 * mutual_info_score(pt, pm)
    assert r["variation_of_information"] == pytest.approx(vi)
    A, B = p - p.mean(0), q - q.mean(0)
    A, B = A / np.linalg.norm(A), B / np.linalg.norm(B)
    opd = 2 - 2 * np.linalg.svd(A.T @ B, compute_uv=False).sum()
    assert r["procrustes_distance"] == pytest.approx(opd, abs=1e-9)
    assert 0 < r["procrustes_distance"] < 2


def test_procrustes_is_rotation_invariant_and_js_finite_for_extreme_logits():
    t = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]])
    m = torch.tensor([[-1e4, 1e4, 0.0], [1e4, -1e4, 0.0]])
    r = compare(t, m, torch.tensor([0, 0]))  # teacher right once, wrong once
    assert all(math.isfinite(v) for v in r.values())
    assert r["js_divergence"] == pytest.approx(math.log(2))
    assert r["procrustes_distance"] == pytest.approx(0.0, abs=1e-9)  # a permutation of the same outputs


def test_streaming_equals_one_shot_and_sequences_flatten():
    g = torch.Generator().manual_seed(2)
    t, m = torch.randn(6, 30, 9, generator=g), torch.randn(6, 30, 9, generator=g)
    y = torch.randint(9, (6, 30), generator=g)
    one = compare(t, m, y)
    acc = Comparison()
    for s in (slice(0, 1), slice(1, 4), slice(4, 6)):
        acc.update(t[s], m[s], y[s])
    streamed = acc.result()
    flat = compare(t.reshape(-1, 9), m.reshape(-1, 9), y.reshape(-1))
    for k in one:
        assert streamed[k] == pytest.approx(one[k], rel=1e-10, abs=1e-12), k
        assert flat[k] == pytest.approx(one[k], rel=1e-10, abs=1e-12), k


@pytest.mark.parametrize("t, m, y, match", [
    (torch.zeros(3, 4), torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), "does not match model logits"),
    (torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), "labels has shape"),
    (torch.zeros(3, 4), torch.zeros(3, 4), torch.tensor([0, 1, 4]), r"label 4 \(at index 2\) is out of range"),
    (torch.full((3, 4), float("nan")), torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), "NaN"),
])
def test_bad_input(t, m, y, match):
    with pytest.raises(ValueError, match=match):
        compare(t, m, y)


@pytest.fixture
def toy_metric():
    """Top-2 agreement (the teacher's prediction is among the model's two best), registered for one test."""
    from kdlib import metrics
    metrics.register_term("teacher_in_top2", lambda k: (k["q"].topk(2, -1).indices == k["pred_t"][:, None]).any(-1))
    metrics.register_metric(metrics.Metric("top2_agreement", "Top-2 Agreement", False, "extended",
                                           lambda s: metrics.ratio(s["teacher_in_top2"], s["tokens"])))
    yield
    metrics.METRICS.pop("top2_agreement")
    metrics.TERMS.pop("teacher_in_top2")


def test_a_metric_registered_in_metrics_py_reaches_comparison_audit_and_tables(toy_metric, tmp_path):
    import pandas as pd
    from kdlib.audit import _rates, audit
    from kdlib.report import build_report
    teacher = torch.tensor([[3.0, 2.0, 1.0], [0.0, 5.0, 1.0], [1.0, 0.0, 2.0], [0.0, 1.0, 2.0]])
    model = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0], [2.0, 0.0, 1.0], [0.0, 1.0, 2.0]])
    y = torch.tensor([0, 0, 2, 1])
    # model top-2: {1,2}, {0,2}, {0,2}, {2,1}; teacher top-1: 0, 1, 2, 2 -> in top-2 for samples 2 and 3
    assert compare(teacher, model, y)["top2_agreement"] == pytest.approx(0.5)
    units = Comparison().update(teacher, model, y, units=torch.arange(4)).unit_sums()  # the bootstrap's input
    assert _rates(units.sum(0))["top2_agreement"] == pytest.approx(0.5)
    assert audit(teacher, model, y, n_boot=2)["models"]["student"][0]["top2_agreement"] == pytest.approx(0.5)
    g = np.random.default_rng(0)
    rows = [{"teacher_seed": 0, "student_seed": s, "condition": c, "alpha": a,
             **{m: g.random() for m in ("activation_distance", "rank_disagreement", "prediction_disagreement",
                                        "js_divergence", "variation_of_information", "procrustes_distance",
                                        "accuracy", "loss", "correct_agreement", "incorrect_agreement",
                                        "top2_agreement")}}
            for s in range(10, 16) for c, a in (("siddo", np.nan), ("kd", 0.5), ("rcd", 0.5))]
    build_report(pd.DataFrame(rows), "toy", tmp_path)
    extended = pd.read_csv(tmp_path / "extended_teacher0.csv", index_col=0)
    assert "Top-2 Agreement (↑)" in extended.index
    assert "Top-2 Agreement (↑)" not in pd.read_csv(tmp_path / "means_teacher0.csv", index_col=0).index
