"""One analysis per collected setup, computed once and stored beside its tables; every reader after it (reports,
the scorecard, ``kdlib summary``, the cross-setup views, the notebooks and their explorer, ``kdlib study``) reads it.

From a setup's runs table (per student variant where a setup has several, e.g. widths) it holds:

- ``tests``: the paired one-sided Wilcoxon tests with BH-FDR per (teacher seed, alpha, metric)
  (:func:`kdlib.analysis.stats.transfer_tests`);
- ``deltas``: the agreement deltas against the best control, raw and as a share of its headroom
  (:func:`kdlib.analysis.stats.agreement_deltas`);
- ``verdicts``: one row per (teacher seed, alpha): the verdict (:func:`kdlib.analysis.stats.verdict`), its inputs
  and the deltas, which is all a verdict line or an overview shows;
- ``means``: mean +- SEM of every table metric per condition and teacher seed (Table 14 style, the best mean per
  metric marked).

:func:`collected_analysis` reads ``<results>/<setup label>/<profile>/analysis/*.csv``, written by
:func:`kdlib.analysis.collect.collect` with the tables (and computed then for tables collected before analyses existed).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..conditions import CONDITIONS, label, student_conditions
from ..metrics import lower_is_better, table_metrics
from .evidence import FRAGILE, detectable, stability, transfer_mde
from .stats import Rule, agreement_deltas, sem, transfer_tests, verdict_label
from ..store import read_table, write_csv

FILES = ("tests", "deltas", "verdicts", "means")
N_BOOT = 1000  # resamples of the student seeds behind a verdict's stability
DIGITS = 3  # decimals of means and SEMs in tables, as the paper prints them


def table_columns(runs: pd.DataFrame) -> list[tuple[str, float | None]]:
    """Table columns in the paper's order: SIDDO, KD alphas, RCD alphas, LS alphas."""
    cols = []
    for cond in student_conditions():
        if not CONDITIONS[cond].weighted:
            cols += [(cond, None)] if (runs["condition"] == cond).any() else []
            continue
        alphas = sorted(runs.loc[runs["condition"] == cond, "alpha"].dropna().unique())
        cols += [(cond, float(a)) for a in alphas]
    return cols


def mark_best(table: pd.DataFrame) -> pd.DataFrame:
    """``best``: per metric, every column whose mean, as printed, equals the best printed mean (ties bold on
    every side)."""
    table = table.copy()
    shown = table["mean"].round(DIGITS)
    best = shown.groupby(table["metric"]).transform(
        lambda g: g.min() if lower_is_better(g.name) else g.max())
    table["best"] = shown == best
    return table


def mean_sem_table(runs: pd.DataFrame, teacher_seed, metrics=None) -> pd.DataFrame:
    """Long table (metric, condition, alpha, column, group, sub, mean, sem, n, best) for one teacher seed:
    Table 14 style (``metrics`` default: the main table's rows, :func:`kdlib.metrics.table_metrics`). ``group``
    and ``sub`` are the two header rows of its LaTeX (e.g. "Knowledge Distillation" over "0.5")."""
    t = runs[runs["teacher_seed"] == teacher_seed]
    rows = []
    for metric in metrics or table_metrics():
        for cond, alpha in table_columns(t):
            sel = t[(t["condition"] == cond) & (t["alpha"].isna() if alpha is None else np.isclose(t["alpha"], alpha))]
            x = sel[metric].to_numpy(float)
            rows.append({"metric": metric, "condition": cond, "alpha": alpha, "column": label(cond, alpha),
                         "group": CONDITIONS[cond].group or CONDITIONS[cond].display,
                         "sub": CONDITIONS[cond].display if alpha is None else f"{alpha:g}", "mean": float(np.mean(x)),
                         "sem": sem(x), "n": len(x)})
    return mark_best(pd.DataFrame(rows))


def variants(runs: pd.DataFrame) -> list:
    """A setup's student variants in order (widths ascending), or ``[None]`` for a setup without them."""
    if "variant" not in runs.columns or not runs["variant"].notna().any():
        return [None]
    return sorted(runs["variant"].dropna().unique(), key=variant_key)


def variant_key(name: str):
    try:
        return (0, float(str(name).rstrip("%")), str(name))
    except ValueError:
        return (1, 0.0, str(name))


def part(runs: pd.DataFrame, variant) -> pd.DataFrame:
    """The runs of one student variant (all of them for ``None``), without the variant column."""
    if variant is None:
        return runs
    return runs[runs["variant"] == variant].drop(columns="variant")


def options(setup) -> dict:
    """The analysis readings of ``setup`` as :func:`analyse`'s keywords: its verdict ``rule`` and ``best_control``."""
    return {"rule": Rule(setup.fdr_family, setup.majority, setup.marginal_threshold),
            "best_control": setup.best_control}


def _options_of(folder: Path) -> dict:
    """The analysis readings of the setup collected in ``folder`` (``<results>/<label>/<profile>``), read from its
    label; the defaults where the label names no setup."""
    from .. import setups
    try:
        return options(setups.get(Path(folder).parent.name, Path(folder).name))
    except (ValueError, KeyError):
        return {}


def analyse(runs: pd.DataFrame, exclude=(), rule: Rule = Rule(), best_control: str = "per-quantity",
            n_boot: int = N_BOOT) -> dict[str, pd.DataFrame]:
    """The analysis of one setup's runs table (module docstring); ``exclude``: controls left out of the agreement
    deltas, e.g. ``[("rcd", 0.9)]``; ``rule`` and ``best_control``: the verdict rule's open choices (the analysis
    readings); ``n_boot``: resamples of the student seeds behind each verdict's stability."""
    frames = {k: [] for k in FILES}
    for v in variants(runs):
        runs_v = part(runs, v)
        if runs_v.empty or not (runs_v["condition"] == "kd").any():
            continue
        tests = transfer_tests(runs_v, rule.alpha_level, marginal_threshold=rule.marginal_threshold,
                               on_missing="drop", fdr_family=rule.fdr_family, majority=rule.majority)
        deltas = agreement_deltas(runs_v, exclude=exclude, best_control=best_control)
        verdicts = _verdicts(tests, deltas, rule)
        verdicts = verdicts.merge(stability(runs_v, verdicts, rule, best_control, n_boot, exclude=exclude),
                                  on=["teacher_seed", "alpha"], how="left")
        tests = detectable(runs_v, tests, rule).merge(
            verdicts[["teacher_seed", "alpha", "verdict_stability"]], on=["teacher_seed", "alpha"], how="left")
        verdicts = verdicts.merge(_detectable_transfer(runs_v, verdicts, rule), on=["teacher_seed", "alpha"],
                                  how="left")
        frames["tests"].append(tests.assign(variant=v))
        frames["deltas"].append(deltas.assign(variant=v))
        frames["verdicts"].append(verdicts.assign(variant=v))
        for seed in sorted(runs_v["teacher_seed"].unique()):
            means = mean_sem_table(runs_v, seed, [m for m in table_metrics(extended=True) if m in runs_v])
            frames["means"].append(means.assign(teacher_seed=seed, variant=v))
    return {k: pd.concat(f, ignore_index=True) if f else pd.DataFrame() for k, f in frames.items()}


def _detectable_transfer(runs: pd.DataFrame, verdicts: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    """Per (teacher seed, alpha) whose verdict is "not supported": ``mde80`` of the transfer, the improvement over
    the controls on every functional metric that the whole rule would detect with 80% power at these seeds
    (:func:`kdlib.analysis.evidence.transfer_mde`); NaN where transfer was found."""
    return pd.DataFrame([{"teacher_seed": v["teacher_seed"], "alpha": v["alpha"],
                          "mde80": transfer_mde(runs, v["teacher_seed"], v["alpha"], rule)
                          if v["verdict"] == "not supported" else math.nan} for _, v in verdicts.iterrows()],
                        columns=["teacher_seed", "alpha", "mde80"])


def fragile(stability_value) -> bool:
    """A verdict whose stability is below :data:`kdlib.analysis.evidence.FRAGILE`."""
    return bool(not pd.isna(stability_value) and stability_value < FRAGILE)


def _verdicts(tests: pd.DataFrame, deltas: pd.DataFrame, rule: Rule = Rule()) -> pd.DataFrame:
    rows = []
    for (seed, alpha), g in tests.groupby(["teacher_seed", "alpha"]):
        functional = g[g["family"] == "functional"]
        row = {"teacher_seed": seed, "alpha": alpha, "verdict": verdict_label(g["supported"].iloc[0],
                                                                              g["marginal"].iloc[0]),
               "n_ticked": int(functional["tick"].sum()), "n_functional": len(functional),
               "mean_functional_improvement": float(g["mean_functional_improvement"].iloc[0])}
        d = deltas[(deltas["teacher_seed"] == seed) & np.isclose(deltas["alpha"], alpha)]
        if len(d):
            row.update(d.iloc[0].drop(["teacher_seed", "alpha"]).to_dict())
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_lines(verdicts: pd.DataFrame, name: str) -> list[str]:
    """One line per (variant,) teacher seed and alpha: the verdict and the agreement deltas (for terminals)."""
    lines = []
    for _, v in verdicts.iterrows():
        where = name if pd.isna(v.get("variant")) else f"{name} [{v['variant']}]"
        text = f"{where}, KD {v['alpha']:g}, teacher seed {v['teacher_seed']}: transfer {v['verdict']}"
        if "delta_correct" in v and not pd.isna(v["delta_correct"]):
            text += (f"; Δcorrect {v['delta_correct']:+.3f}, Δincorrect {v['delta_incorrect']:+.3f} "
                     f"({'negatively asymmetric' if v['negative_asymmetry'] else 'not negatively asymmetric'})")
        if v["verdict"] == "not supported" and not pd.isna(v.get("mde80", np.nan)):
            text += (f"; no transfer larger than {v['mde80']:.3g} per metric (80% power)" if np.isfinite(v["mde80"])
                     else "; these seeds can detect no transfer under this rule")
        if not pd.isna(v.get("verdict_stability", np.nan)):
            text += (f"; {'FRAGILE verdict, ' if fragile(v['verdict_stability']) else ''}stability "
                     f"{v['verdict_stability']:.2f}")
        lines.append(text)
    return lines


def write(analysis: dict[str, pd.DataFrame], folder: Path) -> None:
    """Store an analysis as ``folder/analysis/<part>.csv``."""
    for name, frame in analysis.items():
        write_csv(frame, Path(folder) / "analysis" / f"{name}.csv")


def read(folder: Path) -> dict[str, pd.DataFrame] | None:
    """A stored analysis (None if it is missing or older than the runs table beside it)."""
    folder = Path(folder)
    files = {name: folder / "analysis" / f"{name}.csv" for name in FILES}
    tables = list(folder.glob("runs.*"))
    if not all(p.exists() for p in files.values()) or (
            tables and min(p.stat().st_mtime for p in files.values()) < max(t.stat().st_mtime for t in tables)):
        return None
    out = {}
    for name, path in files.items():
        try:
            frame = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            frame = pd.DataFrame()
        for col in ("variant",) + (("alpha",) if name == "means" else ()):  # None where a fresh analysis has None
            if col in frame:
                frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
        if "missing_pairs" in frame:  # an empty string reads back as NaN
            frame["missing_pairs"] = frame["missing_pairs"].astype(object).where(frame["missing_pairs"].notna(), "")
        out[name] = frame
    return out


def collected_analysis(folder: Path) -> dict[str, pd.DataFrame]:
    """The analysis of the setup collected in ``folder`` (``<results>/<label>/<profile>``): stored, or computed
    from its runs table and stored now."""
    stored = read(folder)
    if stored is not None:
        return stored
    analysis = analyse(read_table(Path(folder) / "runs"), **_options_of(folder))
    write(analysis, folder)
    return analysis

