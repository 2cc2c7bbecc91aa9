"""A setup's report: every artefact of its runs written into ``figures/<setup>/<profile>/``, from its analysis
(:mod:`kdlib.analysis`): mean +- SEM tables (CSV and LaTeX, :mod:`kdlib.report.latex`), the tick table, the agreement
deltas and their charts (:mod:`kdlib.report.figures`), the scaling view across student variants, and the paper beside
ours (:mod:`kdlib.report.paper_beside`). Also the terminal's verdict lines across collected setups.

The names below the imports are the report's public ones, from the rooms they live in (tables, LaTeX, figures).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .. import paper
from ..analysis.evidence import calibrate, calibration_summary
from ..analysis.stats import Rule
from ..analysis import analyse, collected_analysis, options, part, variants, verdict_lines
from ..analysis import mark_best, mean_sem_table  # noqa: F401  (public: the tables' mean +- SEM and bold-best rule)
from .figures import plot_agreement_deltas, plot_power, plot_scaling, save_figure, drawn
from .figures import COLOURS, new_figure, plot_curves, plot_examples, plot_vs_paper, stratified  # noqa: F401
from .latex import means_latex, ticks_latex, _latex_escape
from ..metrics import table_metrics
from .paper_beside import paper_beside
from ..analysis.stats import agreement_deltas  # noqa: F401  (public: what the delta charts show)
from ..store import write_csv, write_text
from .tables import format_mean_sem, human, readable, tick_legend, tick_table, wide_means  # noqa: F401

CALIBRATION = "calibration.csv"
NULL_LEVEL = 0.05  # a verdict rule whose null rate of "supported" is above this is said to be uncalibrated


def find_collected(out) -> list[tuple[str, str, Path]]:
    """Every (setup label, profile, runs-table stem) collected under ``out``, sorted."""
    found = set()
    for path in Path(out).glob("*/*/runs.*"):
        if path.suffix in (".csv", ".parquet"):
            found.add((path.parent.parent.name, path.parent.name, path.with_suffix("")))
    return sorted(found)


def verdict_summary(out, profile: str, names=None) -> list[str] | None:
    """One verdict line per collected setup (``names``: only these), variant, teacher seed and alpha at ``profile``,
    read from the stored analyses, and a warning where a setup's calibrated rule says "supported" too often when KD
    does nothing; None when nothing is collected there."""
    found = [f for f in find_collected(out) if f[1] == profile and (not names or f[0] in names)]
    if not found:
        return None
    lines = []
    for name, _, stem in found:
        lines += verdict_lines(collected_analysis(stem.parent)["verdicts"], name)
        lines += calibration_warning(stem.parent, name)
    return lines


def calibration_warning(folder: Path, name: str) -> list[str]:
    """A line when the setup's calibration (``analysis/calibration.csv``, ``kdlib calibrate``) finds the rule's null
    rate of "supported" above 0.05; nothing otherwise, or when it was not calibrated."""
    path = Path(folder) / "analysis" / CALIBRATION
    if not path.exists():
        return []
    summary = calibration_summary(pd.read_csv(path))
    if not summary["null"] > NULL_LEVEL:
        return []
    return [f"{name}: WARNING: its verdict rule says \"supported\" in {summary['null']:.1%} of runs where KD does "
            f"nothing (above {NULL_LEVEL:.0%}; kdlib calibrate): read its verdicts with that in mind"]


def calibration_report(setup, runs: pd.DataFrame, folder: Path, figures: Path, rule=None,
                       draws: int = 1000) -> tuple[pd.DataFrame, dict]:
    """Calibrate the verdict rule on a setup's collected runs (:func:`kdlib.analysis.evidence.calibrate`, per
    student variant): ``folder/analysis/calibration.csv`` and ``figures/power.pdf`` and ``.png``."""
    rule = rule if rule is not None else Rule()
    parts = [calibrate(part(runs, v), rule, draws=draws).assign(variant=v) for v in variants(runs)]
    table = pd.concat(parts, ignore_index=True)
    write_csv(table, Path(folder) / "analysis" / CALIBRATION)
    save_figure(plot_power(table, f"{setup.label} ({setup.profile}): the verdict rule's calibration"),
                Path(figures) / "power")
    return table, calibration_summary(table)


def build_report(runs: pd.DataFrame, name: str, dest: Path, exclude=(), extended: bool = True, setup=None,
                 teachers: pd.DataFrame | None = None, draw: bool = True, analysis: dict | None = None) -> dict:
    """Write every artefact of one setup's runs into ``dest``; returns the computed frames, paths and verdict
    lines. ``analysis``: the setup's stored analysis (computed from ``runs`` when not given). Given the ``setup``
    (and its ``teachers`` table), a setup the paper reports also gets the paper's numbers beside ours
    (:func:`kdlib.report.paper_beside.paper_beside`). ``draw=False`` keeps the figures already in ``dest`` (drawn by an
    earlier report of the same runs) instead of drawing them again.

    A setup with student variants (a ``variant`` column, e.g. widths) gets one sub-report per variant in
    ``dest/<variant>/`` plus the scaling view across variants (Figure 11 style)."""
    analysis = analysis if analysis is not None else analyse(runs, exclude,
                                                             **(options(setup) if setup is not None else {}))
    if variants(runs) != [None]:
        return _variant_report(runs, name, Path(dest), exclude, extended, draw, analysis)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tests, deltas = (analysis[k].drop(columns="variant") for k in ("tests", "deltas"))
    write_csv(tests, dest / "tests.csv")
    ticks = tick_table(tests)
    write_csv(ticks, dest / "ticks.csv", index=True)
    write_text(dest / "ticks.tex", ticks_latex(ticks, f"{_latex_escape(name)}: significance of KD against SIDDO "
                                                      f"and RCD"))
    write_csv(deltas, dest / "agreement_deltas.csv")
    means = {}
    for seed, stored in analysis["means"].groupby("teacher_seed", sort=True):
        for kind, metrics in (("means", table_metrics()), ("extended", table_metrics(extended=True))):
            if kind == "extended" and not extended:
                continue
            table = stored[stored["metric"].isin(metrics)].drop(columns=["teacher_seed", "variant"])
            table = table.reset_index(drop=True)
            write_csv(wide_means(table, keep_zero=True), dest / f"{kind}_teacher{seed}.csv", index=True)
            n = int(table["n"].max())
            write_text(dest / f"{kind}_teacher{seed}.tex", means_latex(
                table, f"{_latex_escape(name)}, teacher seed {seed}: {n} student seeds per condition"))
            means[(kind, seed)] = table
    figures = []
    for normalised in (False, True):
        stem = dest / ("agreement_deltas_normalised" if normalised else "agreement_deltas")
        figures += save_figure(plot_agreement_deltas(deltas, name, normalised), stem) if draw else drawn(stem)
    rep = {"tests": tests, "ticks": ticks, "deltas": deltas, "means": means, "figures": figures,
           "verdicts": verdict_lines(analysis["verdicts"], name)}
    if setup is not None and setup.name in paper.SETUP_TABLES:
        rep["paper"] = paper_beside(runs, tests, setup, teachers, dest, draw,
                                    means=analysis["means"].drop(columns="variant"))
        rep["figures"] += rep["paper"]["figures"]
    return rep


def _variant_report(runs: pd.DataFrame, name: str, dest: Path, exclude, extended: bool, draw: bool,
                    analysis: dict) -> dict:
    names = variants(runs)
    merged = {"tests": [], "ticks": [], "deltas": [], "means": {}, "verdicts": []}
    for v in names:
        mine = {k: f[f["variant"] == v] if len(f) else f for k, f in analysis.items()}
        sub = build_report(part(runs, v), f"{name} [{v}]", dest / str(v).replace("%", "pct"), exclude, extended,
                           draw=draw, analysis={k: f.assign(variant=None) for k, f in mine.items()})
        merged["verdicts"] += sub["verdicts"]
        merged["tests"].append(sub["tests"].assign(variant=v))
        merged["ticks"].append(sub["ticks"].rename(index=lambda i: f"{i} [{v}]"))
        merged["deltas"].append(sub["deltas"].assign(variant=v))
        merged["means"].update({(f"{kind} [{v}]", seed): t for (kind, seed), t in sub["means"].items()})
    merged = {**merged, "tests": pd.concat(merged["tests"]), "ticks": pd.concat(merged["ticks"]),
              "deltas": pd.concat(merged["deltas"], ignore_index=True)}
    write_csv(merged["deltas"], dest / "agreement_deltas_by_variant.csv")
    growth = scaling_growth(merged["deltas"], names)
    write_csv(growth, dest / "scaling_growth.csv")
    merged["growth"] = growth
    stem = dest / "agreement_vs_variant"
    merged["figures"] = save_figure(plot_scaling(merged["deltas"], names, name), stem) if draw else drawn(stem)
    return merged


def scaling_growth(deltas: pd.DataFrame, variants: list) -> pd.DataFrame:
    """Per teacher seed and alpha: KD's agreement gain over the best control at the largest variant divided by
    that at the smallest, for teacher-correct and teacher-incorrect agreement (Section 4.2.3's growth ratios)."""
    rows = []
    for (seed, alpha), d in deltas.groupby(["teacher_seed", "alpha"]):
        d = d.set_index("variant")
        lo, hi = d.loc[variants[0]], d.loc[variants[-1]]
        row = {"teacher_seed": seed, "alpha": alpha, "smallest": variants[0], "largest": variants[-1]}
        for q in ("correct", "incorrect"):
            row[f"delta_{q}_smallest"], row[f"delta_{q}_largest"] = lo[f"delta_{q}"], hi[f"delta_{q}"]
            row[f"growth_{q}"] = hi[f"delta_{q}"] / lo[f"delta_{q}"] if lo[f"delta_{q}"] else math.nan
        row["incorrect_over_correct_growth"] = (row["growth_incorrect"] / row["growth_correct"]
                                                if row["growth_correct"] else math.nan)
        rows.append(row)
    return pd.DataFrame(rows)

