"""Hypothesis tests and agreement deltas of the study (paper Sections 3.2-3.3).

Choices the paper leaves open, fixed here:
- Pairing: KD(alpha) is paired with SIDDO and with RCD(alpha) on ``student_seed`` within a teacher seed
  (same init, same data order). Missing partners raise, or with ``on_missing="drop"`` are reported in the
  ``missing_pairs`` column and left out.
- Wilcoxon: ``scipy.stats.wilcoxon`` on the paired differences with its defaults (exact null distribution
  for small samples without ties, zero differences dropped); all-zero differences give p = 1.
- FDR family: Benjamini-Hochberg over every (functional metric, control) p-value of one (teacher seed,
  alpha), i.e. 4 metrics x 2 controls = 8 tests; accuracy and loss are tested at ``alpha_level`` uncorrected.
- Tick: significant against both controls. ``supported``: a strict majority of the functional metrics ticked.
- ``marginal``: supported, but the mean over functional metrics of KD's improvement over the better control
  (in each metric's preferred direction, absolute units) is below ``marginal_threshold`` (default 0.01; the
  paper calls gains of <= 0.002-0.004 marginal and 0.03-0.06 substantial).
- Agreement deltas: "best control" is chosen per quantity (correct / incorrect agreement) as the control
  condition with the highest mean agreement among SIDDO and every RCD alpha of that teacher seed (or only
  RCD at the same alpha with ``same_alpha=True``), minus ``exclude``. Means and SEMs are over per-seed paired
  differences KD - control.
- Headroom-normalised deltas: mean(KD - control) / mean(1 - control), a ratio of means (:func:`normalised_delta`).
  The mean of per-seed ratios, (KD - control) / (1 - control), lets one seed whose control is near 1 (almost no
  headroom) dominate and can flip the sign of a positive raw delta; the ratio of means has the raw delta's sign
  whenever the control has any headroom. Its uncertainty comes from a paired bootstrap over seeds.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests

from ..conditions import CONDITIONS, STUDENT_CONDITIONS
from ..metrics import FUNCTIONAL_METRICS, METRICS, lower_is_better

PERFORMANCE_METRICS = ("accuracy", "loss")
KEY = ["teacher_seed", "student_seed", "condition", "alpha"]
MARGINAL = 0.01  # the default marginal threshold: a mean functional improvement below it is marginal
VERDICTS = ("supported", "marginal", "not supported")


def verdict(n_ticked: int, n_metrics: int, mean_improvement: float, marginal_threshold: float = MARGINAL) -> str:
    """The transfer verdict, the study's one rule: ``supported`` when a strict majority of the functional metrics
    is ticked (significant against both controls), ``marginal`` when supported but KD's mean improvement over
    the better control is below ``marginal_threshold``, else ``not supported``."""
    if not n_ticked > n_metrics / 2:
        return "not supported"
    return "marginal" if mean_improvement < marginal_threshold else "supported"


def verdict_label(supported: bool, marginal: bool) -> str:
    """The label of :func:`verdict` from the ``supported`` / ``marginal`` flags of :func:`transfer_tests`."""
    return ("marginal" if marginal else "supported") if supported else "not supported"


def sem(x) -> float:
    """Standard error of the mean over seeds (sample standard deviation / sqrt(n)); NaN for fewer than two."""
    x = np.asarray(x, float)
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """BH-adjusted p-values (statsmodels' ``fdr_bh``: step-up, monotone, capped at 1); NaNs stay NaN and are not
    counted in the family."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return out


def one_sided_wilcoxon(model: np.ndarray, control: np.ndarray, lower_is_better: bool) -> float:
    """p-value of H_a: ``model`` is better than ``control`` (paired), in the metric's preferred direction."""
    d = np.asarray(model, float) - np.asarray(control, float)
    if len(d) == 0:
        return math.nan
    if np.all(d == 0):
        return 1.0
    return float(wilcoxon(d, alternative="less" if lower_is_better else "greater").pvalue)


def _validate(runs: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    missing = [c for c in KEY + list(metrics) if c not in runs.columns]
    if missing:
        raise ValueError(f"runs table lacks columns {missing}; it needs {KEY} and one column per metric")
    bad = sorted(set(runs["condition"]) - set(STUDENT_CONDITIONS))
    if bad:
        raise ValueError(f"unknown condition(s) {bad}: allowed conditions are {list(STUDENT_CONDITIONS)}")
    tested = [c for c in STUDENT_CONDITIONS if c == "kd" or CONDITIONS[c].control]
    runs = runs[runs["condition"].isin(tested)].copy()
    runs.loc[runs["condition"] == "siddo", "alpha"] = np.nan
    dup = runs[runs.duplicated(KEY, keep=False)]
    if len(dup):
        raise ValueError(f"runs table has duplicate rows for {dup[KEY].drop_duplicates().to_dict('records')}")
    return runs


def _paired(runs: pd.DataFrame, teacher_seed, alpha: float, on_missing: str):
    """Index KD(alpha), SIDDO and RCD(alpha) rows of one teacher by student seed, checking the pairing."""
    t = runs[runs["teacher_seed"] == teacher_seed]
    kd = t[(t["condition"] == "kd") & np.isclose(t["alpha"], alpha)].set_index("student_seed")
    siddo = t[t["condition"] == "siddo"].set_index("student_seed")
    rcd = t[(t["condition"] == "rcd") & np.isclose(t["alpha"], alpha)].set_index("student_seed")
    seeds = set(kd.index) | set(siddo.index) | set(rcd.index)
    common = sorted(set(kd.index) & set(siddo.index) & set(rcd.index))
    missing = [f"{name} seed {s}" for name, df in (("kd", kd), ("siddo", siddo), ("rcd", rcd))
               for s in sorted(seeds - set(df.index))]
    if missing and on_missing == "raise":
        raise ValueError(f"teacher seed {teacher_seed}, alpha {alpha}: runs missing to complete the pairing on "
                         f"student_seed: {missing}; every KD seed needs a SIDDO and an RCD partner")
    return kd.loc[common], siddo.loc[common], rcd.loc[common], missing


def transfer_tests(runs: pd.DataFrame, alpha_level: float = 0.05, metrics: Sequence[str] = FUNCTIONAL_METRICS,
                   marginal_threshold: float = MARGINAL, on_missing: str = "raise") -> pd.DataFrame:
    """Paired one-sided Wilcoxon tests of KD(alpha) against SIDDO and RCD(alpha), with BH-FDR.

    Returns one row per (teacher_seed, alpha, metric) with the means, raw and adjusted p-values, per-control
    significance, the tick, and the per-(teacher_seed, alpha) verdicts ``supported`` and ``marginal``.
    """
    if on_missing not in ("raise", "drop"):
        raise ValueError(f"on_missing={on_missing!r} is not allowed: use 'raise' or 'drop'")
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}: allowed are {list(METRICS)}")
    tested = metrics + [m for m in PERFORMANCE_METRICS if m not in metrics]
    runs = _validate(runs, tested)
    rows = []
    kd_rows = runs[runs["condition"] == "kd"]
    for (teacher_seed, alpha), _ in kd_rows.groupby(["teacher_seed", "alpha"], sort=True):
        kd, siddo, rcd, missing = _paired(runs, teacher_seed, alpha, on_missing)
        group = []
        for metric in tested:
            lower = lower_is_better(metric)
            means = {c: float(df[metric].mean()) if len(df) else math.nan
                     for c, df in (("kd", kd), ("siddo", siddo), ("rcd", rcd))}
            best_control = min(means["siddo"], means["rcd"]) if lower else max(means["siddo"], means["rcd"])
            group.append({
                "teacher_seed": teacher_seed, "alpha": alpha, "metric": metric,
                "family": "functional" if metric in metrics else "performance",
                "n_pairs": len(kd), "kd_mean": means["kd"], "siddo_mean": means["siddo"],
                "rcd_mean": means["rcd"],
                "improvement": (best_control - means["kd"]) * (1 if lower else -1),
                "p_siddo": one_sided_wilcoxon(kd[metric], siddo[metric], lower),
                "p_rcd": one_sided_wilcoxon(kd[metric], rcd[metric], lower),
                "missing_pairs": "; ".join(missing),
            })
        functional = [r for r in group if r["family"] == "functional"]
        adjusted = benjamini_hochberg([r[k] for r in functional for k in ("p_siddo", "p_rcd")])
        for i, r in enumerate(functional):
            r["p_adj_siddo"], r["p_adj_rcd"] = adjusted[2 * i], adjusted[2 * i + 1]
        for r in group:
            if r["family"] == "performance":
                r["p_adj_siddo"], r["p_adj_rcd"] = r["p_siddo"], r["p_rcd"]
            r["sig_siddo"] = bool(r["p_adj_siddo"] < alpha_level)
            r["sig_rcd"] = bool(r["p_adj_rcd"] < alpha_level)
            r["tick"] = r["sig_siddo"] and r["sig_rcd"]
        mean_improvement = float(np.mean([r["improvement"] for r in functional]))
        label = verdict(sum(r["tick"] for r in functional), len(functional), mean_improvement, marginal_threshold)
        for r in group:
            r["supported"] = label != "not supported"
            r["mean_functional_improvement"] = mean_improvement
            r["marginal"] = label == "marginal"
        rows += group
    columns = ["teacher_seed", "alpha", "metric", "family", "n_pairs", "kd_mean", "siddo_mean", "rcd_mean",
               "improvement", "p_siddo", "p_rcd", "p_adj_siddo", "p_adj_rcd", "sig_siddo", "sig_rcd", "tick",
               "supported", "marginal", "mean_functional_improvement", "missing_pairs"]
    return pd.DataFrame(rows, columns=columns)


def normalised_delta(model: np.ndarray, control: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """KD's agreement gain as a share of the control's headroom: mean(model - control) / mean(1 - control).

    Uncertainty: a paired bootstrap over seeds (``n_boot`` resamples of the (model, control) pairs with
    ``numpy.random.default_rng(seed)``): ``se`` (the replicates' standard deviation, comparable to an SEM) and the
    percentile 95% interval ``low``-``high``. NaN where the control has no headroom at all."""
    model, control = np.asarray(model, float), np.asarray(control, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(np.mean(model - control) / np.mean(1.0 - control))
        if len(model) < 2:
            return {"value": value, "se": math.nan, "low": math.nan, "high": math.nan}
        idx = np.random.default_rng(seed).integers(0, len(model), size=(n_boot, len(model)))
        reps = (model[idx] - control[idx]).mean(1) / (1.0 - control[idx]).mean(1)
    reps = reps[np.isfinite(reps)]
    if not len(reps):
        return {"value": value, "se": math.nan, "low": math.nan, "high": math.nan}
    low, high = np.percentile(reps, [2.5, 97.5])
    return {"value": value, "se": float(np.std(reps, ddof=1)), "low": float(low), "high": float(high)}


def _control_key(condition: str, alpha) -> tuple[str, float | None]:
    return (condition, None if condition == "siddo" or pd.isna(alpha) else round(float(alpha), 6))


def agreement_deltas(runs: pd.DataFrame, exclude: Iterable[tuple[str, float | None]] = (),
                     same_alpha: bool = False) -> pd.DataFrame:
    """Eqs. 2-3: KD's change in teacher-correct and teacher-incorrect agreement against the best control.

    One row per (teacher_seed, alpha) with, for q in (correct, incorrect): ``delta_q`` and ``delta_q_sem``
    (mean +- SEM over student seeds of the paired difference KD - control), ``control_q`` (which control),
    ``delta_q_normalised`` (:func:`normalised_delta`: mean difference over mean headroom 1 - agreement; its
    bootstrap standard error ``_sem`` and 95% interval ``_low``-``_high``), ``n_q`` (paired seeds) and
    ``negative_asymmetry`` (delta_incorrect > delta_correct). ``exclude`` lists controls to leave out as
    ``("rcd", 0.9)`` or ``("siddo", None)``.
    """
    runs = _validate(runs, ["correct_agreement", "incorrect_agreement"])
    excluded = {_control_key(c, a) for c, a in exclude}
    rows = []
    for (teacher_seed, alpha), kd in runs[runs["condition"] == "kd"].groupby(["teacher_seed", "alpha"]):
        t = runs[(runs["teacher_seed"] == teacher_seed) & (runs["condition"] != "kd")]
        controls = {}
        for (cond, a), df in t.groupby(["condition", t["alpha"].fillna(-1.0)]):
            key = _control_key(cond, None if a == -1.0 else a)
            if key in excluded or (same_alpha and cond == "rcd" and not np.isclose(a, alpha)):
                continue
            controls[key] = df.set_index("student_seed")
        if not controls:
            raise ValueError(f"teacher seed {teacher_seed}, alpha {alpha}: no control left after "
                             f"exclude={sorted(excluded)}")
        kd = kd.set_index("student_seed")
        row = {"teacher_seed": teacher_seed, "alpha": alpha}
        for q in ("correct", "incorrect"):
            col = f"{q}_agreement"
            best = max(controls, key=lambda k: controls[k][col].mean())
            ctrl = controls[best]
            seeds = sorted(set(kd.index) & set(ctrl.index))
            if not seeds:
                raise ValueError(f"teacher seed {teacher_seed}, alpha {alpha}: KD and control {best} share no "
                                 f"student_seed to pair on")
            k, c = kd.loc[seeds, col].to_numpy(float), ctrl.loc[seeds, col].to_numpy(float)
            diff, norm = k - c, normalised_delta(k, c)
            row.update({
                f"control_{q}": best[0] if best[1] is None else f"{best[0]} {best[1]:g}",
                f"kd_{q}": float(k.mean()), f"control_{q}_mean": float(c.mean()),
                f"delta_{q}": float(diff.mean()), f"delta_{q}_sem": sem(diff),
                f"delta_{q}_normalised": norm["value"], f"delta_{q}_normalised_sem": norm["se"],
                f"delta_{q}_normalised_low": norm["low"], f"delta_{q}_normalised_high": norm["high"],
                f"n_{q}": len(seeds),
            })
        row["negative_asymmetry"] = bool(row["delta_incorrect"] > row["delta_correct"])
        rows.append(row)
    return pd.DataFrame(rows)
