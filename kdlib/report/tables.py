"""Tables of the study for notebooks and terminals: mean +- SEM cells, the bold-best means, agreement deltas, the
tick-mark significance table (Table 15 style) and the cross-setup overview, all from a setup's analysis
(:mod:`kdlib.analysis`)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..analysis import DIGITS
from ..analysis.evidence import FRAGILE
from ..metrics import display_name

TICK, CROSS = "\u2713", "\u2717"


def format_sem(sem: float) -> str:
    """An SEM at the table's precision, '<0.001' where it is positive but rounds to zero."""
    if 0 < sem < 0.5 * 10 ** -DIGITS:
        return f"<{10 ** -DIGITS:.{DIGITS}f}"
    return f"{sem:.{DIGITS}f}"


def format_mean_sem(mean: float, sem: float) -> str:
    return f"{mean:.{DIGITS}f}" if math.isnan(sem) else f"{mean:.{DIGITS}f} ± {format_sem(sem)}"


def wide_means(table: pd.DataFrame) -> pd.DataFrame:
    """Metrics as rows (with preferred-direction arrows), conditions as columns, 'mean ± sem' cells."""
    order = list(dict.fromkeys(table["column"]))
    wide = table.assign(cell=[format_mean_sem(m, s) for m, s in zip(table["mean"], table["sem"])]).pivot(
        index="metric", columns="column", values="cell")[order]
    wide = wide.loc[list(dict.fromkeys(table["metric"]))]
    wide.index = [display_name(m, arrow=True) for m in wide.index]
    wide.columns.name = None
    return wide


def style_means(table: pd.DataFrame):
    """:func:`wide_means` for a notebook: best mean per metric in bold (ties on every side)."""
    wide = wide_means(table)
    best = table.pivot(index="metric", columns="column", values="best")
    best = best.loc[list(dict.fromkeys(table["metric"])), list(wide.columns)].to_numpy()
    return wide.style.apply(lambda _: np.where(best, "font-weight: bold", ""), axis=None)


def style_deltas(deltas: pd.DataFrame):
    """Agreement deltas for a notebook: per teacher seed and alpha, each delta ± SEM against its best control."""
    rows = []
    for _, d in deltas.iterrows():
        row = {"teacher seed": int(d["teacher_seed"]), "α": f"{d['alpha']:g}"}
        for q in ("correct", "incorrect"):
            row[f"Δ {q}"] = format_mean_sem(d[f"delta_{q}"], d[f"delta_{q}_sem"])
            row[f"best control ({q})"] = d[f"control_{q}"]
            row[f"Δ {q} / headroom"] = format_mean_sem(d[f"delta_{q}_normalised"], d[f"delta_{q}_normalised_sem"])
        row["negative asymmetry"] = "yes" if d["negative_asymmetry"] else "no"
        rows.append(row)
    return pd.DataFrame(rows).style.hide(axis="index")


def tick_marks(ticked: pd.Series, seeds, missing: str = CROSS) -> str:
    """One mark per teacher seed of ``seeds``: a tick or cross from ``ticked`` (indexed by teacher seed), and
    ``missing`` for a seed it lacks."""
    return "".join((TICK if ticked[s] else CROSS) if s in ticked.index else missing for s in seeds)


FRAGILE_MARK = "†"


def stability_mark(value) -> str:
    """A verdict's stability as a table shows it: two decimals, with :data:`FRAGILE_MARK` when it is fragile."""
    if pd.isna(value):
        return "–"
    return f"{value:.2f}" + (FRAGILE_MARK if value < FRAGILE else "")


def tick_table(tests: pd.DataFrame) -> pd.DataFrame:
    """Table 15 style: rows 'KD alpha', columns metrics, one tick/cross per teacher seed (sorted); with the
    analysis' stabilities, a ``Stability`` column (one per teacher seed, fragile ones marked)."""
    seeds = sorted(tests["teacher_seed"].unique())
    rows = {}
    for alpha in sorted(tests["alpha"].unique()):
        row = {}
        for metric in dict.fromkeys(tests["metric"]):
            sel = tests[(tests["alpha"] == alpha) & (tests["metric"] == metric)].set_index("teacher_seed")
            row[display_name(metric)] = tick_marks(sel["tick"], seeds)
        verdicts = tests[tests["alpha"] == alpha].groupby("teacher_seed").first()
        row["Supported"] = "".join(
            ("M" if verdicts.loc[s, "marginal"] else TICK) if verdicts.loc[s, "supported"] else CROSS for s in seeds)
        if "verdict_stability" in verdicts:
            row["Stability"] = " ".join(stability_mark(verdicts.loc[s, "verdict_stability"]) for s in seeds)
        rows[f"KD {alpha:g}"] = row
    return pd.DataFrame(rows).T


def overview(analyses: list[tuple[str, str, dict]]) -> pd.DataFrame:
    """One row per (setup, profile, variant, teacher seed, alpha) across setups, from their analyses: the transfer
    verdict (and its stability, fragile ones marked), the agreement deltas against the best control (± 1 SEM) and their shares of the control's headroom."""
    rows = []
    for name, prof, analysis in analyses:
        for _, v in analysis["verdicts"].iterrows():
            if "delta_correct" not in v or pd.isna(v["delta_correct"]):
                continue
            variant = v.get("variant")
            rows.append({"setup": name if variant is None or pd.isna(variant) else f"{name} [{variant}]",
                         "profile": prof, "teacher seed": int(v["teacher_seed"]), "α": f"{v['alpha']:g}",
                         "verdict": v["verdict"],
                         **({"stability": stability_mark(v["verdict_stability"])} if "verdict_stability" in v
                            else {}),
                         "Δ correct": format_mean_sem(v["delta_correct"], v["delta_correct_sem"]),
                         "Δ incorrect": format_mean_sem(v["delta_incorrect"], v["delta_incorrect_sem"]),
                         "Δ correct / headroom": f"{v['delta_correct_normalised']:.3f}",
                         "Δ incorrect / headroom": f"{v['delta_incorrect_normalised']:.3f}",
                         "negative asymmetry": "yes" if v["negative_asymmetry"] else "no"})
    return pd.DataFrame(rows)
