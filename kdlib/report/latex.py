"""LaTeX of the study's tables, for a paper unchanged: booktabs rules, the paper's grouped header (Control |
Knowledge Distillation | Random Control Distillation), legible type (no shrink-to-width: wide tables span both
columns of a two-column paper and abbreviate metric names, explained in the caption), and the packages a file
needs named in its first line."""
from __future__ import annotations

import math

import pandas as pd

from ..analysis import DIGITS
from ..conditions import CONDITIONS
from ..metrics import display_name, lower_is_better, table_metrics
from .tables import CROSS, FRAGILE_MARK, TICK, format_sem
from ..analysis.evidence import FRAGILE

def latex_requirements(*packages: str) -> str:
    """The first line of every emitted .tex: the packages it needs in the paper's preamble."""
    return "% requires: " + " ".join(rf"\usepackage{{{p}}}" for p in packages)


def _latex_escape(text: str) -> str:
    return (str(text).replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("%", r"\%")
            .replace("_", r"\_").replace("#", r"\#").replace("α", r"$\alpha$").replace("±", r"$\pm$"))


def _metric_cells(metric: str, short: bool) -> tuple[str, str]:
    """The metric's name with its arrow over the two lines of its row (means, SEMs), so the column stays narrow:
    'Prediction' above 'Disagreement ↓'."""
    arrow = r"$\downarrow$" if lower_is_better(metric) else r"$\uparrow$"
    first, _, last = display_name(metric, short=short).rpartition(" ")
    return (first, f"{last} {arrow}") if first else (f"{last} {arrow}", "")


def _grouped_header(columns: list[tuple[str, str]], first: str) -> list[str]:
    """The paper's two header rows: column groups with \\cmidrule under each, then each column's label."""
    groups: list[list] = []
    for group, _ in columns:
        if groups and groups[-1][0] == group:
            groups[-1][1] += 1
        else:
            groups.append([group, 1])
    top, rules, start = [""], [], 2
    for group, width in groups:
        top.append(group if width == 1 else rf"\multicolumn{{{width}}}{{c}}{{{group}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    second = [first] + [_latex_escape(sub) for _, sub in columns]
    return [" & ".join(top) + r" \\", "".join(rules), " & ".join(second) + r" \\"]


def means_latex(table: pd.DataFrame, caption: str) -> str:
    """booktabs LaTeX of a mean +- SEM table (Table 14 style): grouped header, each metric's means on one line
    and their SEMs in smaller type beneath, best mean per metric in bold (ties on every side). A ``table*``,
    so it spans both columns of a two-column paper; with more than seven conditions metric names are
    abbreviated and explained in the caption."""
    short = table["column"].nunique() > 7
    if short:  # narrow groups: the conditions' abbreviations over their columns
        grouped = {k: c for k, c in CONDITIONS.items() if c.group and c.weighted}  # a group of alpha columns
        abbreviation = {c.group: c.display for c in grouped.values()}
        table = table.assign(group=table["group"].replace(abbreviation))
    columns = list(dict.fromkeys(zip(table["group"], table["sub"])))
    metrics = list(dict.fromkeys(table["metric"]))
    if short:
        used = [c for c in grouped.values() if c.display in set(table["group"])]
        caption += ". " + "; ".join([f"{c.display}: {c.group}" for c in used] +
                                    [f"{display_name(m, short=True)}: {display_name(m)}" for m in metrics])
    caption += r". Mean with $\pm$ 1 SEM beneath; bold: best mean per metric; arrows: preferred direction."
    lines = [latex_requirements("booktabs"), r"\begin{table*}[t]", r"\centering", r"\small",
             rf"\setlength{{\tabcolsep}}{{{3 if short else 4}pt}}", rf"\caption{{{caption}}}",
             r"\begin{tabular}{l" + "c" * len(columns) + "}", r"\toprule",
             *_grouped_header(columns, "Metric"), r"\midrule"]
    cells = {(r["metric"], r["column"]): r for _, r in table.iterrows()}
    order = list(dict.fromkeys(table["column"]))
    for i, metric in enumerate(metrics):
        means, sems = [], []
        for col in order:
            r = cells[(metric, col)]
            mean = f"{r['mean']:.{DIGITS}f}"
            means.append(rf"\textbf{{{mean}}}" if r["best"] else mean)
            sems.append("" if math.isnan(r["sem"]) else rf"{{\scriptsize {_latex_sem(r['sem'])}}}")
        above, below = _metric_cells(metric, short)
        lines.append(f"{above} & " + " & ".join(means) + r" \\")
        lines.append(f"{below} & " + " & ".join(sems) + (r" \\[2pt]" if i < len(metrics) - 1 else r" \\"))
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def _latex_sem(sem: float) -> str:
    text = format_sem(sem)
    return rf"$\pm{{<}}${text[1:]}" if text.startswith("<") else rf"$\pm${text}"


def ticks_latex(ticks: pd.DataFrame, caption: str) -> str:
    """booktabs LaTeX of a tick table that fits one column: abbreviated metric names, explained in the caption."""
    names = {display_name(m): display_name(m, short=True) for m in table_metrics(extended=True)}
    if "Stability" in ticks:  # one column fits: a fragile verdict's mark carries a dagger instead
        ticks = ticks.assign(Supported=[
            "".join(mark + (FRAGILE_MARK if value.endswith(FRAGILE_MARK) else "")
                    for mark, value in zip(marks, stabilities.split(" ")))
            for marks, stabilities in zip(ticks["Supported"], ticks["Stability"])]).drop(columns="Stability")
        fragility = (r"; \dag: a fragile verdict (fewer than " f"{FRAGILE:.0%}".replace("%", r"\%") +
                     " of bootstrap resamples of the student seeds give it)")
    else:
        fragility = ""
    header = [names.get(c, "Sup." if c == "Supported" else c) for c in ticks.columns]
    caption += (". " + "; ".join(f"{names[c]}: {c}" for c in ticks.columns if c in names) +
                r". \ding{51}: KD significantly more teacher-like (or better) than both controls (BH-FDR); "
                r"\ding{55}: not; one mark per teacher seed. Sup.: transfer supported (M: marginal)")
    caption += fragility
    body = ticks.map(lambda cell: cell.replace(TICK, r"\ding{51}").replace(CROSS, r"\ding{55}")
                     .replace(FRAGILE_MARK, r"\textsuperscript{\dag}"))
    lines = [latex_requirements("booktabs", "pifont"), r"\begin{table}[t]", r"\centering", r"\small",
             r"\setlength{\tabcolsep}{4pt}", rf"\caption{{{caption}}}",
             r"\begin{tabular}{l" + "c" * len(body.columns) + "}", r"\toprule",
             " & " + " & ".join(header) + r" \\", r"\midrule"]
    lines += [f"{_latex_escape(idx)} & " + " & ".join(body.loc[idx]) + r" \\" for idx in body.index]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
