"""Hypothesis tests and agreement deltas of the study (paper Sections 3.2-3.3).

Choices the paper leaves open, fixed here:
- Pairing: KD(alpha) is paired with each control of :mod:`kdlib.conditions` (SIDDO, and RCD at the same alpha)
  on ``student_seed`` within a teacher seed (same init, same data order). Missing partners raise, or with
  ``on_missing="drop"`` are reported in the ``missing_pairs`` column and left out.
- Wilcoxon: ``scipy.stats.wilcoxon`` on the paired differences with its defaults (exact null distribution
  for small samples without ties, zero differences dropped); all-zero differences give p = 1.
- FDR family: Benjamini-Hochberg over every (functional metric, control) p-value of one (teacher seed,
  alpha), i.e. 4 metrics x 2 controls = 8 tests; accuracy and loss are tested at ``alpha_level`` uncorrected.
- Tick: significant against every control. ``supported``: a strict majority of the functional metrics ticked.
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
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests

from ..conditions import CONDITIONS, controls, student_conditions
from ..metrics import FUNCTIONAL_METRICS, METRICS, lower_is_better

PERFORMANCE_METRICS = ("accuracy", "loss")
KEY = ["teacher_seed", "student_seed", "condition", "alpha"]
MARGINAL = 0.01  # the default marginal threshold: a mean functional improvement below it is marginal
VERDICTS = ("supported", "marginal", "not supported")


FDR_FAMILIES = ("setting", "per-control")
MAJORITIES = ("strict", "half")


@dataclass(frozen=True)
class Rule:
    """The verdict rule's open choices (each an analysis reading, :mod:`kdlib.setups.readings`): ``fdr_family``,
    BH over every (functional metric, control) p-value of one (teacher seed, alpha) ("setting") or over each
    control's on its own ("per-control"); ``majority``, more than half the functional metrics ticked ("strict") or
    at least half ("half"); ``marginal_threshold``; ``alpha_level``, the FDR level."""
    fdr_family: str = "setting"
    majority: str = "strict"
    marginal_threshold: float = MARGINAL
    alpha_level: float = 0.05

    def __post_init__(self):
        if self.fdr_family not in FDR_FAMILIES:
            raise ValueError(f"fdr_family={self.fdr_family!r} is not allowed: use one of {list(FDR_FAMILIES)}")
        if self.majority not in MAJORITIES:
            raise ValueError(f"majority={self.majority!r} is not allowed: use one of {list(MAJORITIES)}")


def enough_ticks(n_ticked, n_metrics: int, majority: str = "strict"):
    """Whether ``n_ticked`` of ``n_metrics`` functional metrics make a majority (elementwise on arrays)."""
    return np.asarray(n_ticked) > n_metrics / 2 if majority == "strict" else np.asarray(n_ticked) >= n_metrics / 2


def verdict(n_ticked: int, n_metrics: int, mean_improvement: float, marginal_threshold: float = MARGINAL,
            majority: str = "strict") -> str:
    """The transfer verdict, the study's one rule: ``supported`` when a majority of the functional metrics is
    ticked (significant against every control; ``majority``: strict or half), ``marginal`` when supported but
    KD's mean improvement over the better control is below ``marginal_threshold``, else ``not supported``."""
    if not enough_ticks(n_ticked, n_metrics, majority):
        return "not supported"
    return "marginal" if mean_improvement < marginal_threshold else "supported"


def verdicts(n_ticked: np.ndarray, n_metrics: int, mean_improvement: np.ndarray, rule: Rule) -> np.ndarray:
    """:func:`verdict` over arrays of tick counts and mean improvements (resamples, simulations)."""
    supported = enough_ticks(n_ticked, n_metrics, rule.majority)
    marginal = np.asarray(mean_improvement) < rule.marginal_threshold
    return np.where(supported, np.where(marginal, "marginal", "supported"), "not supported")


def bh_rows(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values along the last axis, every row a family: statsmodels' ``fdr_bh`` arithmetic (sorted
    p over its rank's share, the running minimum from the largest, capped at 1), vectorised; no NaNs."""
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) / (np.arange(1, m + 1) / float(m))
    ranked = np.minimum.accumulate(ranked[..., ::-1], axis=-1)[..., ::-1]
    ranked[ranked > 1] = 1
    out = np.empty_like(ranked)
    np.put_along_axis(out, order, ranked, axis=-1)
    return out


def adjust(p: np.ndarray, family: str = "setting") -> np.ndarray:
    """BH over the families of ``family`` for p-values ``[..., metric, control]``: "setting", one family of every
    (metric, control) in metric-major order; "per-control", one per control over the metrics. NaNs (no pairs)
    are left out of their family and stay NaN."""
    p = np.asarray(p, dtype=float)
    if family == "per-control":
        return np.swapaxes(adjust(np.swapaxes(p, -1, -2)[..., None], "setting")[..., 0], -1, -2)
    flat = p.reshape(*p.shape[:-2], -1)
    if np.isnan(flat).any():
        rows = flat.reshape(-1, flat.shape[-1])
        out = np.stack([benjamini_hochberg(row) for row in rows]).reshape(flat.shape)
    else:
        out = bh_rows(flat)
    return out.reshape(p.shape)


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
    allowed = student_conditions()
    bad = sorted(set(runs["condition"]) - set(allowed))
    if bad:
        raise ValueError(f"unknown condition(s) {bad}: allowed conditions are {list(allowed)}")
    runs = runs[runs["condition"].isin(("kd", *controls()))].copy()
    runs.loc[runs["condition"].isin([c for c in controls() if not CONDITIONS[c].weighted]), "alpha"] = np.nan
    dup = runs[runs.duplicated(KEY, keep=False)]
    if len(dup):
        raise ValueError(f"runs table has duplicate rows for {dup[KEY].drop_duplicates().to_dict('records')}")
    return runs


def _paired(runs: pd.DataFrame, teacher_seed, alpha: float, on_missing: str) -> tuple[dict, list[str]]:
    """KD(alpha) and each control's rows of one teacher (a weighted control at KD's alpha, e.g. RCD(alpha)), indexed
    by student seed and kept to the seeds all share: ({condition: rows}, the runs missing for a complete pairing)."""
    t = runs[runs["teacher_seed"] == teacher_seed]
    rows = {}
    for name in ("kd", *controls()):
        chosen = t["condition"] == name
        if name == "kd" or CONDITIONS[name].weighted:
            chosen &= np.isclose(t["alpha"], alpha)
        rows[name] = t[chosen].set_index("student_seed")
    seeds = set().union(*(df.index for df in rows.values()))
    common = sorted(set.intersection(*(set(df.index) for df in rows.values())))
    missing = [f"{name} seed {s}" for name, df in rows.items() for s in sorted(seeds - set(df.index))]
    if missing and on_missing == "raise":
        partners = ", ".join(CONDITIONS[c].display for c in controls())
        raise ValueError(f"teacher seed {teacher_seed}, alpha {alpha}: runs missing to complete the pairing on "
                         f"student_seed: {missing}; every KD seed needs a partner in each control ({partners})")
    return {name: df.loc[common] for name, df in rows.items()}, missing


def transfer_tests(runs: pd.DataFrame, alpha_level: float = 0.05, metrics: Sequence[str] = FUNCTIONAL_METRICS,
                   marginal_threshold: float = MARGINAL, on_missing: str = "raise", fdr_family: str = "setting",
                   majority: str = "strict") -> pd.DataFrame:
    """Paired one-sided Wilcoxon tests of KD(alpha) against every control, with BH-FDR (:class:`Rule` for
    ``fdr_family`` and ``majority``).

    Returns one row per (teacher_seed, alpha, metric) with the means, raw and adjusted p-values, per-control
    significance, the tick, and the per-(teacher_seed, alpha) verdicts ``supported`` and ``marginal``.
    """
    rule = Rule(fdr_family, majority, marginal_threshold, alpha_level)
    if on_missing not in ("raise", "drop"):
        raise ValueError(f"on_missing={on_missing!r} is not allowed: use 'raise' or 'drop'")
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}: allowed are {list(METRICS)}")
    tested = metrics + [m for m in PERFORMANCE_METRICS if m not in metrics]
    runs = _validate(runs, tested)
    cs = controls()
    rows = []
    kd_rows = runs[runs["condition"] == "kd"]
    for (teacher_seed, alpha), _ in kd_rows.groupby(["teacher_seed", "alpha"], sort=True):
        paired, missing = _paired(runs, teacher_seed, alpha, on_missing)
        kd = paired["kd"]
        group = []
        for metric in tested:
            lower = lower_is_better(metric)
            means = {c: float(df[metric].mean()) if len(df) else math.nan for c, df in paired.items()}
            control_means = [means[c] for c in cs]
            best_control = min(control_means) if lower else max(control_means)
            group.append({
                "teacher_seed": teacher_seed, "alpha": alpha, "metric": metric,
                "family": "functional" if metric in metrics else "performance",
                "n_pairs": len(kd), **{f"{c}_mean": means[c] for c in ("kd", *cs)},
                "improvement": (best_control - means["kd"]) * (1 if lower else -1),
                **{f"p_{c}": one_sided_wilcoxon(kd[metric], paired[c][metric], lower) for c in cs},
                "missing_pairs": "; ".join(missing),
            })
        functional = [r for r in group if r["family"] == "functional"]
        adjusted = adjust(np.array([[r[f"p_{c}"] for c in cs] for r in functional]).reshape(-1, len(cs)),
                          rule.fdr_family)
        for r, row in zip(functional, adjusted):
            r.update({f"p_adj_{c}": float(v) for c, v in zip(cs, row)})
        for r in group:
            if r["family"] == "performance":
                r.update({f"p_adj_{c}": r[f"p_{c}"] for c in cs})
            r.update({f"sig_{c}": bool(r[f"p_adj_{c}"] < alpha_level) for c in cs})
            r["tick"] = all(r[f"sig_{c}"] for c in cs)
        mean_improvement = float(np.mean([r["improvement"] for r in functional]))
        label = verdict(sum(r["tick"] for r in functional), len(functional), mean_improvement, marginal_threshold,
                        majority)
        for r in group:
            r["supported"] = label != "not supported"
            r["mean_functional_improvement"] = mean_improvement
            r["marginal"] = label == "marginal"
        rows += group
    columns = ["teacher_seed", "alpha", "metric", "family", "n_pairs", *(f"{c}_mean" for c in ("kd", *cs)),
               "improvement", *(f"{p}_{c}" for p in ("p", "p_adj", "sig") for c in cs), "tick",
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
    weighted = condition in CONDITIONS and CONDITIONS[condition].weighted
    return (condition, None if not weighted or pd.isna(alpha) else round(float(alpha), 6))


BEST_CONTROLS = ("per-quantity", "same-alpha", "exclude-collapsed")
COLLAPSED = 0.5  # a control whose mean accuracy is below this share of the unweighted controls' (SIDDO's) collapsed


def collapsed_controls(runs_t: pd.DataFrame) -> set[tuple[str, float | None]]:
    """The controls of one teacher seed's runs that collapsed (Figure 6 drops RCD 0.9 for its collapsed accuracy;
    made precise here): a weighted control whose mean accuracy is below :data:`COLLAPSED` times the mean accuracy of
    the unweighted controls (SIDDO). None without an accuracy column or an unweighted control."""
    if "accuracy" not in runs_t:
        return set()
    plain = runs_t[runs_t["condition"].map(lambda c: c in CONDITIONS and not CONDITIONS[c].weighted)
                   & (runs_t["condition"] != "kd")]
    if plain.empty:
        return set()
    floor = COLLAPSED * float(plain["accuracy"].mean())
    weighted = runs_t[runs_t["condition"].map(lambda c: c in CONDITIONS and CONDITIONS[c].weighted)
                      & (runs_t["condition"] != "kd")]
    return {_control_key(c, a) for (c, a), df in weighted.groupby(["condition", "alpha"])
            if float(df["accuracy"].mean()) < floor}


def control_candidates(runs: pd.DataFrame, teacher_seed, alpha: float,
                       exclude: Iterable[tuple[str, float | None]] = (), best_control: str = "per-quantity") -> dict:
    """The controls one (teacher seed, alpha)'s agreement deltas choose their best from, each indexed by student
    seed: SIDDO and every RCD alpha of that teacher seed ("per-quantity"), RCD at the same alpha only
    ("same-alpha"), or all but the collapsed ones (:func:`collapsed_controls`, "exclude-collapsed"), less
    ``exclude``. ``runs``: validated (:func:`_validate`)."""
    if best_control not in BEST_CONTROLS:
        raise ValueError(f"best_control={best_control!r} is not allowed: use one of {list(BEST_CONTROLS)}")
    t = runs[(runs["teacher_seed"] == teacher_seed) & (runs["condition"] != "kd")]
    excluded = {_control_key(c, a) for c, a in exclude}
    if best_control == "exclude-collapsed":
        excluded |= collapsed_controls(t)
    candidates = {}
    for (cond, a), df in t.groupby(["condition", t["alpha"].fillna(-1.0)]):
        key = _control_key(cond, None if a == -1.0 else a)
        if key in excluded or (best_control == "same-alpha" and key[1] is not None and not np.isclose(a, alpha)):
            continue
        candidates[key] = df.set_index("student_seed")
    return candidates


def agreement_deltas(runs: pd.DataFrame, exclude: Iterable[tuple[str, float | None]] = (),
                     same_alpha: bool = False, best_control: str = "per-quantity") -> pd.DataFrame:
    """Eqs. 2-3: KD's change in teacher-correct and teacher-incorrect agreement against the best control.

    One row per (teacher_seed, alpha) with, for q in (correct, incorrect): ``delta_q`` and ``delta_q_sem``
    (mean +- SEM over student seeds of the paired difference KD - control), ``control_q`` (which control),
    ``delta_q_normalised`` (:func:`normalised_delta`: mean difference over mean headroom 1 - agreement; its
    bootstrap standard error ``_sem`` and 95% interval ``_low``-``_high``), ``n_q`` (paired seeds) and
    ``negative_asymmetry`` (delta_incorrect > delta_correct). ``exclude`` lists controls to leave out as
    ``("rcd", 0.9)`` or ``("siddo", None)``; ``best_control`` (or ``same_alpha``) chooses the candidates
    (:func:`control_candidates`).
    """
    runs = _validate(runs, ["correct_agreement", "incorrect_agreement"])
    best_control = "same-alpha" if same_alpha else best_control
    rows = []
    for (teacher_seed, alpha), kd in runs[runs["condition"] == "kd"].groupby(["teacher_seed", "alpha"]):
        controls = control_candidates(runs, teacher_seed, alpha, exclude, best_control)
        if not controls:
            raise ValueError(f"teacher seed {teacher_seed}, alpha {alpha}: no control left after "
                             f"exclude={sorted(_control_key(c, a) for c, a in exclude)} ({best_control})")
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
