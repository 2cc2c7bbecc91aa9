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
  ``alpha_level`` uncorrected (as kdlib.stats).
- Otherwise: percentile bootstrap over test examples, or whole sequences for [N, L, K] outputs, with the models
  held fixed (the intervals cover test-set sampling, not training randomness). Replicate b resamples the units
  ``rng.integers(0, U, size=U)`` drawn in turn from ``np.random.default_rng(seed)``. A delta is significant when
  its (1 - alpha_level) interval excludes 0 on the side where the student is more teacher-like (lower for the
  distance metrics, higher for agreement); no multiplicity correction.
- Verdicts (Sections 3.2-3.3): transfer is supported when a strict majority of the functional metrics improve
  significantly against every control. The best control per quantity is the one with the highest mean
  correct (resp. incorrect) agreement, as in kdlib.stats.agreement_deltas; negative asymmetry means
  delta_incorrect(best) > delta_correct(best); negative asymmetric transfer needs both.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy.stats import mannwhitneyu, sem

from .metrics import FUNCTIONAL_METRICS, METRICS, TERMS, Comparison, rates, token_terms
from .outputs import check_labels, check_logits
from .figures import COLOURS, new_figure, save_figure, styled
from .stats import benjamini_hochberg, normalised_delta, one_sided_wilcoxon, verdict
from .store import atomic_write

SUFFIXES = (".npy", ".npz", ".pt", ".csv")
AGREEMENT = ("correct_agreement", "incorrect_agreement")
DELTA_METRICS = FUNCTIONAL_METRICS + ("accuracy", "loss") + AGREEMENT
CHUNK = 2048  # units per pass, to bound memory on large test sets
TOP_ROWS = 20  # most-copied errors shown in report.json / report.md (the CSV has them all)


# ----------------------------------------------------------------------------------------------------------------
# loading and checking


def load_outputs(path, what: str, role: str | None = None) -> torch.Tensor:
    """Logits ([N, K] or [N, L, K]) or labels ([N] or [N, L]) saved by any framework.

    .npy: one array. .npz / .pt: one array or tensor, or the entry named ``what`` when there are several (so one
    file may hold both 'logits' and 'labels'). .csv: one row per example, K columns of logits or one column of
    labels, an optional header row, no index column; CSV cannot hold sequence outputs. Errors name the file as
    ``"{role} file {path}"`` (role defaults to ``what``).
    """
    if what not in ("logits", "labels"):
        raise ValueError(f"what={what!r} is not allowed: use 'logits' or 'labels'")
    path = Path(path)
    file = f"{role or what} file {path}"
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{file}: unknown file type {path.suffix!r}; allowed are {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{file} does not exist")
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                x = _pick(dict(z), what, file)
        elif suffix == ".pt":
            x = torch.load(path, map_location="cpu", weights_only=True)
            x = _pick(x, what, file) if isinstance(x, Mapping) else x
        else:
            x = _read_csv(path, what, file)
        if not isinstance(x, (np.ndarray, torch.Tensor)):
            raise ValueError(f"it holds a {type(x).__name__}, not an array or tensor")
        return torch.as_tensor(x)
    except (ValueError, TypeError, OSError, RuntimeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{file}: cannot read it as {suffix}: {e}") from e


def _pick(entries: Mapping, what: str, file: str):
    if len(entries) == 1:
        return next(iter(entries.values()))
    if what in entries:
        return entries[what]
    raise ValueError(f"{file} holds several entries {sorted(map(str, entries))}: name one {what!r}")


def _read_csv(path: Path, what: str, file: str) -> np.ndarray:
    cells = pd.read_csv(path, header=None, dtype=str, keep_default_na=False).to_numpy()
    if len(cells) and _is_header(cells[0]):
        cells = cells[1:]
    try:
        x = cells.astype(float)
    except ValueError as e:
        raise ValueError(f"{file}: non-numeric value in the CSV ({e})") from None
    if what == "labels":
        if x.shape[1] != 1:
            raise ValueError(f"{file} has {x.shape[1]} columns: a labels CSV holds one column of class "
                             f"indices (sequence labels [N, L] must be saved as .npy, .npz or .pt)")
        x = x[:, 0]
    return x


def _is_header(row) -> bool:
    """A first row with a non-number, or pandas' default column names 0, 1, ..., K-1 (K > 1), is a header."""
    return not all(map(_is_number, row)) or (len(row) > 1 and list(row) == [str(i) for i in range(len(row))])


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _resolve(spec, what: str, role: str) -> tuple[str, torch.Tensor]:
    """(name used in messages and the report, tensor) for a path or an in-memory array."""
    if isinstance(spec, (str, os.PathLike)):
        return f"{role} file {spec}", load_outputs(spec, what, role)
    return f"{role} (in-memory)", torch.as_tensor(spec if isinstance(spec, torch.Tensor) else np.asarray(spec))


def _check(teacher, models, labels) -> torch.Tensor:
    """Raise a ValueError naming the file for every mismatch; return the labels as class indices."""
    tname, t = teacher
    for name, x in [teacher, *models]:
        check_logits(x, name, finite=True)
    N, K = t.shape[0], t.shape[-1]
    for name, x in models:
        if x.shape[0] != N:
            raise ValueError(f"{name} has N={x.shape[0]} examples but {tname} has N={N}: every file must hold the "
                             f"same test examples in the same order{_header_hint(name, x.shape[0], N)}")
        if x.shape[-1] != K:
            raise ValueError(f"{name} has K={x.shape[-1]} classes but {tname} has K={K}")
        if x.shape != t.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)} but {tname} has shape {tuple(t.shape)}")
    lname, y = labels
    hint = (" (for sequence models save [N, L, K] logits with [N, L] labels as .npy, .npz or .pt: CSV holds "
            "[N, K] logits only)" if y.dim() == t.dim() else _header_hint(lname, len(y), N))
    return check_labels(y, t, lname, tname, hint)


def _header_hint(name: str, n: int, N: int) -> str:
    """A CSV with one row too many probably starts with a numeric header (pandas' default for a Series is '0')."""
    return (" (its first row looks like data: if it is a header such as pandas' default '0', name the column or "
            "drop the header)" if name.lower().endswith(".csv") and n == N + 1 else "")


def _control_groups(controls) -> dict[str, list]:
    """Controls as {name: [model per seed]} from a mapping, or a sequence whose items are one control each."""
    if isinstance(controls, (str, os.PathLike, np.ndarray, torch.Tensor)):
        controls = [controls]
    if isinstance(controls, Mapping):
        groups = {str(k): _as_list(v) for k, v in controls.items()}
    else:
        groups = {}
        for i, c in enumerate(controls):
            seeds = _as_list(c)
            name = Path(seeds[0]).stem if isinstance(seeds[0], (str, os.PathLike)) else f"control{i + 1}"
            groups[name if name not in groups else f"{name}_{i + 1}"] = seeds
    for name, seeds in groups.items():
        if name == "student" or not seeds:
            raise ValueError(f"control {name!r}: a control needs a name other than 'student' and at least one model")
    return groups


def _as_list(spec) -> list:
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


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
            if metric in AGREEMENT:  # mean gain over mean headroom (kdlib.stats.normalised_delta)
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


def _json_safe(x):
    """Plain Python types, NaN and inf as None, so report.json is strict JSON."""
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    return x


# ----------------------------------------------------------------------------------------------------------------
# outputs


def _write(out: Path, report: dict, table: pd.DataFrame, comparisons, sides, names) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    atomic_write(out / "report.json", lambda f: f.write(text.encode()))
    atomic_write(out / "copied_errors.csv", lambda f: f.write(table.to_csv(index=False).encode()))
    atomic_write(out / "report.md", lambda f: f.write(_markdown(report).encode()))
    save_figure(_plot_agreement(report), out / "agreement_deltas")
    save_figure(_plot_copied(comparisons, sides, names), out / "copied_errors")


def _fmt(x, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:+.{digits}f}"


def _uncertainty(r: dict) -> str:
    if "ci_low" in r:
        return f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
    if "sem" in r:
        p = f", p = {r['p']:.3g}" if r.get("p") is not None else ""
        p += f", p_adj = {r['p_adj']:.3g}" if r.get("p_adj") not in (None, r.get("p")) else ""
        return f"± {r['sem']:.4f} SEM{p}" if r["sem"] is not None else p.lstrip(", ")
    return ""


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]) + "\n"


def _markdown(r: dict) -> str:
    yes = lambda b: "n/a" if b is None else ("yes" if b else "no")
    inp, v, u = r["inputs"], r["verdict"], r["uncertainty"]
    shape = "x".join(map(str, inp["logits_shape"]))
    md = [f"# Distillation audit\n\nTeacher: `{inp['teacher']}`, accuracy {r['teacher']['accuracy']:.4f} on "
          f"{inp['n_tokens']} predictions (logits {shape}, K={inp['num_classes']}); labels: `{inp['labels']}`.\n\n"
          f"Students ({len(inp['students'])}): " + ", ".join(f"`{s}`" for s in inp["students"]) + ".\n\n"
          + "".join(f"Control `{c}` ({len(ms)}): " + ", ".join(f"`{m}`" for m in ms) + ".\n\n"
                    for c, ms in inp["controls"].items())]
    md.append(f"## Verdict\n\n- Transfer supported: **{yes(v['transfer_supported'])}**\n"
              f"- Negative asymmetry: **{yes(v['negative_asymmetry'])}** (significant against every control: "
              f"{yes(v['negative_asymmetry_significant'])})\n"
              f"- Negative asymmetric transfer (Section 3.2): **{yes(v['negative_asymmetric_transfer'])}**\n\n"
              f"{v['text']}\n")
    if u["method"] == "bootstrap":
        md.append(f"\nUncertainty: {u['interval']} bootstrap intervals over {u['n_units']} resampled units "
                  f"(resampling unit: {u['resampling_unit']}; {u['n_boot']} replicates, seed {u['seed']}). "
                  f"{u['note'].capitalize()}.\n")
    elif u["method"] == "seeds":
        md.append(f"\nUncertainty: {u['test']}; {u['fdr']}; level {u['alpha_level']}. Deltas are mean ± SEM.\n")
        low = [c for c, p in u["min_attainable_p"].items() if p >= u["alpha_level"]]
        if low:
            md.append(f"\nWarning: with these seed counts no test against {', '.join(low)} can reach "
                      f"p < {u['alpha_level']}; use at least 5 models per side.\n")
    sides = list(r["means"])
    md.append("\n## Metrics against the teacher (mean over models)\n\n" + _md_table(
        ["metric", *sides], [[m, *(f"{r['means'][s][m]:.4f}" if r["means"][s][m] is not None else "n/a"
                                   for s in sides)] for m in METRICS]))
    if "agreement" in r:
        a = r["agreement"]
        md.append("\n## Agreement deltas against the best control (Eqs. 2-3)\n\n" + _md_table(
            ["quantity", "control", "delta", "uncertainty"],
            [[k, a[k]["control"], _fmt(a[k]["delta"]), _uncertainty(a[k])] for k in a]))
        md.append("\nSignificant gain: the student is more teacher-like than the control (lower distance or "
                  "disagreement, higher agreement; for asymmetry, delta_incorrect > delta_correct) or performs "
                  "better (accuracy, loss).\n")
        for c, d in r["deltas"].items():
            md.append(f"\n### Student - `{c}`\n\n" + _md_table(
                ["quantity", "delta", "uncertainty", "significant gain"],
                [[k, _fmt(x["delta"]), _uncertainty(x), yes(x.get("significant"))]
                 for k, x in d.items() if isinstance(x, dict)]))
    rows = r["copied_errors"][:10]
    md.append("\n## Most-copied teacher errors\n\n" + (_md_table(
        ["true label", "teacher's label", "teacher errors", "student copies", "student rate", "control rate"],
        [[x["true_name"], x["teacher_name"], x["teacher_errors"], f"{x['student_copies']:g}",
          f"{x['student_rate']:.3f}", f"{x['control_rate']:.3f}" if x.get("control_rate") is not None else "n/a"]
         for x in rows]) if rows else "The teacher makes no errors on this test set.\n")
        + "\nAll pairs: `copied_errors.csv`.\n")
    md.append("\n## Figures\n\n![agreement deltas](agreement_deltas.png)\n\n![copied errors](copied_errors.png)\n")
    return "".join(md)


@styled
def _plot_agreement(r: dict) -> Figure:
    """Bars of delta_correct / delta_incorrect per control (raw and headroom-normalised) with their uncertainty."""
    fig = new_figure(6.5, 2.8)
    colours = COLOURS
    if "deltas" not in r:  # no control: the student's agreement levels
        ax = fig.subplots()
        vals = [r["means"]["student"][f"{q}_agreement"] for q in colours]
        ax.bar(list(colours), [np.nan if x is None else x for x in vals], color=list(colours.values()))
        ax.set_ylabel("student-teacher agreement")
        ax.set_title("Agreement where the teacher is correct / incorrect (no control)")
        return fig
    controls = list(r["deltas"])
    x, w = np.arange(len(controls)), 0.38
    for ax, suffix, title in zip(fig.subplots(1, 2), ("", "_normalised"),
                                 ("student - control", "normalised by control headroom")):
        for j, q in enumerate(colours):
            recs = [r["deltas"][c][f"{q}_agreement{suffix}"] for c in controls]
            val = np.array([np.nan if d["delta"] is None else d["delta"] for d in recs])
            if "ci_low" in recs[0]:
                err = np.array([[v - (d["ci_low"] if d["ci_low"] is not None else np.nan),
                                 (d["ci_high"] if d["ci_high"] is not None else np.nan) - v]
                                for v, d in zip(val, recs)]).T
            else:
                err = np.array([np.nan if d["sem"] is None else d["sem"] for d in recs])
            ax.bar(x + (j - 0.5) * w, val, w, yerr=err, capsize=3, color=colours[q], label=f"teacher {q}")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, controls)
        ax.set_title(title)
    fig.axes[0].set_ylabel("Δ agreement with teacher")
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False)
    method = r["uncertainty"]["method"]
    fig.suptitle(f"Agreement deltas ({'bootstrap CI' if method == 'bootstrap' else '± SEM over seeds'})")
    return fig


@styled
def _plot_copied(comparisons, sides, names, max_classes: int = 30) -> Figure:
    """Per true class: how often each side reproduces the teacher's wrong label (tick: its most-copied label)."""
    errors = comparisons[0].teacher_errors.numpy()
    copies = {s: np.mean([comparisons[i].copied_errors.numpy() for i in idx], 0) for s, idx in sides.items()}
    per_class = errors.sum(1)
    classes = np.nonzero(per_class)[0]
    classes = classes[np.argsort(-copies["student"].sum(1)[classes], kind="stable")][:max_classes]
    fig = new_figure(min(16.0, max(5.0, 0.25 * len(classes) * len(sides) + 2)), 3.0)
    ax = fig.subplots()
    w = 0.8 / len(sides)
    for j, s in enumerate(sides):
        ax.bar(np.arange(len(classes)) + (j - (len(sides) - 1) / 2) * w,
               copies[s].sum(1)[classes] / per_class[classes], w, label=s)
    ticks = [names[k] + (f"\n→{names[int(copies['student'][k].argmax())]}" if copies["student"][k].any() else "")
             for k in classes]
    ax.set_xticks(np.arange(len(classes)), ticks, fontsize=7)
    ax.set_xlabel("true class (→ teacher's wrong label the student copies most)")
    ax.set_ylabel("copied teacher errors / teacher errors")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("Teacher errors reproduced, per true class" + (f" (top {max_classes})" if len(classes) ==
                                                                max_classes else ""))
    return fig
