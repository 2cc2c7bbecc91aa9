"""Tables of the study for notebooks and terminals: mean +- SEM cells, the bold-best means, agreement deltas, the
tick-mark significance table (Table 15 style) with its legend and the cross-setup overview, all from a setup's
analysis (:mod:`kdlib.analysis`); and how a notebook shows any of them (:func:`readable`)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..analysis import DIGITS
from ..analysis.evidence import FRAGILE
from ..analysis.stats import Rule
from ..conditions import CONDITIONS
from ..metrics import display_name

TICK, CROSS = "\u2713", "\u2717"
MARGINAL_MARK = "M"  # a supported verdict whose improvement is marginal
MISSING_MARK = "–"  # no value: a teacher seed not run, a verdict without a stability


def format_sem(sem: float) -> str:
    """An SEM at the table's precision, '<0.001' where it is positive but rounds to zero."""
    if 0 < sem < 0.5 * 10 ** -DIGITS:
        return f"<{10 ** -DIGITS:.{DIGITS}f}"
    return f"{sem:.{DIGITS}f}"


def format_mean_sem(mean: float, sem: float | None, keep_zero: bool = False) -> str:
    """'mean ± sem' at the tables' precision; just the mean where there is no spread (an SEM of None, NaN or 0).
    ``keep_zero``: an SEM of 0 still prints '± 0.000', as the written CSV tables have it and as the paper reports
    an SEM below its precision."""
    if sem is None or math.isnan(sem) or (sem == 0 and not keep_zero):
        return f"{mean:.{DIGITS}f}"
    return f"{mean:.{DIGITS}f} ± {format_sem(sem)}"


def wide_means(table: pd.DataFrame, keep_zero: bool = False) -> pd.DataFrame:
    """Metrics as rows (with preferred-direction arrows), conditions as columns, 'mean ± sem' cells
    (``keep_zero``: :func:`format_mean_sem`'s)."""
    order = list(dict.fromkeys(table["column"]))
    wide = table.assign(cell=[format_mean_sem(m, s, keep_zero) for m, s in zip(table["mean"], table["sem"])]).pivot(
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
    return _shown(wide.style.apply(lambda _: np.where(best, "font-weight: bold", ""), axis=None))


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
    return _shown(pd.DataFrame(rows).style)


def tick_marks(ticked: pd.Series, seeds, missing: str = CROSS) -> str:
    """One mark per teacher seed of ``seeds``: a tick or cross from ``ticked`` (indexed by teacher seed), and
    ``missing`` for a seed it lacks."""
    return "".join((TICK if ticked[s] else CROSS) if s in ticked.index else missing for s in seeds)


FRAGILE_MARK = "†"


def stability_mark(value) -> str:
    """A verdict's stability as a table shows it: two decimals, with :data:`FRAGILE_MARK` when it is fragile."""
    if pd.isna(value):
        return MISSING_MARK
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
        row["Supported"] = "".join((MARGINAL_MARK if verdicts.loc[s, "marginal"] else TICK)
                                   if verdicts.loc[s, "supported"] else CROSS for s in seeds)
        if "verdict_stability" in verdicts:
            row["Stability"] = " ".join(stability_mark(verdicts.loc[s, "verdict_stability"]) for s in seeds)
        rows[f"KD {alpha:g}"] = row
    return pd.DataFrame(rows).T


def tick_legend(rule: Rule | None = None) -> str:
    """One Markdown paragraph saying what a tick table's marks mean (:func:`tick_table`) under the setup's verdict
    ``rule`` (:class:`kdlib.analysis.stats.Rule`; default: its defaults): the test, the FDR family and level, the
    majority, the marginal threshold."""
    rule = Rule() if rule is None else rule
    q = rule.alpha_level
    family = ("every functional metric and control of one teacher seed and α" if rule.fdr_family == "setting"
              else "each control's functional metrics")
    majority = "more than half" if rule.majority == "strict" else "at least half"
    return (f"One mark per teacher seed, in seed order. In a metric's column, {TICK}: KD is significantly better "
            f"than every control (SIDDO, and RCD at the same α) in the metric's preferred direction (a paired "
            f"one-sided Wilcoxon signed-rank test over the student seeds; the functional metrics' p-values "
            f"Benjamini-Hochberg adjusted over {family}, FDR q = {q:g}; accuracy and loss at {q:g} unadjusted); "
            f"{CROSS}: not significant against at least one control. Supported: {TICK} transfer supported "
            f"({majority} of the functional metrics ticked), {MARGINAL_MARK} marginal (supported, but KD's mean "
            f"improvement over the better control, across the functional metrics, is below "
            f"{rule.marginal_threshold:g}), {CROSS} not supported. Stability: the share of bootstrap resamples of "
            f"the paired student seeds that give the same verdict; {FRAGILE_MARK}: fragile (below {FRAGILE:g}). "
            f"{MISSING_MARK}: no value (a teacher seed not run, a verdict without a stability).")


def overview(analyses: list[tuple[str, str, dict]]) -> pd.DataFrame:
    """One row per (setup, profile, variant, teacher seed, alpha) across setups, from their analyses: the transfer
    verdict (and its stability, fragile ones marked), the agreement deltas against the best control (± 1 SEM) and
    their shares of the control's headroom."""
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


_STUDENT_CONDITIONS = {c.name: c.display for c in CONDITIONS.values() if c.student}
#: Words of snake_case column names as a reader says them: conditions as the tables name them.
WORDS = {"alpha": "α", "delta": "Δ", "adj": "adjusted", "sig": "significant", "sem": "SEM", "mde80": "MDE80",
         **_STUDENT_CONDITIONS}


def human(name: str) -> str:
    """A column name as a reader says it: snake_case as words ('teacher_seed' -> 'teacher seed', 'p_adj_siddo' ->
    'p adjusted vs SIDDO', 'train_loss_paper' -> 'train loss (paper)'); a name with a space is already human."""
    if " " in name:
        return name
    words = name.split("_")
    said = []
    for i, word in enumerate(words):
        if i and word in _STUDENT_CONDITIONS and words[i - 1] not in _STUDENT_CONDITIONS:
            said.append("vs")
        said.append(WORDS.get(word, word))
    if len(said) > 1 and said[-1] == "paper":
        said[-1] = "(paper)"
    return " ".join(said)


def readable(table: pd.DataFrame, precision: int = 4):
    """``table`` as a notebook shows it (a Styler): :func:`human` column names, integer-valued columns without
    decimals, other numbers at ``precision``, '–' for a missing value, and the index hidden where it only numbers
    the rows (kept where it labels them: metrics, 'KD 0.5')."""
    whole = [c for c in table.columns if _integral(table[c])]
    styler = table.style.format(precision=precision, na_rep=MISSING_MARK)
    return _shown(styler.format("{:.0f}", subset=whole, na_rep=MISSING_MARK))


def _integral(column: pd.Series) -> bool:
    values = column.dropna()
    return (pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column) and len(values) > 0
            and bool((values == values.round()).all()))


def _shown(styler):
    """A Styler with :func:`human` column names (their level names hidden) and no index where it only numbers the
    rows (unnamed integers, as a filtered or concatenated frame keeps them)."""
    styler = styler.format_index(lambda c: human(str(c)), axis="columns").hide(axis="columns", names=True)
    index = styler.data.index
    numbers = index.nlevels == 1 and index.name is None and pd.api.types.is_integer_dtype(index)
    return styler.hide(axis="index") if numbers else styler
