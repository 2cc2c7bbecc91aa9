"""Audit a distillation from saved outputs or from the models themselves: functional transfer for any
teacher/student pair (paper Sections 3, 6).

The paper's practical advice is to "audit teacher error structure and report functional transfer analyses alongside
accuracy/loss". This module does it without our training pipeline, from logits saved by any framework
(:func:`audit`) or from models run over a data loader (:func:`audit_models`, :func:`logits`: classifiers and
causal language models, sequences of any length):

- every metric of :func:`kdlib.metrics.compare` for the student(s) and each control against the teacher;
- deltas student - control for the functional metrics, accuracy, loss and teacher-correct / teacher-incorrect
  agreement (Eqs. 2-3), the agreement deltas normalised by the control's headroom (delta / (1 - control
  agreement)), and the asymmetry delta_incorrect - delta_correct, against each control;
- the copied-error table: per (true label, teacher's wrong label), how often the student reproduces the teacher's
  wrong label, next to the controls' rate.

Choices fixed here:
- Labels equal to ``ignore_index`` (-100) are padding: dropped with every model's logits before any metric.
- Any vocabulary streams (kdlib.metrics keeps no K x K table unless K is small): :func:`audit_models` passes each
  batch through every model in turn, so no model's logits over the whole test set are held. Where Procrustes
  cannot fit its memory budget it is reported as n/a with a note (report.json "notes", report.md).
- A side with several models (seeds) enters through the mean of its models' metrics.
- Several models on every side: one-sided tests on the per-model metrics, the paired Wilcoxon signed-rank test
  (i-th student with the i-th model of a control: list them in matching seed order) when the counts are equal,
  else the one-sided Mann-Whitney U test; BH-FDR over (functional metric, control), all other quantities at
  ``alpha_level`` uncorrected (as kdlib.analysis.stats).
- Otherwise: percentile bootstrap over test examples, or whole sequences for [N, L, K] outputs and sequence models,
  with the models held fixed (the intervals cover test-set sampling, not training randomness). A unit whose labels
  are all padding is left out. Replicate b resamples the units ``rng.integers(0, U, size=U)`` drawn in turn from
  ``np.random.default_rng(seed)``. A delta is significant when its (1 - alpha_level) interval excludes 0 on the
  side where the student is more teacher-like (lower for the distance metrics, higher for agreement); no
  multiplicity correction.
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

from ..metrics import CHUNK_VALUES, FUNCTIONAL_METRICS, METRICS, TERMS, Comparison, rates
from .files import _as_list, _check, _control_groups, _resolve, load_outputs  # noqa: F401  (public)
from .forward import scored_batches
from .report import Copies, _json_safe, _write
from ..analysis.stats import benjamini_hochberg, normalised_delta, one_sided_wilcoxon, verdict

AGREEMENT = ("correct_agreement", "incorrect_agreement")
DELTA_METRICS = FUNCTIONAL_METRICS + ("accuracy", "loss") + AGREEMENT
TOP_ROWS = 20  # most-copied errors shown in report.json / report.md (the CSV has them all)


# ----------------------------------------------------------------------------------------------------------------
# resampling (per-unit sums come from each Comparison: Comparison.unit_sums)


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
          alpha_level: float = 0.05, class_names=None, ignore_index: int | None = -100) -> dict:
    """Functional-transfer report of ``students`` against ``teacher``, relative to ``controls``.

    teacher, labels: a path (.npy, .npz, .pt, .csv) or an array/tensor. students: one such item or a list of them
    (several seeds). controls: {name: item or list of seeds}, or a sequence whose items are one control each (an
    item that is a list holds that control's seeds). Labels equal to ``ignore_index`` are padding (None: none).
    Writes report.json, report.md, copied_errors.csv and the figures into ``out`` when given; returns the content
    of report.json.
    """
    _check_options(n_boot, alpha_level)
    t = _resolve(teacher, "logits", "teacher")
    studs = [_resolve(s, "logits", "student") for s in _as_list(students)]
    if not studs:
        raise ValueError("students is empty: give at least one student's logits")
    groups = {name: [_resolve(m, "logits", f"control {name}") for m in seeds]
              for name, seeds in _control_groups(controls).items()}
    y_named = _resolve(labels, "labels", "labels")
    models = [("student", m) for m in studs] + [(c, m) for c, ms in groups.items() for m in ms]
    y = _check(t, [m for _, m in models], y_named, ignore_index)
    N, K = t[1].shape[0], t[1].shape[-1]
    _class_names(class_names, K)  # before the work
    comparisons = [Comparison(K, ignore_index) for _ in models]
    units = torch.arange(N).reshape(-1, *[1] * (y.dim() - 1)).expand_as(y)  # example or sequence
    step = max(1, CHUNK_VALUES // math.prod(t[1].shape[1:]))
    for i in range(0, N, step):
        for c, (_, (_, m)) in zip(comparisons, models):
            c.update(t[1][i:i + step], m[i:i + step], y[i:i + step], units[i:i + step])
    inputs = {"teacher": t[0], "labels": y_named[0], "students": [n for n, _ in studs],
              "controls": {c: [n for n, _ in ms] for c, ms in groups.items()}, "logits_shape": list(t[1].shape),
              "n_examples": N}
    return _report(inputs, [(side, name) for side, (name, _) in models], comparisons,
                   "sequence" if t[1].dim() == 3 else "test example", out, n_boot, seed, alpha_level, class_names)


def audit_models(teacher, students, loader, controls=(), device="cpu", out=None, n_boot: int = 1000, seed: int = 0,
                 alpha_level: float = 0.05, class_names=None, causal_lm: bool | None = None,
                 ignore_index: int | None = -100) -> dict:
    """:func:`audit` of models run over ``loader``: the same report as from their saved logits.

    teacher: a model (``torch.nn.Module`` or callable); students: a model or a list of them (seeds); controls:
    {name: model or list of seeds}, or a sequence of models (one control each). Batches, causal language models,
    padding and ``ignore_index``: :mod:`kdlib.audit.forward`. One pass over ``loader``, each batch through every
    model in turn (the models must fit on ``device`` together), streamed into the metrics: memory stays bounded at
    any vocabulary. The bootstrap resamples whole sequences for sequence models, else examples.
    """
    _check_options(n_boot, alpha_level)
    studs = _as_list(students)
    if not studs:
        raise ValueError("students is empty: give at least one student model")
    groups = _control_groups([controls] if isinstance(controls, torch.nn.Module) else controls)
    label = lambda role, m, i, n: f"{role} model{f' {i + 1}' if n > 1 else ''} ({type(m).__name__})"
    models = [("student", label("student", m, i, len(studs)), m) for i, m in enumerate(studs)]
    models += [(c, label(f"control {c}", m, i, len(ms)), m) for c, ms in groups.items() for i, m in enumerate(ms)]
    tname = label("teacher", teacher, 0, 1)
    comparisons = [Comparison(ignore_index=ignore_index) for _ in models]
    n_examples, sequence = 0, False
    for batch in scored_batches([teacher, *(m for *_, m in models)], [tname, *(n for _, n, _ in models)], loader,
                                device, causal_lm, ignore_index):
        t = next(batch.logits)
        for c, m in zip(comparisons, batch.logits):
            c.update(t, m, batch.labels, batch.units)
        n_examples, sequence = n_examples + batch.size, batch.sequence
    inputs = {"teacher": tname, "labels": "loader", "students": [n for side, n, _ in models if side == "student"],
              "controls": {c: [n for side, n, _ in models if side == c] for c in groups},
              "logits_shape": [comparisons[0].n, comparisons[0].num_classes], "n_examples": n_examples}
    return _report(inputs, [(side, name) for side, name, _ in models], comparisons,
                   "sequence" if sequence else "test example", out, n_boot, seed, alpha_level, class_names)


def logits(model, loader, device="cpu", *, causal_lm: bool | None = None,
           ignore_index: int | None = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """``model``'s logits [N, K] (float32, CPU) and their labels [N] over ``loader``, one row per scored token:
    causal language models shifted, padding and ``ignore_index`` dropped, sequences of any length flattened
    (:mod:`kdlib.audit.forward`). Save them for :func:`audit`, or use :func:`audit_models` at a large vocabulary."""
    parts = [(next(b.logits), b.labels) for b in scored_batches([model], ["model"], loader, device, causal_lm,
                                                                 ignore_index)]
    if not parts:
        raise ValueError("the loader gave no batches")
    return torch.cat([z for z, _ in parts]), torch.cat([y for _, y in parts])


def _check_options(n_boot, alpha_level) -> None:
    if not (isinstance(n_boot, int) and n_boot >= 1):
        raise ValueError(f"n_boot={n_boot!r} is not allowed: use a positive integer (e.g. 1000)")
    if not 0 < alpha_level < 1:
        raise ValueError(f"alpha_level={alpha_level!r} is not allowed: use a level in (0, 1), e.g. 0.05")


def _class_names(class_names, K: int) -> list[str]:
    if class_names is not None and len(class_names) != K:
        raise ValueError(f"class_names has {len(class_names)} names but the logits have K={K} classes")
    return list(map(str, class_names)) if class_names is not None else [str(k) for k in range(K)]


def _report(inputs: dict, models: list[tuple[str, str]], comparisons: list[Comparison], resampling_unit: str,
            out, n_boot: int, seed: int, alpha_level: float, class_names) -> dict:
    """The audit from each model's :class:`Comparison` with the teacher; ``models``: (side, name) in their order."""
    results = [c.result() for c in comparisons]
    first = comparisons[0]
    K = first.num_classes
    names = _class_names(class_names, K)
    groups = list(dict.fromkeys(side for side, _ in models if side != "student"))
    sides = {s: [i for i, (side, _) in enumerate(models) if side == s] for s in ["student", *groups]}
    values = pd.DataFrame([{"side": side, "name": name, **r} for (side, name), r in zip(models, results)])
    means = {s: values[values["side"] == s].drop(columns=["side", "name"]).mean().to_dict() for s in sides}
    teacher = first.teacher()
    report = {
        "inputs": {**inputs, "num_classes": K, "n_tokens": first.n,
                   "class_names": names if class_names is not None else None},
        "teacher": {"accuracy": teacher["accuracy"], "loss": teacher["loss"], "errors": first.teacher_errors.sum(),
                    "error_rate": 1 - teacher["accuracy"]},
        "models": {s: [{"name": n, **r} for (side, n), r in zip(models, results) if side == s] for s in sides},
        "means": means,
        "notes": sorted({note for c in comparisons for note in c.notes.values()}),
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
        units = np.stack([c.unit_sums() for c in comparisons])
        reps = _rates(_bootstrap_sums(units, n_boot, seed))
        point = _rates(units.sum(1))
        report["deltas"], delta_reps = _bootstrap_deltas(point, reps, sides, groups, alpha_level)
        report["uncertainty"] = {
            "method": "bootstrap", "n_boot": n_boot, "seed": seed, "alpha_level": alpha_level,
            "interval": f"percentile {100 * (1 - alpha_level):g}%", "resampling_unit": resampling_unit,
            "n_units": int(units.shape[1]),
            "note": "models are held fixed: the intervals cover test-set sampling, not training randomness; a side "
                    "with several models enters through their mean"}
    if groups:
        report["agreement"] = _best_control(report["deltas"], means, delta_reps, alpha_level)
    report["verdict"] = _verdict(report, groups)
    copies = _copies(comparisons, sides)
    table = _copied_table(copies, names)
    report["copied_errors"] = table.head(TOP_ROWS).to_dict("records")
    report = _json_safe(report)
    if out is not None:
        _write(Path(out), report, table, copies, names)
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


def _copies(comparisons: list[Comparison], sides: dict) -> Copies:
    """Every (true label, teacher's wrong label) pair the teacher produces, with each side's mean copies."""
    true, wrong, errors = comparisons[0].teacher_errors.pairs()
    by_side = {s: np.mean([comparisons[i].copied_errors.count(true, wrong).numpy() for i in idx], 0)
               for s, idx in sides.items()}
    return Copies(true.numpy(), wrong.numpy(), errors.numpy(), by_side)


def _copied_table(copies: Copies, names: list[str]) -> pd.DataFrame:
    """One row per (true label, teacher's wrong label) the teacher produces, most-copied by the student first."""
    true, wrong, n, by_side = copies
    controls = [s for s in by_side if s != "student"]
    table = pd.DataFrame({"true_label": true, "teacher_label": wrong,
                          "true_name": [names[i] for i in true], "teacher_name": [names[i] for i in wrong],
                          "teacher_errors": n.astype(int), "student_copies": by_side["student"],
                          "student_rate": by_side["student"] / n})
    if controls:
        rates = np.stack([by_side[c] / n for c in controls])
        table["control_rate"] = rates.mean(0)
        table["excess_rate"] = table["student_rate"] - table["control_rate"]
        if len(controls) > 1:
            for c, r in zip(controls, rates):
                table[f"rate_{c}"] = r
    order = ["student_copies", "excess_rate" if controls else "student_rate", "teacher_errors"]
    return table.sort_values(order, ascending=False, kind="stable").reset_index(drop=True)
