"""A new condition and a new control touch two tables alone: ``kdlib.conditions.CONDITIONS`` and
``kdlib.engine.objectives.OBJECTIVES``. A fixture registers a toy distillation condition (logit MSE to the teacher)
and a toy control, and the plan, the engine (solo and packed) and the statistics pick them up with no other edit."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests

from kdlib import setups
from kdlib.conditions import CONDITIONS, Condition, controls
from kdlib.data.sources import ExampleData
from kdlib.engine.objectives import OBJECTIVES, Objective, ObjectiveRow, objective_loss
from kdlib.engine.recipe import Recipe
from kdlib.engine.together import train_together
from kdlib.engine.train import init_model, train
from kdlib.engine.evaluate import teacher_logits_on
from kdlib.analysis.stats import agreement_deltas, transfer_tests
from kdlib.metrics import FUNCTIONAL_METRICS, lower_is_better
from kdlib.runs.spec import packs, plan

pytestmark = pytest.mark.kernels  # numeric tolerances: CI runs them on a second kernel path too


def _logit_mse(o, logits, y, s):
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return (1 - o.alpha) * ce + o.alpha * (logits - s.teacher_logits).pow(2).mean()


@pytest.fixture
def toy(monkeypatch):
    """A distillation condition ``mse`` (its objective reads the teacher's logits) and a control ``shuffled``
    (plain CE, unweighted, tested against like SIDDO)."""
    monkeypatch.setitem(OBJECTIVES, "logit_mse", ObjectiveRow(_logit_mse, teacher="logits"))
    monkeypatch.setitem(CONDITIONS, "mse", Condition("mse", "MSE", "logit_mse", group="Logit MSE"))
    monkeypatch.setitem(CONDITIONS, "shuffled", Condition("shuffled", "Shuffled", "ce", control=True,
                                                          weighted=False))


def test_the_toy_condition_and_control_are_planned_and_packed(toy):
    base = setups.get("fsdd-vggish", "smoke")
    setup = dataclasses.replace(base, conditions=("siddo", "kd", "rcd", "mse", "shuffled"))
    specs = plan(setup)
    students = [s for s in specs if s.role == "student"]
    per_seed = len(setup.student_seeds) * len(setup.teacher_seeds)
    assert sum(s.condition == "mse" for s in students) == per_seed * len(setup.alphas)  # weighted: every alpha
    assert sum(s.condition == "shuffled" for s in students) == per_seed  # unweighted: once
    assert {s.objective.kind for s in students if s.condition == "mse"} == {"logit_mse"}
    assert all(s.objective.needs_teacher for s in students if s.condition == "mse")
    jobs = packs(students, 4)
    assert any(isinstance(j, tuple) and any(s.condition == "mse" for s in j) for j in jobs)
    # the default plan is untouched: the toy conditions enter no run id of another condition
    assert {s.run_id for s in plan(base)} <= {s.run_id for s in specs}
    with pytest.raises(ValueError, match="unknown conditions \\['nope'\\]; allowed .*mse, shuffled"):
        dataclasses.replace(base, conditions=("siddo", "nope"))


def _task():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randint(3, (64,), generator=g)
    build = lambda: torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    return ExampleData(x, y), build


def test_the_toy_objective_trains_from_the_teacher_or_its_cache_and_its_loss_is_the_hand_computed_one(toy):
    data, build = _task()
    teacher = init_model(build, 0)
    objective = Objective("logit_mse", alpha=0.5)
    logits, y = torch.randn(6, 3), torch.randint(3, (6,))
    t = torch.randn(6, 3)
    by_hand = 0.5 * F.cross_entropy(logits, y) + 0.5 * ((logits - t) ** 2).sum() / 18
    got = objective_loss(objective, logits, None, y, torch.arange(6), None, t)
    torch.testing.assert_close(got, by_hand)
    recipe = Recipe("sgd", lr=0.1, batch_size=16, steps=8)
    live, cached = init_model(build, 1), init_model(build, 1)
    train(live, data, objective, recipe, data_seed=10, teacher=teacher)
    train(cached, data, objective, recipe, data_seed=10, teacher_cache=teacher_logits_on(teacher, data, 64))
    for a, b in zip(live.parameters(), cached.parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="'logit_mse' needs a teacher"):
        train(init_model(build, 1), data, objective, recipe, data_seed=10)


def test_a_pack_with_the_toy_objective_equals_one_by_one(toy):
    data, build = _task()
    teacher = init_model(build, 0)
    cache = teacher_logits_on(teacher, data, 64)
    objectives = [Objective("ce"), Objective("logit_mse", alpha=0.5), Objective("kd", alpha=0.5)]
    recipe = Recipe("sgd", lr=0.1, batch_size=16, steps=8)
    packed = [init_model(build, 1) for _ in objectives]
    train_together(packed, data, objectives, recipe, [10, 11, 12], teacher_cache=cache)
    for model, objective, seed in zip(packed, objectives, [10, 11, 12]):
        alone = init_model(build, 1)
        train(alone, data, objective, recipe, data_seed=seed, teacher_cache=cache)
        for a, b in zip(alone.parameters(), model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


METRICS = list(FUNCTIONAL_METRICS) + ["accuracy", "loss", "correct_agreement", "incorrect_agreement"]


def _runs(effect_vs_shuffled: float, seed: int = 0) -> pd.DataFrame:
    """KD(0.5) beats SIDDO and RCD by 0.2 on every metric, and the toy control by ``effect_vs_shuffled``."""
    rng = np.random.default_rng(seed)
    signs = np.array([-1, -1, -1, -1, 1, -1, 1, 1])  # towards each metric's preferred direction
    rows = []
    for s in range(10, 20):
        base = rng.normal(0.3, 0.01, size=len(METRICS))
        noise = lambda: rng.normal(0, 0.01, len(METRICS))
        rows.append(dict(teacher_seed=0, student_seed=s, condition="siddo", alpha=np.nan,
                         **dict(zip(METRICS, base + noise()))))
        rows.append(dict(teacher_seed=0, student_seed=s, condition="rcd", alpha=0.5,
                         **dict(zip(METRICS, base + noise()))))
        kd = base + noise() + signs * 0.2
        rows.append(dict(teacher_seed=0, student_seed=s, condition="shuffled", alpha=np.nan,
                         **dict(zip(METRICS, kd - signs * effect_vs_shuffled + noise()))))
        rows.append(dict(teacher_seed=0, student_seed=s, condition="kd", alpha=0.5, **dict(zip(METRICS, kd))))
    return pd.DataFrame(rows)


def test_kd_is_tested_against_the_toy_control_too(toy):
    assert controls() == ("siddo", "rcd", "shuffled")
    runs = _runs(effect_vs_shuffled=0.2)
    res = transfer_tests(runs)
    assert {"p_shuffled", "p_adj_shuffled", "sig_shuffled", "shuffled_mean"} <= set(res.columns)
    functional = res[res.family == "functional"]
    # the FDR family: 4 metrics x 3 controls, recomputed with scipy and statsmodels
    by = lambda c: runs[runs.condition == c].set_index("student_seed").sort_index()
    kd, others = by("kd"), {c: by(c) for c in ("siddo", "rcd", "shuffled")}
    raw = []
    for metric in FUNCTIONAL_METRICS:
        side = "less" if lower_is_better(metric) else "greater"
        for c in ("siddo", "rcd", "shuffled"):
            raw.append(wilcoxon(kd[metric], others[c][metric], alternative=side).pvalue)
    adjusted = multipletests(raw, method="fdr_bh")[1]
    got = functional[[f"p_adj_{c}" for c in ("siddo", "rcd", "shuffled")]].to_numpy().ravel()
    np.testing.assert_allclose(got, adjusted)
    assert functional["tick"].all() and res["supported"].all()
    # KD no better than the toy control: no tick, whatever SIDDO and RCD say
    res = transfer_tests(_runs(effect_vs_shuffled=0.0))
    functional = res[res.family == "functional"]
    assert functional["sig_siddo"].all() and functional["sig_rcd"].all()
    assert not functional["tick"].any() and not res["supported"].any()
    # the toy control is a candidate best control of the agreement deltas
    deltas = agreement_deltas(_runs(effect_vs_shuffled=0.0))
    assert set(deltas["control_correct"]) == {"shuffled"}
