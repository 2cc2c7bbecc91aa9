"""What a verdict's evidence is worth: its stability under resampling of the student seeds, the smallest effect the
seeds could have detected, and how the whole verdict rule behaves when KD does nothing or a known amount.

Every number here reruns the study's own rule (:mod:`kdlib.analysis.stats`: Wilcoxon, BH-FDR, majority, marginal)
on resampled or simulated pairs, thousands of times, so the signed-rank test is computed here in a vectorised
form: the exact distribution of W+ over the 2^n sign patterns of the pairs' ranks (zeros dropped, tied ranks
averaged), by dynamic programming over the doubled ranks. Without ties or zeros it is scipy's exact test, p for p;
with the ties that resampling seeds with replacement makes, it is the exact conditional (permutation) test.

- *Stability* of a (teacher seed, alpha) verdict: the share of ``n_boot`` bootstrap resamples of its paired
  student seeds (each seed keeps all its conditions) whose whole-rule verdict equals the observed one; likewise for
  the sign of the asymmetry (delta incorrect > delta correct against the best control). Below :data:`FRAGILE` a
  verdict is *fragile*.
- *mde80* of a test that is not significant: the smallest mean improvement over that control, in the metric's
  units, that these seeds detect with 80% power under the same rule (a transfer moves its whole FDR family, so
  BH's threshold is the FDR level), pairs drawn normal with the observed paired spread.
- *Calibration* (:func:`calibrate`): the rule's rate of "supported" when KD and its controls are exchanged within
  each pair at random (the null), with its Monte Carlo interval, and its rate for improvements planted on the
  runs with every condition's mean effect removed, on a grid, at 5, 10 and 20 resampled seeds.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from ..conditions import controls
from ..metrics import FUNCTIONAL_METRICS, lower_is_better
from .stats import Rule, _paired, _validate, adjust, control_candidates, verdicts

FRAGILE = 0.8  # a verdict whose stability is below this is fragile
POWER = 0.8


@functools.lru_cache(maxsize=64)
def _untied_tail(n: int) -> np.ndarray:
    """P(W+ >= s) for s = 0..2 * n(n+1)/2 in doubled units, n pairs without ties or zeros (ranks 1..n)."""
    return _tails(np.arange(2, 2 * n + 1, 2, dtype=np.int64)[None, :])[0]


def _tails(doubled: np.ndarray) -> np.ndarray:
    """Per row of doubled ranks ``[rows, n]``: P(W+ >= s) over the 2^n sign patterns, for s = 0..max total."""
    rows, n = doubled.shape
    top = int(doubled.sum(-1).max()) if doubled.size else 0
    counts = np.zeros((rows, top + 1))
    counts[:, 0] = 1.0
    cells = np.arange(top + 1)
    for i in range(n):  # add pair i: its rank counts towards W+ or not
        src = cells[None, :] - doubled[:, i:i + 1]
        counts = counts + np.where(src >= 0, np.take_along_axis(counts, np.clip(src, 0, None), axis=-1), 0.0)
    return np.cumsum(counts[:, ::-1], axis=-1)[:, ::-1] / 2.0 ** n


def signed_rank_p(d: np.ndarray) -> np.ndarray:
    """One-sided p-values of H_a "the differences are positive" for each row of ``d`` ``[..., n]``: P(W+ >= w)
    under the exact sign-flip distribution of the row's ranks; 1 for a row of zeros, NaN for a row with a NaN."""
    d = np.asarray(d, dtype=float)
    shape, n = d.shape[:-1], d.shape[-1]
    d = d.reshape(-1, n)
    missing = ~np.isfinite(d).all(-1)  # a pair with no value: no p-value (NaN), as scipy gives
    d = np.where(missing[:, None], 0.0, d)
    a = np.abs(d)
    zeros = (a == 0).sum(-1, keepdims=True)
    ranks = np.where(a > 0, rankdata(a, axis=-1) - zeros, 0.0)  # ranks among the nonzero differences
    doubled = np.rint(2 * ranks).astype(np.int64)  # average ranks of ties are halves
    w = (doubled * (d > 0)).sum(-1)
    p = np.empty(len(d))
    plain = (np.sort(doubled, -1) == np.arange(2, 2 * n + 1, 2)).all(-1)  # ranks 1..n: no ties, no zeros
    if plain.any():
        p[plain] = _untied_tail(n)[w[plain]]
    if (~plain).any():
        p[~plain] = np.take_along_axis(_tails(doubled[~plain]), w[~plain, None], axis=-1)[:, 0]
    p[missing] = np.nan
    return p.reshape(shape)


def _oriented(metric: str) -> float:
    """+1 where higher is better, -1 where lower is: an oriented difference is positive when KD is better."""
    return -1.0 if lower_is_better(metric) else 1.0


def _group(runs: pd.DataFrame, teacher_seed, alpha: float, metrics) -> tuple[np.ndarray, dict, list]:
    """KD(alpha)'s and each control's values ``[seed, metric]`` on the seeds they all share (the tests' pairing,
    :func:`kdlib.analysis.stats._paired`), oriented so that higher is better; and the shared seeds."""
    rows, _ = _paired(runs, teacher_seed, alpha, on_missing="drop")
    sign = np.array([_oriented(m) for m in metrics])
    values = {name: df[list(metrics)].to_numpy(float) * sign for name, df in rows.items()}
    return values.pop("kd"), values, list(rows["kd"].index)


def rule_verdicts(kd: np.ndarray, ctrl: dict, rule: Rule, n_metrics: int) -> np.ndarray:
    """The whole rule's verdict for each row of paired, oriented values ``kd`` ``[..., seed, metric]`` and
    ``ctrl[c]`` of the same shape: Wilcoxon per (metric, control), BH per :class:`Rule`, ticks, majority and the
    marginal threshold on the mean improvement over the better control."""
    names = list(ctrl)
    p = np.stack([np.stack([signed_rank_p(kd[..., m] - ctrl[c][..., m]) for c in names], -1)
                  for m in range(n_metrics)], -2)  # [..., metric, control]
    significant = adjust(p, rule.fdr_family) < rule.alpha_level
    ticks = significant.all(-1).sum(-1)
    best = np.max(np.stack([ctrl[c].mean(-2) for c in names], -1), -1)  # oriented: higher is better
    improvement = (kd.mean(-2) - best).mean(-1)
    return verdicts(ticks, n_metrics, improvement, rule)


def _asymmetry(kd: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """delta incorrect > delta correct against the best control per quantity: ``kd`` ``[..., seed, 2]`` (correct,
    incorrect agreement), ``candidates`` ``[..., control, seed, 2]``."""
    means = candidates.mean(-2)  # [..., control, 2]
    best = np.take_along_axis(candidates, means.argmax(-2)[..., None, None, :].repeat(candidates.shape[-2], -2),
                              axis=-3)[..., 0, :, :]  # [..., seed, 2]: the best control's values per quantity
    delta = (kd - best).mean(-2)
    return delta[..., 1] > delta[..., 0]


def _candidates(runs: pd.DataFrame, teacher_seed, alpha: float, seeds: list, best_control: str,
                exclude=()) -> np.ndarray | None:
    """The controls the agreement deltas choose their best from (:func:`kdlib.analysis.stats.control_candidates`),
    ``[control, seed, 2]`` (correct, incorrect agreement) on ``seeds``; None where one lacks a seed."""
    candidates = control_candidates(runs, teacher_seed, alpha, exclude, best_control)
    if not candidates or any(not set(seeds) <= set(df.index) for df in candidates.values()):
        return None
    return np.stack([df.loc[seeds, ["correct_agreement", "incorrect_agreement"]].to_numpy(float)
                     for df in candidates.values()])


def stability(runs: pd.DataFrame, verdict_table: pd.DataFrame, rule: Rule = Rule(), best_control: str =
              "per-quantity", n_boot: int = 1000, seed: int = 0, metrics=FUNCTIONAL_METRICS,
              exclude=()) -> pd.DataFrame:
    """``verdict_stability`` and ``asymmetry_stability`` per (teacher seed, alpha) of ``verdict_table`` (the
    analysis' verdicts: ``verdict``, ``negative_asymmetry``): the shares of ``n_boot`` resamples of the paired
    student seeds that give the same verdict and the same sign of the asymmetry (its best control chosen as the
    agreement deltas choose it: ``best_control``, less ``exclude``)."""
    runs = _validate(runs, list(metrics) + ["correct_agreement", "incorrect_agreement"])
    rng = np.random.default_rng(seed)
    rows = []
    for _, v in verdict_table.iterrows():
        kd, ctrl, seeds = _group(runs, v["teacher_seed"], v["alpha"], metrics)
        row = {"teacher_seed": v["teacher_seed"], "alpha": v["alpha"], "verdict_stability": math.nan,
               "asymmetry_stability": math.nan}
        if len(seeds) >= 2:
            idx = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
            again = rule_verdicts(kd[idx], {c: x[idx] for c, x in ctrl.items()}, rule, len(metrics))
            row["verdict_stability"] = float(np.mean(again == v["verdict"]))
            candidates = _candidates(runs, v["teacher_seed"], v["alpha"], seeds, best_control, exclude)
            kd_rows = runs[(runs["teacher_seed"] == v["teacher_seed"]) & (runs["condition"] == "kd")
                           & np.isclose(runs["alpha"], v["alpha"])].set_index("student_seed")
            if candidates is not None and "negative_asymmetry" in v and not pd.isna(v["negative_asymmetry"]):
                agreement = kd_rows.loc[seeds, ["correct_agreement", "incorrect_agreement"]].to_numpy(float)
                signs = _asymmetry(agreement[idx], np.moveaxis(candidates[:, idx], 0, -3))
                row["asymmetry_stability"] = float(np.mean(signs == bool(v["negative_asymmetry"])))
        rows.append(row)
    return pd.DataFrame(rows, columns=["teacher_seed", "alpha", "verdict_stability", "asymmetry_stability"])


def mde(spread: float, n: int, p_star: float, power: float = POWER, draws: int = 1000, seed: int = 0) -> float:
    """The smallest mean improvement that ``n`` pairs with paired standard deviation ``spread`` detect with
    ``power`` by a one-sided signed-rank p-value at most ``p_star`` (pairs drawn normal; the same draws at every
    effect, so power grows with it); inf where no effect can (n pairs give no p below 2^-n), NaN without a
    spread. The signed-rank test is scale-free, so this is ``spread`` times the answer at spread 1."""
    if not np.isfinite(spread):
        return math.nan
    if n < 1 or not p_star >= 0.5 ** n:
        return math.inf
    if spread == 0:
        return 0.0
    return spread * _unit_mde(n, p_star, power, draws, seed)


@functools.lru_cache(maxsize=256)
def _unit_mde(n: int, p_star: float, power: float, draws: int, seed: int) -> float:
    z = np.random.default_rng(seed).standard_normal((draws, n))
    return _smallest(lambda delta: float(np.mean(signed_rank_p(delta + z) <= p_star)) >= power, 1.0)


def _smallest(reached, start: float, steps: int = 30) -> float:
    """The smallest effect at which the monotone test ``reached`` holds (doubling from ``start``, then bisection);
    inf where it does not hold 2^40 times further."""
    lo, hi = 0.0, start
    for _ in range(40):
        if reached(hi):
            break
        lo, hi = hi, 2 * hi
    else:
        return math.inf
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if reached(mid) else (mid, hi)
    return hi


def transfer_mde(runs: pd.DataFrame, teacher_seed, alpha: float, rule: Rule = Rule(), power: float = POWER,
                 draws: int = 200, seed: int = 0, metrics=FUNCTIONAL_METRICS) -> float:
    """The smallest improvement over the controls, the same on every functional metric (in its units), that the
    whole rule detects (a verdict other than "not supported") with ``power`` at this (teacher seed, alpha)'s seeds:
    planted into KD after every condition's mean effect is removed, over ``draws`` resamples of the paired seeds
    (the same at every effect); inf where none does, NaN without two seeds."""
    kd, ctrl, seeds = _group(_validate(runs, list(metrics)), teacher_seed, alpha, metrics)
    if len(seeds) < 2:
        return math.nan
    values = np.stack([kd, *ctrl.values()], axis=1)  # [seed, condition, metric]
    centred = values - values.mean(0, keepdims=True) + values.mean((0, 1), keepdims=True)
    picked = centred[np.random.default_rng(seed).integers(0, len(seeds), size=(draws, len(seeds)))]
    names = list(ctrl)

    def reached(delta: float) -> bool:
        planted = picked.copy()
        planted[..., 0, :] += delta
        labels = rule_verdicts(planted[..., 0, :], {c: planted[..., i + 1, :] for i, c in enumerate(names)}, rule,
                               len(metrics))
        return float(np.mean(labels != "not supported")) >= power
    spread = float(np.nanmax(np.std(kd[:, None, :] - np.stack(list(ctrl.values()), 1), axis=0, ddof=1)))
    return _smallest(reached, spread if spread > 0 else 1e-3, steps=16)


def mde_normal(spread: float, n: int, p_star: float, power: float = POWER) -> float:
    """The normal approximation of :func:`mde`: (z_{1-p*} + z_power) sd / sqrt(n), over the signed-rank test's
    asymptotic efficiency 3/pi relative to the t-test."""
    return (norm.ppf(1 - p_star) + norm.ppf(power)) * spread / math.sqrt(n) / math.sqrt(3 / math.pi)


def detectable(runs: pd.DataFrame, tests: pd.DataFrame, rule: Rule = Rule()) -> pd.DataFrame:
    """``tests`` (:func:`kdlib.analysis.stats.transfer_tests`) with ``mde80_<control>`` for each test that is not
    significant and ``mde80``, the largest of a row's: the improvement over every control it missed that these
    seeds would detect. A transfer moves every test of its family together, and BH then lets each through below
    ``alpha_level`` (as it does accuracy and loss, uncorrected), so :func:`mde` is taken at that level."""
    cs = controls()
    tests = tests.copy()
    for c in cs:
        tests[f"mde80_{c}"] = math.nan
    for (seed, alpha), g in tests.groupby(["teacher_seed", "alpha"]):
        metrics = list(g["metric"])
        kd, ctrl, seeds = _group(_validate(runs, metrics), seed, alpha, metrics)
        for i, (index, row) in enumerate(g.iterrows()):
            for c in cs:
                if row[f"sig_{c}"] or not len(seeds):
                    continue
                p_star = rule.alpha_level
                spread = float(np.std(kd[:, i] - ctrl[c][:, i], ddof=1)) if len(seeds) > 1 else math.nan
                tests.at[index, f"mde80_{c}"] = mde(spread, len(seeds), p_star) if len(seeds) > 1 else math.inf
    tests["mde80"] = tests[[f"mde80_{c}" for c in cs]].max(axis=1, skipna=True)
    return tests


EFFECTS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1)  # planted mean improvements, in the metrics' units
SEEDS = (5, 10, 20)


def _null_draws(values: np.ndarray, rng, draws: int) -> np.ndarray:
    """``values`` ``[seed, condition, metric]`` with the conditions exchanged within each pair at random, ``draws``
    times: ``[draw, seed, condition, metric]``."""
    n, k, _ = values.shape
    order = rng.permuted(np.broadcast_to(np.arange(k), (draws, n, k)), axis=-1)
    return np.take_along_axis(values[None], order[..., None], axis=2)


def calibrate(runs: pd.DataFrame, rule: Rule = Rule(), draws: int = 1000, effects=EFFECTS, seeds=SEEDS,
              power_draws: int = 400, seed: int = 0, metrics=FUNCTIONAL_METRICS) -> pd.DataFrame:
    """The verdict rule measured on a setup's collected runs, per (teacher seed, alpha): ``null_rate`` rows, the
    share of ``draws`` in which the whole rule says "supported" (and ``p_supported_or_marginal``) when KD and its
    controls are exchanged within each pair at random, at the observed number of seeds, with a 95% Wilson interval; and
    ``power`` rows, the share of ``power_draws`` that say "supported" when ``effect`` (in each functional metric's
    units, towards its preferred direction) is added to KD after every condition is centred on their common mean
    (the pairs' spread kept, any real effect removed), at each of ``seeds`` student seeds drawn with replacement
    from the observed ones."""
    runs = _validate(runs, list(metrics))
    rng = np.random.default_rng(seed)
    names = ("kd", *controls())
    rows = []
    for (teacher_seed, alpha), _ in runs[runs["condition"] == "kd"].groupby(["teacher_seed", "alpha"]):
        kd, ctrl, observed = _group(runs, teacher_seed, alpha, metrics)
        if len(observed) < 2:
            continue
        values = np.stack([kd, *(ctrl[c] for c in names[1:])], axis=1)  # [seed, condition, metric]

        def share(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            labels = rule_verdicts(stack[..., 0, :], {c: stack[..., i + 1, :] for i, c in enumerate(names[1:])},
                                   rule, len(metrics))
            return labels == "supported", labels != "not supported"
        where = {"teacher_seed": teacher_seed, "alpha": alpha}
        supported, any_ = share(_null_draws(values, rng, draws))
        rows.append({**where, "kind": "null_rate", "n_seeds": len(observed), "effect": 0.0, "draws": draws,
                     **_rate(supported), "p_supported_or_marginal": float(any_.mean())})
        # no condition differs in mean (each centred on the conditions' common mean), the pairs' spread kept
        centred = values - values.mean(0, keepdims=True) + values.mean((0, 1), keepdims=True)
        for n in seeds:
            null = centred[rng.integers(0, len(observed), size=(power_draws, n))]  # [draw, seed, condition, metric]
            for effect in effects:
                planted = null.copy()
                planted[..., 0, :] += effect  # oriented values: higher is better
                supported, any_ = share(planted)
                rows.append({**where, "kind": "power", "n_seeds": n, "effect": effect, "draws": power_draws,
                             **_rate(supported), "p_supported_or_marginal": float(any_.mean())})
    return pd.DataFrame(rows, columns=["teacher_seed", "alpha", "kind", "n_seeds", "effect", "draws", "p_supported",
                                       "low", "high", "p_supported_or_marginal"])


def _rate(hits: np.ndarray) -> dict:
    """A Monte Carlo share with its 95% Wilson interval."""
    n, k = hits.size, float(hits.sum())
    p, z = k / n, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"p_supported": p, "low": 0.0 if k == 0 else max(0.0, centre - half),
            "high": 1.0 if k == n else min(1.0, centre + half)}


def calibration_summary(table: pd.DataFrame) -> dict:
    """Over a setup's (teacher seed, alpha) settings: the mean null rate of "supported" (and its largest upper
    bound), and the mean power at each (seeds, effect)."""
    null, power = table[table["kind"] == "null_rate"], table[table["kind"] == "power"]
    return {"null": float(null["p_supported"].mean()) if len(null) else math.nan,
            "null_high": float(null["high"].max()) if len(null) else math.nan,
            "power": power.groupby(["n_seeds", "effect"])["p_supported"].mean().to_dict()}
