"""What a verdict's evidence is worth (kdlib.analysis.evidence), each definition against an independent computation:
the vectorised signed-rank test against scipy and a hand-worked tie; stability on verdicts built to sit on the edge
and far from it; mde80 against the normal approximation; the calibrated rule's null rate and power on simulations
whose truth is known; and what each analysis reading changes."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from conftest import copy_runs
from kdlib import analysis, setups
from kdlib.__main__ import main
from kdlib.analysis.collect import collect
from kdlib.analysis.evidence import (FRAGILE, calibrate, calibration_summary, detectable, mde, mde_normal,
                                     signed_rank_p, stability)
from kdlib.analysis.stats import Rule, adjust, agreement_deltas, enough_ticks, transfer_tests, verdict
from kdlib.metrics import FUNCTIONAL_METRICS, lower_is_better
from kdlib.store import setup_dir

pytestmark = pytest.mark.kernels  # numeric tolerances: CI runs them on a second kernel path too

METRICS = list(FUNCTIONAL_METRICS) + ["accuracy", "loss", "correct_agreement", "incorrect_agreement"]
SIGN = np.array([-1.0 if lower_is_better(m) else 1.0 for m in METRICS])  # towards each metric's better side


def runs_with(gains, n_seeds: int = 10, noise: float = 0.0, seed: int = 0, alpha: float = 0.5,
              asymmetry: float = 0.05) -> pd.DataFrame:
    """Teacher seed 0, one alpha: SIDDO and RCD at 0.3 on every metric (plus ``noise``), KD better by ``gains[i]``
    at student seed i on every functional metric, and its incorrect agreement up by ``asymmetry`` more."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, s in enumerate(range(10, 10 + n_seeds)):
        for cond in ("siddo", "rcd"):
            rows.append(dict(teacher_seed=0, student_seed=s, condition=cond, alpha=np.nan if cond == "siddo" else alpha,
                             **dict(zip(METRICS, 0.3 + rng.normal(0, noise, len(METRICS)) if noise else
                                        np.full(len(METRICS), 0.3)))))
        kd = 0.3 + SIGN * gains[i]
        kd[-1] += asymmetry
        rows.append(dict(teacher_seed=0, student_seed=s, condition="kd", alpha=alpha, **dict(zip(METRICS, kd))))
    return pd.DataFrame(rows)


def test_the_vectorised_signed_rank_test_is_scipys_exact_one_and_handles_ties_by_hand():
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = rng.normal(0.3, 1.0, rng.integers(3, 16))
        assert signed_rank_p(d[None])[0] == pytest.approx(wilcoxon(d, alternative="greater").pvalue, abs=1e-15)
        assert signed_rank_p(-d[None])[0] == pytest.approx(wilcoxon(d, alternative="less").pvalue, abs=1e-15)
    # [1, 1, -1, 2, 0]: the zero dropped, ranks (2, 2, 2, 4), W+ = 8; sign patterns with W+ >= 8: 4 of 16
    assert signed_rank_p(np.array([[1.0, 1.0, -1.0, 2.0, 0.0]]))[0] == 0.25
    assert signed_rank_p(np.zeros((1, 4)))[0] == 1.0 and signed_rank_p(np.ones((2, 3))).tolist() == [0.125, 0.125]


def test_a_verdict_on_the_edge_is_half_stable_and_one_far_from_it_fully():
    # on the edge: every metric significant at every resample, the mean gain centred on the marginal threshold, so
    # about half the resamples say "supported" and half "marginal"
    edge = runs_with(0.01 + np.array([-1, 1, -2, 2, -3, 3, -4, 4, -5, 5]) * 0.001)
    far = runs_with(0.2 + np.linspace(-0.01, 0.01, 10))
    for runs, low, high in ((edge, 0.35, 0.65), (far, 0.99, 1.0)):
        tests = transfer_tests(runs)
        seen = verdict(int(tests[tests.family == "functional"]["tick"].sum()), 4,
                       tests["mean_functional_improvement"].iloc[0])
        deltas = agreement_deltas(runs)
        table = pd.DataFrame([{"teacher_seed": 0, "alpha": 0.5, "verdict": seen,
                               "negative_asymmetry": bool(deltas["negative_asymmetry"].iloc[0])}])
        got = stability(runs, table, n_boot=2000).iloc[0]
        assert low <= got["verdict_stability"] <= high, (seen, got["verdict_stability"])
        assert got["asymmetry_stability"] == 1.0  # incorrect agreement is up by 0.05 more at every seed
    assert FRAGILE == 0.8


def test_mde80_is_the_normal_approximation_within_a_quarter():
    for n, sd, p_star in ((20, 1.0, 0.05), (20, 0.02, 0.0125), (30, 0.5, 0.01)):
        exact, approx = mde(sd, n, p_star, draws=2000), mde_normal(sd, n, p_star)
        assert abs(exact / approx - 1) < 0.25, (n, sd, p_star, exact, approx)
    assert mde(1.0, 6, 0.05 / 8) == math.inf  # 6 pairs give no p below 1/64: nothing is detectable
    assert mde(0.0, 10, 0.05) == 0.0


def test_each_test_that_is_not_significant_gets_its_mde80():
    runs = runs_with(np.full(10, 0.002), noise=0.01, seed=3)  # a small gain in noise: mostly not significant
    tests = detectable(runs, transfer_tests(runs))
    for _, row in tests.iterrows():
        for c in ("siddo", "rcd"):
            assert math.isnan(row[f"mde80_{c}"]) == bool(row[f"sig_{c}"])
        assert row["mde80"] == pytest.approx(np.nanmax([row["mde80_siddo"], row["mde80_rcd"]]))
    # what a lone functional test needs: about (z_{1-p*} + z_0.8) sd / sqrt(n) / sqrt(3/pi) at the BH threshold
    row = tests[(tests.family == "functional") & ~tests.sig_siddo].iloc[0]
    kd = runs[runs.condition == "kd"].set_index("student_seed")[row["metric"]]
    siddo = runs[runs.condition == "siddo"].set_index("student_seed")[row["metric"]]
    assert row["mde80_siddo"] > 0.5 * mde_normal(float(np.std(kd - siddo, ddof=1)), 10, 0.05)


def test_the_calibrated_rule_keeps_its_null_rate_and_finds_a_large_effect():
    rng = np.random.default_rng(7)
    rows = []
    for s in range(10, 20):  # no condition differs: every value noise around a seed's own level
        level = rng.normal(0.3, 0.02)
        for cond, alpha in (("siddo", np.nan), ("rcd", 0.5), ("kd", 0.5)):
            rows.append(dict(teacher_seed=0, student_seed=s, condition=cond, alpha=alpha,
                             **dict(zip(METRICS, level + rng.normal(0, 0.01, len(METRICS))))))
    table = calibrate(pd.DataFrame(rows), draws=2000, effects=(0.0, 0.2), seeds=(10,), power_draws=400)
    null = table[table["kind"] == "null_rate"].iloc[0]
    assert null["p_supported"] <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)
    assert null["low"] <= null["p_supported"] <= null["high"]
    power = table[(table["kind"] == "power")].set_index("effect")["p_supported"]
    assert power[0.2] >= 0.95 and power[0.0] <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400)
    summary = calibration_summary(table)
    assert summary["null"] == null["p_supported"] and summary["power"][(10, 0.2)] == power[0.2]


def test_the_fdr_family_reading_flips_the_papers_example():
    """SIDDO p-values 0.0186, 0.0244, 0.042 and 0.097, RCD's all 1/1024: one family of 8 gives 3 ticks
    (supported), a family of 4 per control gives 2 (not supported)."""
    p = np.array([[0.0186, 1 / 1024], [0.0244, 1 / 1024], [0.042, 1 / 1024], [0.097, 1 / 1024]])
    ticks = {family: int((adjust(p, family) < 0.05).all(-1).sum()) for family in ("setting", "per-control")}
    assert ticks == {"setting": 3, "per-control": 2}
    assert verdict(3, 4, 0.05) == "supported" and verdict(2, 4, 0.05) == "not supported"
    assert verdict(2, 4, 0.05, majority="half") == "supported" and enough_ticks(2, 4, "half")  # the majority reading
    assert verdict(3, 4, 0.02, marginal_threshold=0.03) == "marginal"  # the marginal-threshold reading
    with pytest.raises(ValueError, match="fdr_family='each' is not allowed"):
        Rule(fdr_family="each")


def test_the_best_control_reading_leaves_out_a_collapsed_control():
    runs = runs_with(np.full(10, 0.2))
    rcd9 = runs[runs.condition == "rcd"].assign(alpha=0.9, accuracy=0.1, correct_agreement=0.9)  # collapsed, but
    runs = pd.concat([runs, rcd9], ignore_index=True)  # the highest correct agreement
    assert agreement_deltas(runs)["control_correct"].iloc[0] == "rcd 0.9"
    assert agreement_deltas(runs, best_control="exclude-collapsed")["control_correct"].iloc[0] != "rcd 0.9"
    assert agreement_deltas(runs, best_control="same-alpha")["control_correct"].iloc[0] != "rcd 0.9"


def test_analysis_readings_reanalyse_collected_runs_beside_the_default(smoke_store, tmp_path, capsys):
    name = "tinyshakespeare-nanogpt"
    setup = setups.get(name, "smoke")
    copy_runs(setup, smoke_store, tmp_path)
    collect(setup, tmp_path)
    stored = analysis.read(setup_dir(tmp_path, setup))
    assert {"verdict_stability", "asymmetry_stability", "mde80"} <= set(stored["verdicts"])
    assert {"mde80", "mde80_siddo", "mde80_rcd", "verdict_stability"} <= set(stored["tests"])
    assert main(["summary", "--profile", "smoke", "--out", str(tmp_path), "--reading", "majority=half"]) == 0
    assert "stability" in capsys.readouterr().out
    other = setups.get(name, "smoke", ["majority=half"])
    assert analysis.read(setup_dir(tmp_path, other)) is not None  # stored beside the default analysis
    assert pd.read_csv(setup_dir(tmp_path, other) / "runs.csv")["run_id"].tolist() == \
        pd.read_csv(setup_dir(tmp_path, setup) / "runs.csv")["run_id"].tolist()  # the same runs
    assert main(["calibrate", name, "--profile", "smoke", "--out", str(tmp_path), "--figures", str(tmp_path / "fig"),
                 "--draws", "200"]) == 0
    printed = capsys.readouterr().out
    assert "null rate" in printed and "power at 10 seeds" in printed
    table = pd.read_csv(setup_dir(tmp_path, setup) / "analysis" / "calibration.csv")
    assert set(table["kind"]) == {"null_rate", "power"} and set(table["n_seeds"]) >= {5, 10, 20}
    assert (tmp_path / "fig" / name / "smoke" / "power.pdf").exists()
    assert (tmp_path / "fig" / name / "smoke" / "power.png").exists()


def test_an_uncalibrated_rule_is_said_so_where_the_verdicts_are_shown(smoke_store, tmp_path, capsys):
    name = "tinyshakespeare-nanogpt"
    setup = setups.get(name, "smoke")
    copy_runs(setup, smoke_store, tmp_path)
    collect(setup, tmp_path)
    assert main(["summary", "--profile", "smoke", "--out", str(tmp_path)]) == 0
    assert "WARNING" not in capsys.readouterr().out  # not calibrated yet: nothing said
    pd.DataFrame([{"teacher_seed": 0, "alpha": 0.5, "kind": "null_rate", "n_seeds": 2, "effect": 0.0, "draws": 100,
                   "p_supported": 0.2, "low": 0.13, "high": 0.29, "p_supported_or_marginal": 0.3}]).to_csv(
        setup_dir(tmp_path, setup) / "analysis" / "calibration.csv", index=False)
    assert main(["summary", "--profile", "smoke", "--out", str(tmp_path)]) == 0
    assert f'{name}: WARNING: its verdict rule says "supported" in 20.0% of runs' in capsys.readouterr().out
    assert main(["report", name, "--profile", "smoke", "--out", str(tmp_path), "--figures", str(tmp_path / "f")]) == 0
    assert "WARNING" in capsys.readouterr().out


def test_the_asymmetry_bootstrap_leaves_out_the_excluded_controls():
    runs = runs_with(np.full(10, 0.2), noise=0.001, seed=1)
    rcd9 = runs[runs.condition == "rcd"].assign(alpha=0.9, incorrect_agreement=0.9)  # the best incorrect agreement
    runs = pd.concat([runs, rcd9], ignore_index=True)
    observed = analysis.analyse(runs, exclude=[("rcd", 0.9)], n_boot=300)["verdicts"].iloc[0]
    assert observed["negative_asymmetry"] and observed["asymmetry_stability"] == 1.0
    assert not analysis.analyse(runs, n_boot=300)["verdicts"].iloc[0]["negative_asymmetry"]  # with RCD 0.9 best


def test_a_missing_value_gives_no_p_value_and_breaks_nothing():
    assert np.isnan(signed_rank_p(np.array([[1.0, np.nan, 2.0, 3.0]]))[0])
    assert math.isnan(mde(float("nan"), 5, 0.05))
    runs = runs_with(np.full(10, 0.2), noise=0.01)
    runs.loc[runs.index[2], "js_divergence"] = np.nan
    verdicts = analysis.analyse(runs, n_boot=200)["verdicts"]
    assert len(verdicts) == 1 and 0 <= verdicts["verdict_stability"].iloc[0] <= 1


def test_a_verdicts_mde80_is_detected_by_the_whole_rule_about_80_percent_of_the_time():
    from kdlib.analysis.evidence import _group, rule_verdicts, transfer_mde
    runs = runs_with(np.zeros(10), noise=0.01, seed=5)  # no transfer: "not supported"
    delta = transfer_mde(runs, 0, 0.5)
    assert 0 < delta < 0.05
    kd, ctrl, seeds = _group(runs, 0, 0.5, FUNCTIONAL_METRICS)
    values = np.stack([kd, *ctrl.values()], axis=1)
    centred = values - values.mean(0, keepdims=True) + values.mean((0, 1), keepdims=True)
    fresh = centred[np.random.default_rng(99).integers(0, 10, size=(2000, 10))]  # other resamples than its own
    for scale, low, high in ((1.0, 0.7, 0.9), (2.0, 0.97, 1.0), (0.25, 0.0, 0.3)):
        planted = fresh.copy()
        planted[..., 0, :] += scale * delta
        labels = rule_verdicts(planted[..., 0, :], {"siddo": planted[..., 1, :], "rcd": planted[..., 2, :]},
                               Rule(), len(FUNCTIONAL_METRICS))
        assert low <= np.mean(labels != "not supported") <= high, (scale, np.mean(labels != "not supported"))
