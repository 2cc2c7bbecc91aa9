"""Audit a distillation from saved outputs: functional transfer for any teacher/student pair (paper Sections 3, 6).

The paper's practical advice is to "audit teacher error structure and report functional transfer analyses alongside
accuracy/loss". This module does it from logits saved by any framework, without our training pipeline:

- every metric of :func:`kdlib.metrics.compare` for the student(s) and each control against the teacher;
- deltas student - control for the functional metrics, accuracy, loss and teacher-correct / teacher-incorrect
  agreement (Eqs. 2-3), the agreement deltas normalised by the control's headroom (delta / (1 - control
  agreement)), and the asymmetry delta_incorrect - delta_correct, against each control;
- the copied-error table: per (true label, teacher's wrong label), how often the student reproduces the teacher's
  wrong label, next to the controls' rate.

Choices fixed here:
- A side with several models (seeds) enters through the mean of its models' metrics.
- Several models on every side: one-sided tests on the per-model metrics, the paired Wilcoxon signed-rank test
  (i-th student with the i-th model of a control: list them in matching seed order) when the counts are equal,
  else the one-sided Mann-Whitney U test; BH-FDR over (functional metric, control), all other quantities at
  ``alpha_level`` uncorrected (as kdlib.analysis.stats).
- Otherwise: percentile bootstrap over test examples, or whole sequences for [N, L, K] outputs, with the models
  held fixed (the intervals cover test-set sampling, not training randomness). Replicate b resamples the units
  ``rng.integers(0, U, size=U)`` drawn in turn from ``np.random.default_rng(seed)``. A delta is significant when
  its (1 - alpha_level) interval excludes 0 on the side where the student is more teacher-like (lower for the
  distance metrics, higher for agreement); no multiplicity correction.
- Verdicts (Sections 3.2-3.3): transfer is supported when a strict majority of the functional metrics improve
  significantly against every control. The best control per quantity is the one with the highest mean
  correct (resp. incorrect) agreement, as in kdlib.analysis.stats.agreement_deltas; negative asymmetry means
  delta_incorrect(best) > delta_correct(best); negative asymmetric transfer needs both.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import mannwhitneyu, sem

from ..metrics import FUNCTIONAL_METRICS, METRICS, TERMS, Comparison, rates, token_terms
from .files import _as_list, _check, _control_groups, _resolve, load_outputs  # noqa: F401  (public)
from .report import _json_safe, _write
from ..analysis.stats import benjamini_hochberg, normalised_delta, one_sided_wilcoxon, verdict

AGREEMENT = ("correct_agreement", "incorrect_agreement")
DELTA_METRICS = FUNCTIONAL_METRICS + ("accuracy", "loss") + AGREEMENT
CHUNK = 2048  # units per pass, to bound memory on large test sets
TOP_ROWS = 20  # most-copied errors shown in report.json / report.md (the CSV has them all)


# ----------------------------------------------------------------------------------------------------------------
# loading and checking


# ----------------------------------------------------------------------------------------------------------------
# metrics per unit (example or sequence), for the bootstrap


@torch.no_grad()
def _unit_sums(teacher: torch.Tensor, model: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """[U, len(TERMS)] sums over each unit's tokens of kdlib.metrics' per-token terms (in TERMS order)."""
    K, out = teacher.shape[-1], []
    for i in range(0, len(teacher), CHUNK):
        units = len(labels[i:i + CHUNK])
        t, m = teacher[i:i + CHUNK].double().reshape(-1, K), model[i:i + CHUNK].double().reshape(-1, K)
        y = labels[i:i + CHUNK].reshape(-1)
        k = token_terms(t, m, y)
        terms = torch.stack([fn(k).double() for fn in TERMS.values()], -1)
        out.append(terms.reshape(units, -1, len(TERMS)).sum(1))
    return torch.cat(out).numpy()


def _rates(s: np.ndarray) -> dict[str, np.ndarray]:
    """Every additive metric from sums along the last axis (in TERMS order); NaN where a denominator is 0."""
    return rates({name: s[..., i] for i, name in enumerate(TERMS)})


def _bootstrap_sums(units: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, M, S] resampled sums from [M, U, S] per-unit sums; replicate b draws rng.integers(0, U, size=U)."""
    M, U, S = units.shape
    flat = units.transpose(1, 0, 2).reshape(U, M * S)
    rng = np.random.default_rng(seed)
    reps = np.empty((n_boot, M * S))
    for b in range(n_boot):
        reps[b] = np.bincount(rng.integers(0, U, size=U), minlength=U) @ flat
    return reps.reshape(n_boot, M, S)


# ----------------------------------------------------------------------------------------------------------------
# deltas with uncertainty


def _better(metric: str) -> int:
    """+1 when a larger student - control delta means more teacher-like (agreement, asymmetry), else -1."""
    return -1 if metric in METRICS and METRICS[metric].lower_is_better else 1


def _interval(point: float, reps: np.ndarray, metric: str, alpha_level: float) -> dict:
    """Point delta, percentile interval over the replicates, and whether it excludes 0 on the favourable side."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates (no teacher errors at all)
        ci = np.nanpercentile(reps, [100 * alpha_level / 2, 100 * (1 - alpha_level / 2)])
    sig = bool(ci[0] > 0) if _better(metric) > 0 else bool(ci[1] < 0)
    return {"delta": float(point), "ci_low": float(ci[0]), "ci_high": float(ci[1]), "significant": sig}


def _bootstrap_deltas(rates_point, rates_reps, sides, controls, alpha_level):
    """Per control and quantity: the student - control delta with its interval; also the replicates."""
    def side(rates, name, metric):
        return rates[metric][..., sides[name]].mean(-1)

    record = lambda point, reps, metric: _interval(point, reps, metric, alpha_level)
    deltas, reps_out = {}, {}
    for c in controls:
        d, r = {}, {}
        with np.errstate(divide="ignore", invalid="ignore"):
            for metric in DELTA_METRICS:
                dp = side(rates_point, "student", metric) - side(rates_point, c, metric)
                r[metric] = side(rates_reps, "student", metric) - side(rates_reps, c, metric)
                d[metric] = record(dp, r[metric], metric)
            for q in AGREEMENT:
                head_p, head_r = 1 - side(rates_point, c, q), 1 - side(rates_reps, c, q)
                r[f"{q}_normalised"] = r[q] / head_r
                d[f"{q}_normalised"] = record(d[q]["delta"] / head_p, r[f"{q}_normalised"], q)
        r["asymmetry"] = r["incorrect_agreement"] - r["correct_agreement"]
        d["asymmetry"] = record(d["incorrect_agreement"]["delta"] - d["correct_agreement"]["delta"],
                                r["asymmetry"], "asymmetry")
        deltas[c], reps_out[c] = d, r
    return deltas, reps_out


def _seed_deltas(values: pd.DataFrame, controls, alpha_level):
    """Per control and quantity from per-model metrics: paired one-sided Wilcoxon (equal counts) or Mann-Whitney U."""
    values = values.assign(asymmetry=values["incorrect_agreement"] - values["correct_agreement"])
    s_all = values[values["side"] == "student"]
    deltas, functional = {}, []
    for c in controls:
        c_all, d = values[values["side"] == c], {}
        paired = len(s_all) == len(c_all)
        for metric in DELTA_METRICS + ("asymmetry",):
            s, k = s_all[metric].to_numpy(float), c_all[metric].to_numpy(float)
            lower = _better(metric) < 0
            if paired:
                diff, p = s - k, one_sided_wilcoxon(s, k, lower)
            else:
                diff = None
                p = float(mannwhitneyu(s, k, alternative="less" if lower else "greater").pvalue)
            d[metric] = {"delta": float(s.mean() - k.mean()),
                         "sem": float(sem(diff)) if paired else float(math.hypot(sem(s), sem(k))), "p": p}
            if metric in FUNCTIONAL_METRICS:
                functional.append(d[metric])
            else:
                d[metric].update(p_adj=p, significant=bool(p < alpha_level))
            if metric in AGREEMENT:  # mean gain over mean headroom (kdlib.analysis.stats.normalised_delta)
                if paired:
                    norm = normalised_delta(s, k)
                    d[f"{metric}_normalised"] = {"delta": norm["value"], "sem": norm["se"]}
                else:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        d[f"{metric}_normalised"] = {"delta": float(d[metric]["delta"] / (1 - k.mean())),
                                                     "sem": math.nan}
        d["test"] = "paired one-sided Wilcoxon signed-rank" if paired else "one-sided Mann-Whitney U"
        deltas[c] = d
    for r, p_adj in zip(functional, benjamini_hochberg([r["p"] for r in functional])):
        r.update(p_adj=float(p_adj), significant=bool(p_adj < alpha_level))
    return deltas


# ----------------------------------------------------------------------------------------------------------------
# the audit


def audit(teacher, students, labels, controls=(), out=None, n_boot: int = 1000, seed: int = 0,
          alpha_level: float = 0.05, class_names=None) -> dict:
    """Functional-transfer report of ``students`` against ``teacher``, relative to ``controls``.

    teacher, labels: a path (.npy, .npz, .pt, .csv) or an array/tensor. students: one such item or a list of them
    (several seeds). controls: {name: item or list of seeds}, or a sequence whose items are one control each (an
    item that is a list holds that control's seeds). Writes report.json, report.md, copied_errors.csv and the
    figures into ``out`` when given; returns the content of report.json.
    """
    if not (isinstance(n_boot, int) and n_boot >= 1):
        raise ValueError(f"n_boot={n_boot!r} is not allowed: use a positive integer (e.g. 1000)")
    if not 0 < alpha_level < 1:
        raise ValueError(f"alpha_level={alpha_level!r} is not allowed: use a level in (0, 1), e.g. 0.05")
    t = _resolve(teacher, "logits", "teacher")
    studs = [_resolve(s, "logits", "student") for s in _as_list(students)]
    if not studs:
        raise ValueError("students is empty: give at least one student's logits")
    groups = {name: [_resolve(m, "logits", f"control {name}") for m in seeds]
              for name, seeds in _control_groups(controls).items()}
    y_named = _resolve(labels, "labels", "labels")
    models = [("student", m) for m in studs] + [(c, m) for c, ms in groups.items() for m in ms]
    y = _check(t, [m for _, m in models], y_named)
    K = t[1].shape[-1]
    if class_names is not None and len(class_names) != K:
        raise ValueError(f"class_names has {len(class_names)} names but the logits have K={K} classes")
    names = list(map(str, class_names)) if class_names is not None else [str(k) for k in range(K)]
    sides = {s: [i for i, (side, _) in enumerate(models) if side == s] for s in ["student", *groups]}

    comparisons = [_comparison(t[1], m, y) for _, (_, m) in models]
    results = [c.result() for c in comparisons]
    teacher_self = _comparison(t[1], t[1], y).result()  # the teacher's own accuracy and loss
    values = pd.DataFrame([{"side": side, "name": name, **r} for (side, (name, _)), r in zip(models, results)])
    means = {s: values[values["side"] == s].drop(columns=["side", "name"]).mean().to_dict() for s in sides}

    sequence = t[1].dim() == 3
    report = {
        "inputs": {"teacher": t[0], "labels": y_named[0], "students": [n for n, _ in studs],
                   "controls": {c: [n for n, _ in ms] for c, ms in groups.items()}, "logits_shape": list(t[1].shape),
                   "num_classes": K, "n_examples": int(t[1].shape[0]), "n_tokens": int(y.numel()),
                   "class_names": names if class_names is not None else None},
        "teacher": {"accuracy": teacher_self["accuracy"], "loss": teacher_self["loss"],
                    "errors": int(comparisons[0].teacher_errors.sum()),
                    "error_rate": 1 - teacher_self["accuracy"]},
        "models": {s: [{"name": n, **r} for (side, (n, _)), r in zip(models, results) if side == s] for s in sides},
        "means": means,
    }
    seeds_mode = bool(groups) and all(len(sides[s]) >= 2 for s in sides)
    delta_reps = None
    if not groups:
        report["uncertainty"] = {"method": "none", "note": "no control given: deltas and the transfer verdict need "
                                                           "a control model"}
    elif seeds_mode:
        report["deltas"] = _seed_deltas(values, groups, alpha_level)
        report["uncertainty"] = {
            "method": "seeds", "alpha_level": alpha_level,
            "test": "one-sided, per control: paired Wilcoxon signed-rank (i-th student with the i-th control model) "
                    "when the model counts are equal, else Mann-Whitney U",
            "fdr": "Benjamini-Hochberg over (functional metric, control); other quantities uncorrected",
            "min_attainable_p": {c: _min_p(len(sides["student"]), len(sides[c])) for c in groups}}
    else:
        units = np.stack([_unit_sums(t[1], m, y) for _, (_, m) in models])
        reps = _rates(_bootstrap_sums(units, n_boot, seed))
        point = _rates(units.sum(1))
        report["deltas"], delta_reps = _bootstrap_deltas(point, reps, sides, groups, alpha_level)
        report["uncertainty"] = {
            "method": "bootstrap", "n_boot": n_boot, "seed": seed, "alpha_level": alpha_level,
            "interval": f"percentile {100 * (1 - alpha_level):g}%",
            "resampling_unit": "sequence" if sequence else "test example",
            "n_units": int(units.shape[1]),
            "note": "models are held fixed: the intervals cover test-set sampling, not training randomness; a side "
                    "with several models enters through their mean"}
    if groups:
        report["agreement"] = _best_control(report["deltas"], means, delta_reps, alpha_level)
    report["verdict"] = _verdict(report, list(groups))
    table = _copied_table(comparisons, sides, names)
    report["copied_errors"] = table.head(TOP_ROWS).to_dict("records")
    report = _json_safe(report)
    if out is not None:
        _write(Path(out), report, table, comparisons, sides, names)
    return report


def _best_control(deltas: dict, means: dict, delta_reps: dict | None, alpha_level: float) -> dict:
    """Eqs. 2-3 against the best control per quantity (highest mean agreement), and the asymmetry between them."""
    best = {q: max(deltas, key=lambda c: means[c][f"{q}_agreement"]) for q in ("correct", "incorrect")}
    out = {f"delta_{q}{n}": {"control": best[q], **deltas[best[q]][f"{q}_agreement{n}"]}
           for n in ("", "_normalised") for q in ("correct", "incorrect")}
    asym = out["delta_incorrect"]["delta"] - out["delta_correct"]["delta"]
    if delta_reps is None:
        out["asymmetry"] = {"delta": asym}
    else:
        out["asymmetry"] = _interval(asym, delta_reps[best["incorrect"]]["incorrect_agreement"]
                                     - delta_reps[best["correct"]]["correct_agreement"], "asymmetry", alpha_level)
    out["asymmetry"]["control"] = (best["correct"] if best["correct"] == best["incorrect"] else
                                   f"{best['incorrect']} (incorrect) / {best['correct']} (correct)")
    return out


def _comparison(teacher: torch.Tensor, model: torch.Tensor, labels: torch.Tensor) -> Comparison:
    comp = Comparison(teacher.shape[-1])
    for i in range(0, len(labels), CHUNK):
        comp.update(teacher[i:i + CHUNK], model[i:i + CHUNK], labels[i:i + CHUNK])
    return comp


def _min_p(n_student: int, n_control: int) -> float:
    """Smallest one-sided p-value the seed-level test can reach with these counts."""
    return 0.5 ** n_student if n_student == n_control else 1 / math.comb(n_student + n_control, n_student)


def _verdict(report: dict, controls: list[str]) -> dict:
    if not controls:
        return {"transfer_supported": None, "negative_asymmetry": None, "negative_asymmetry_significant": None,
                "negative_asymmetric_transfer": None, "improved_metrics": [],
                "text": "No control given: the transfer verdict needs a control model (e.g. the same student "
                        "architecture trained without KD); metrics and copied errors only."}
    d = report["deltas"]
    improved = [m for m in FUNCTIONAL_METRICS if all(d[c][m]["significant"] for c in controls)]
    supported = verdict(len(improved), len(FUNCTIONAL_METRICS), math.inf) != "not supported"  # no marginal here
    asym = report["agreement"]["asymmetry"]["delta"]
    negative = None if math.isnan(asym) else bool(asym > 0)
    significant = all(d[c]["asymmetry"]["significant"] for c in controls)
    both = None if negative is None else supported and negative
    text = (f"Transfer {'is' if supported else 'is not'} supported ({len(improved)} of {len(FUNCTIONAL_METRICS)} "
            f"functional metrics improve significantly against every control). ")
    if negative is None:
        text += "Asymmetry is undefined: the teacher makes no errors (or is never correct) on this test set."
    else:
        text += (f"Agreement gains are {'negatively' if negative else 'not negatively'} asymmetric (delta_incorrect "
                 f"- delta_correct = {asym:+.4f}, {'significant' if significant else 'not significant'} against "
                 f"every control), so this {'is' if both else 'is not'} negative asymmetric transfer.")
    return {"transfer_supported": supported, "negative_asymmetry": negative,
            "negative_asymmetry_significant": significant, "negative_asymmetric_transfer": both,
            "improved_metrics": improved, "text": text}


def _copied_table(comparisons: list[Comparison], sides: dict, names: list[str]) -> pd.DataFrame:
    """One row per (true label, teacher's wrong label) the teacher produces, most-copied by the student first."""
    errors = comparisons[0].teacher_errors.numpy()
    copies = {s: np.mean([comparisons[i].copied_errors.numpy() for i in idx], 0) for s, idx in sides.items()}
    controls = [s for s in sides if s != "student"]
    true, wrong = np.nonzero(errors)
    n = errors[true, wrong]
    table = pd.DataFrame({"true_label": true, "teacher_label": wrong,
                          "true_name": [names[i] for i in true], "teacher_name": [names[i] for i in wrong],
                          "teacher_errors": n.astype(int), "student_copies": copies["student"][true, wrong],
                          "student_rate": copies["student"][true, wrong] / n})
    if controls:
        rates = np.stack([copies[c][true, wrong] / n for c in controls])
        table["control_rate"] = rates.mean(0)
        table["excess_rate"] = table["student_rate"] - table["control_rate"]
        if len(controls) > 1:
            for c, r in zip(controls, rates):
                table[f"rate_{c}"] = r
    order = ["student_copies", "excess_rate" if controls else "student_rate", "teacher_errors"]
    return table.sort_values(order, ascending=False, kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# outputs


