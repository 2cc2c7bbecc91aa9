"""Paper-style artefacts from a setup's runs table: mean +- SEM tables, tick tables, agreement-delta charts.

Tables are written as CSV and LaTeX that goes into a paper unchanged: booktabs rules, the paper's grouped
header (Control | Knowledge Distillation | Random Control Distillation), legible type (no shrink-to-width: wide
tables span both columns of a two-column paper and abbreviate metric names, explained in the caption), and the
packages a file needs named in its first line. Figures are vector PDF (TrueType fonts, which venues accept,
never Type 3) and PNG, built with matplotlib's object API (no pyplot state), in one colour scheme: blue for
teacher-correct, red for teacher-incorrect agreement, everywhere (study, audit, summary).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from . import paper
from .conditions import CONDITIONS, STUDENT_CONDITIONS, label
from .metrics import display_name, lower_is_better, table_metrics
from .stats import agreement_deltas, transfer_tests
from .store import atomic_write, write_csv, write_text

TICK, CROSS = "\u2713", "\u2717"
#: The study's colours: teacher-correct (positive transfer) and teacher-incorrect (negative transfer).
COLOURS = {"correct": "#1f77b4", "incorrect": "#d62728"}
DIGITS = 3  # decimals of means and SEMs in tables, as the paper prints them
GROUPS = {"siddo": "Control", "kd": "Knowledge Distillation", "rcd": "Random Control Distillation",
          "ls": "Label Smoothing"}


def table_columns(runs: pd.DataFrame) -> list[tuple[str, float | None]]:
    """Table columns in the paper's order: SIDDO, KD alphas, RCD alphas, LS alphas."""
    cols = []
    for cond in STUDENT_CONDITIONS:
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
                         "group": GROUPS.get(cond, CONDITIONS[cond].display),
                         "sub": CONDITIONS[cond].display if alpha is None else f"{alpha:g}", "mean": float(np.mean(x)),
                         "sem": float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan,
                         "n": len(x)})
    return mark_best(pd.DataFrame(rows))


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


# ----------------------------------------------------------------------------- LaTeX

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
        abbreviation = {v: CONDITIONS[k].display for k, v in GROUPS.items() if k != "siddo"}
        table = table.assign(group=table["group"].replace(abbreviation))
    columns = list(dict.fromkeys(zip(table["group"], table["sub"])))
    metrics = list(dict.fromkeys(table["metric"]))
    if short:
        used = [k for k in GROUPS if k != "siddo" and CONDITIONS[k].display in set(table["group"])]
        caption += ". " + "; ".join([f"{CONDITIONS[k].display}: {GROUPS[k]}" for k in used] +
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


def tick_marks(ticked: pd.Series, seeds, missing: str = CROSS) -> str:
    """One mark per teacher seed of ``seeds``: a tick or cross from ``ticked`` (indexed by teacher seed), and
    ``missing`` for a seed it lacks."""
    return "".join((TICK if ticked[s] else CROSS) if s in ticked.index else missing for s in seeds)


def tick_table(tests: pd.DataFrame) -> pd.DataFrame:
    """Table 15 style: rows 'KD alpha', columns metrics, one tick/cross per teacher seed (sorted)."""
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
        rows[f"KD {alpha:g}"] = row
    return pd.DataFrame(rows).T


def ticks_latex(ticks: pd.DataFrame, caption: str) -> str:
    """booktabs LaTeX of a tick table that fits one column: abbreviated metric names, explained in the caption."""
    names = {display_name(m): display_name(m, short=True) for m in table_metrics(extended=True)}
    header = [names.get(c, "Sup." if c == "Supported" else c) for c in ticks.columns]
    caption += (". " + "; ".join(f"{names[c]}: {c}" for c in ticks.columns if c in names) +
                r". \ding{51}: KD significantly more teacher-like (or better) than both controls (BH-FDR); "
                r"\ding{55}: not; one mark per teacher seed. Sup.: transfer supported (M: marginal)")
    body = ticks.map(lambda cell: cell.replace(TICK, r"\ding{51}").replace(CROSS, r"\ding{55}"))
    lines = [latex_requirements("booktabs", "pifont"), r"\begin{table}[t]", r"\centering", r"\small",
             r"\setlength{\tabcolsep}{4pt}", rf"\caption{{{caption}}}",
             r"\begin{tabular}{l" + "c" * len(body.columns) + "}", r"\toprule",
             " & " + " & ".join(header) + r" \\", r"\midrule"]
    lines += [f"{_latex_escape(idx)} & " + " & ".join(body.loc[idx]) + r" \\" for idx in body.index]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figures

#: Every figure's type: TrueType (Type 42) fonts in PDF and PS, small print sizes for a paper's column.
STYLE = {"pdf.fonttype": 42, "ps.fonttype": 42, "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8,
         "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.frameon": False}


def styled(plot):
    """Decorator: build the figure under :data:`STYLE` (text sizes are fixed when artists are made)."""
    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return plot(*args, **kwargs)
    return wrapper


@styled
def new_figure(width: float, height: float) -> Figure:
    """A figure in the study's style, laid out by constrained layout (legends outside never overlap)."""
    return Figure(figsize=(width, height), layout="constrained")


@styled
def save_figure(fig, stem: Path) -> list[Path]:
    """Save ``fig`` atomically as vector PDF (TrueType fonts) and 200-dpi PNG next to each other."""
    stem = Path(stem)
    paths = [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    for path in paths:
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix[1:], dpi=200, bbox_inches="tight"))
    return paths


def drawn(stem: Path) -> list[Path]:
    """The files :func:`save_figure` wrote for ``stem`` earlier (a report that does not draw again)."""
    return [p for p in (Path(stem).with_suffix(".pdf"), Path(stem).with_suffix(".png")) if p.exists()]


def _control_name(control: str) -> str:
    cond, _, alpha = str(control).partition(" ")
    return label(cond, float(alpha) if alpha else None) if cond in CONDITIONS else str(control)


@styled
def plot_agreement_deltas(deltas: pd.DataFrame, title: str = "", normalised: bool = False):
    """Figure 7 style: per teacher seed, bars of Δ correct (blue) and Δ incorrect (red) agreement per alpha,
    against the best control of each quantity (named under each bar group), with error bars of ±1 SEM over
    the student seeds (normalised: ±1 bootstrap SE of the ratio of means). The legend sits below the panels."""
    seeds = sorted(deltas["teacher_seed"].unique())
    fig = new_figure(2.6 * len(seeds) + 0.4, 2.6)
    axes = fig.subplots(1, len(seeds), squeeze=False, sharey=True)
    suffix = "_normalised" if normalised else ""
    for ax, seed in zip(axes[0], seeds):
        d = deltas[deltas["teacher_seed"] == seed].sort_values("alpha")
        x = np.arange(len(d))
        for offset, q in ((-0.2, "correct"), (0.2, "incorrect")):
            ax.bar(x + offset, d[f"delta_{q}{suffix}"], 0.4, yerr=d[f"delta_{q}{suffix}_sem"].fillna(0),
                   color=COLOURS[q], capsize=2, error_kw={"lw": 0.8}, label=f"Δ teacher-{q} agreement")
        ax.axhline(0, color="black", lw=0.6)
        controls = [f"{a:g}\nvs {_control_name(c)}" + ("" if c == i else f"\n/ {_control_name(i)}")
                    for a, c, i in zip(d["alpha"], d["control_correct"], d["control_incorrect"])]
        ax.set_xticks(x, controls)
        ax.set_xlabel("α (best control: correct / incorrect)")
        ax.set_title(f"teacher seed {seed}" if len(seeds) > 1 or not title else f"{title} (teacher seed {seed})")
    n = int(deltas[["n_correct", "n_incorrect"]].min().min()) if "n_correct" in deltas else None
    spread = "±1 bootstrap SE" if normalised else "±1 SEM"
    axes[0][0].set_ylabel(("Δ agreement / control headroom" if normalised else "Δ agreement vs best control")
                          + (f"\n({spread} over {n} seeds)" if n else ""))
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
    if title and len(seeds) > 1:
        fig.suptitle(title, fontsize=9)
    return fig


def verdict_lines(tests: pd.DataFrame, deltas: pd.DataFrame, name: str) -> list[str]:
    """One line per teacher seed and alpha: the transfer verdict and the agreement deltas (for terminals)."""
    lines = []
    for (seed, alpha), g in tests.groupby(["teacher_seed", "alpha"]):
        verdict = ("marginal" if g["marginal"].iloc[0] else "supported") if g["supported"].iloc[0] else "not supported"
        d = deltas[(deltas["teacher_seed"] == seed) & np.isclose(deltas["alpha"], alpha)]
        text = f"{name}, KD {alpha:g}, teacher seed {seed}: transfer {verdict}"
        if len(d):
            d = d.iloc[0]
            text += (f"; Δcorrect {d['delta_correct']:+.3f}, Δincorrect {d['delta_incorrect']:+.3f} "
                     f"({'negatively asymmetric' if d['negative_asymmetry'] else 'not negatively asymmetric'})")
        lines.append(text)
    return lines


def build_report(runs: pd.DataFrame, name: str, dest: Path, exclude=(), extended: bool = True, setup=None,
                 teachers: pd.DataFrame | None = None, draw: bool = True) -> dict:
    """Write every artefact of one setup's runs into ``dest``; returns the computed frames, paths and verdict
    lines. Given the ``setup`` (and its ``teachers`` table), a setup the paper reports also gets the paper's
    numbers beside ours (:func:`paper_beside`). ``draw=False`` keeps the figures already in ``dest`` (drawn by
    an earlier report of the same runs) instead of drawing them again.

    A setup with student variants (a ``variant`` column, e.g. widths) gets one sub-report per variant in
    ``dest/<variant>/`` plus the scaling view across variants (Figure 11 style)."""
    if "variant" in runs.columns and runs["variant"].notna().any():
        return _variant_report(runs, name, Path(dest), exclude, extended, draw)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tests = transfer_tests(runs, on_missing="drop")
    write_csv(tests, dest / "tests.csv")
    ticks = tick_table(tests)
    write_csv(ticks, dest / "ticks.csv", index=True)
    write_text(dest / "ticks.tex", ticks_latex(ticks, f"{_latex_escape(name)}: significance of KD against SIDDO "
                                                      f"and RCD"))
    deltas = agreement_deltas(runs, exclude=exclude)
    write_csv(deltas, dest / "agreement_deltas.csv")
    means = {}
    for seed in sorted(runs["teacher_seed"].unique()):
        for kind, metrics in (("means", table_metrics()), ("extended", table_metrics(extended=True))):
            if kind == "extended" and not extended:
                continue
            table = mean_sem_table(runs, seed, metrics)
            write_csv(wide_means(table), dest / f"{kind}_teacher{seed}.csv", index=True)
            n = int(table["n"].max())
            write_text(dest / f"{kind}_teacher{seed}.tex", means_latex(
                table, f"{_latex_escape(name)}, teacher seed {seed}: {n} student seeds per condition"))
            means[(kind, seed)] = table
    figures = []
    for normalised in (False, True):
        stem = dest / ("agreement_deltas_normalised" if normalised else "agreement_deltas")
        figures += save_figure(plot_agreement_deltas(deltas, name, normalised), stem) if draw else drawn(stem)
    rep = {"tests": tests, "ticks": ticks, "deltas": deltas, "means": means, "figures": figures,
           "verdicts": verdict_lines(tests, deltas, name)}
    if setup is not None and setup.name in paper.SETUP_TABLES:
        rep["paper"] = paper_beside(runs, tests, setup, teachers, dest, draw)
        rep["figures"] += rep["paper"]["figures"]
    return rep


def paper_beside(runs: pd.DataFrame, tests: pd.DataFrame, setup, teachers: pd.DataFrame | None, dest: Path,
                 draw: bool = True) -> dict:
    """Our numbers beside the paper's, teacher seed by teacher seed: means (``vs_paper_teacher<seed>.csv``),
    ticks (``ticks_vs_paper.csv``), teachers (``teachers_vs_paper.csv``) and one scatter of our means against
    the paper's (``vs_paper.pdf/png``). Outside the ``paper`` profile the comparison is labelled as a
    different scale."""
    scale = "" if setup.profile == "paper" else f" (ours: the {setup.profile} profile, a different scale)"
    paper_means = paper.means_for(setup.name, setup.temperature)
    out = {"means": {}, "wide": {}, "scale": scale, "figures": []}
    for seed in sorted(set(runs["teacher_seed"]) & set(paper_means["teacher_seed"])):
        ours = mean_sem_table(runs, seed, [m for m in table_metrics(extended=True) if m in runs])
        theirs = paper_means[paper_means["teacher_seed"] == seed]
        both = ours.merge(theirs[["metric", "column", "mean", "sem", "table"]], on=["metric", "column"],
                          suffixes=("", "_paper"))
        both["ours"] = [format_mean_sem(m, s) for m, s in zip(both["mean"], both["sem"])]
        both["paper"] = [format_mean_sem(m, s) for m, s in zip(both["mean_paper"], both["sem_paper"])]
        wide = both.pivot(index="metric", columns="column", values=["ours", "paper"]).swaplevel(axis=1)
        order = [c for c in dict.fromkeys(both["column"])]
        wide = wide[[(c, side) for c in order for side in ("ours", "paper")]]
        wide = wide.loc[[m for m in dict.fromkeys(both["metric"])]]
        wide.index = [display_name(m, arrow=True) for m in wide.index]
        write_csv(wide, dest / f"vs_paper_teacher{seed}.csv", index=True)
        out["means"][seed], out["wide"][seed] = both, wide
    p_ticks = paper.ticks_for(setup.name, setup.temperature,
                              int(setup.feature_layer.rsplit(".", 1)[-1]) if setup.feature_layer else None)
    if len(p_ticks):
        rows, seeds = {}, sorted(set(tests["teacher_seed"]) | set(p_ticks["teacher_seed"]))  # '–': not run
        for alpha, g in tests.groupby("alpha"):
            row = {}
            for metric, m in g.groupby("metric", sort=False):
                theirs = p_ticks[np.isclose(p_ticks["alpha"], alpha) & (p_ticks["metric"] == metric)]
                theirs = tick_marks(theirs.set_index("teacher_seed")["tick"], seeds, "–") if len(theirs) else "n/a"
                row[display_name(metric)] = f"{tick_marks(m.set_index('teacher_seed')['tick'], seeds, '–')} " \
                                            f"(paper {theirs})"
            rows[f"KD {alpha:g}"] = row
        out["ticks"] = pd.DataFrame(rows).T
        write_csv(out["ticks"], dest / "ticks_vs_paper.csv", index=True)
    p_teachers = paper.teachers_for(setup.name)
    if teachers is not None and len(teachers) and len(p_teachers):
        cols = ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]
        out["teachers"] = teachers[["teacher_seed", *cols]].merge(
            p_teachers[["teacher_seed", *cols, "table"]], on="teacher_seed", how="outer", suffixes=("", "_paper"))
        write_csv(out["teachers"], dest / "teachers_vs_paper.csv")
    if out["means"]:
        out["figures"] = (save_figure(plot_vs_paper(out["means"], setup.name + scale), dest / "vs_paper") if draw
                          else drawn(dest / "vs_paper"))
    return out


def overview(collected: list[tuple[str, str, pd.DataFrame]]) -> pd.DataFrame:
    """One row per (setup, profile, teacher seed, alpha) across setups: the transfer verdict, the agreement deltas
    against the best control (± 1 SEM) and their shares of the control's headroom."""
    rows = []
    for name, prof, runs in collected:
        if runs.empty or not (runs["condition"] == "kd").any():
            continue
        parts = ([(f"{name} [{v}]", runs[runs["variant"] == v].drop(columns="variant"))
                  for v in sorted(runs["variant"].dropna().unique(), key=_variant_key)]
                 if "variant" in runs and runs["variant"].notna().any() else [(name, runs)])
        for label_, part in parts:
            tests = transfer_tests(part, on_missing="drop").groupby(["teacher_seed", "alpha"]).first()
            for _, d in agreement_deltas(part).iterrows():
                t = tests.loc[(d["teacher_seed"], d["alpha"])]
                rows.append({"setup": label_, "profile": prof, "teacher seed": int(d["teacher_seed"]),
                             "α": f"{d['alpha']:g}",
                             "verdict": ("marginal" if t["marginal"] else "supported") if t["supported"]
                             else "not supported",
                             "Δ correct": format_mean_sem(d["delta_correct"], d["delta_correct_sem"]),
                             "Δ incorrect": format_mean_sem(d["delta_incorrect"], d["delta_incorrect_sem"]),
                             "Δ correct / headroom": f"{d['delta_correct_normalised']:.3f}",
                             "Δ incorrect / headroom": f"{d['delta_incorrect_normalised']:.3f}",
                             "negative asymmetry": "yes" if d["negative_asymmetry"] else "no"})
    return pd.DataFrame(rows)


@styled
def plot_vs_paper(means: dict, title: str):
    """Our means against the paper's, one point per condition x metric (colour: condition, marker: metric),
    with the identity line: points on it reproduce the paper's value. One panel per teacher seed."""
    seeds = sorted(means)
    fig = new_figure(2.6 * len(seeds) + 1.6, 2.8)
    axes = fig.subplots(1, len(seeds), squeeze=False)
    markers = dict(zip(table_metrics(extended=True), "osD^v<>p"))
    columns = list(dict.fromkeys(c for seed in seeds for c in means[seed]["column"]))
    cmap = matplotlib.colormaps["tab10"]
    colours = {c: cmap(i % 10) for i, c in enumerate(columns)}
    for ax, seed in zip(axes[0], seeds):
        both = means[seed].dropna(subset=["mean", "mean_paper"])
        for _, r in both.iterrows():
            ax.scatter(r["mean_paper"], r["mean"], s=14, marker=markers.get(r["metric"], "o"),
                       color=colours[r["column"]], edgecolors="none")
        if len(both):
            lo = min(both["mean"].min(), both["mean_paper"].min())
            hi = max(both["mean"].max(), both["mean_paper"].max())
            ax.plot([lo, hi], [lo, hi], color="black", lw=0.6, ls="--", zorder=0)
        ax.set_xlabel("paper's mean")
        ax.set_title(f"teacher seed {seed}")
    axes[0][0].set_ylabel("our mean")
    handles = [Line2D([], [], ls="", marker="o", color=colours[c], label=c) for c in columns]
    handles += [Line2D([], [], ls="", marker=mk, color="grey", label=display_name(m, short=True))
                for m, mk in markers.items() if any(m in set(means[s]["metric"]) for s in seeds)]
    fig.legend(handles=handles, loc="outside right center", fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


@styled
def plot_curves(curves: pd.DataFrame, title: str = ""):
    """Train-loss curves: teachers and each student condition (mean over student seeds), one panel per teacher
    seed, the legend to the right of the panels."""
    seeds = sorted(curves["teacher_seed"].unique())
    fig = new_figure(3.2 * len(seeds) + 1.3, 2.6)
    axes = fig.subplots(1, len(seeds), squeeze=False, sharey=True)
    for ax, seed in zip(axes[0], seeds):
        c = curves[curves["teacher_seed"] == seed]
        for (cond, alpha), g in c.groupby(["condition", c["alpha"].fillna(-1)], sort=True):
            m = g.groupby("step")["loss"].mean()
            ax.plot(m.index, m.values, label=label(cond, None if alpha == -1 else alpha),
                    lw=2.0 if cond == "teacher" else 0.9, color="black" if cond == "teacher" else None)
        ax.set_xlabel("step")
        ax.set_title(f"teacher seed {seed}" if len(seeds) > 1 or not title else f"{title} (teacher seed {seed})")
    axes[0][0].set_ylabel("train loss (objective; mean over seeds)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right center")
    if title and len(seeds) > 1:
        fig.suptitle(title, fontsize=9)
    return fig


def find_collected(out) -> list[tuple[str, str, Path]]:
    """Every (setup, profile, runs-table stem) collected under ``out``, sorted."""
    found = set()
    for path in Path(out).glob("*/*/runs.*"):
        if path.suffix in (".csv", ".parquet"):
            found.add((path.parent.parent.name, path.parent.name, path.with_suffix("")))
    return sorted(found)


def stratified(indices, labels, n: int = 12) -> list[int]:
    """Up to ``n`` of ``indices`` spread over the true classes: one per class in class order, then a second
    per class, and so on (so a grid shows the range of classes, not the most frequent one)."""
    by_class: dict[int, list[int]] = {}
    for i in map(int, indices):
        by_class.setdefault(int(labels[i]), []).append(i)
    picked, depth = [], 0
    while len(picked) < n and any(len(v) > depth for v in by_class.values()):
        picked += [v[depth] for _, v in sorted(by_class.items()) if len(v) > depth][:n - len(picked)]
        depth += 1
    return picked


@styled
def plot_examples(x, captions: list[str], key: str, spectrogram: bool = False, columns: int = 6,
                  seconds: float | None = None):
    """A keyed grid of examples: uint8/float images ``[n, C, H, W]`` or log-mel spectrograms ``[n, 1, mels,
    frames]`` (with time and mel axes and one colour bar). ``captions`` label the panels; ``key`` (printed
    under the grid) says what a caption means."""
    n = len(captions)
    columns = max(1, min(columns, n))
    rows = max(1, math.ceil(n / columns))
    fig = Figure(figsize=(1.9 * columns + (0.6 if spectrogram else 0), 1.9 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        a = np.asarray(x[i], dtype=float)
        if spectrogram:
            extent = (0, seconds or a.shape[-1], 0, a.shape[-2])
            image = ax.imshow(a[0], origin="lower", aspect="auto", cmap="magma", extent=extent)
            ax.set_xlabel("time (s)" if seconds else "frame", fontsize=7)
            ax.set_ylabel("mel bin", fontsize=7)
            ax.tick_params(labelsize=6)
        else:
            ax.axis("off")
            a = a.transpose(1, 2, 0)
            a = (a - a.min()) / (a.max() - a.min() + 1e-12)
            ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray" if a.shape[-1] == 1 else None)
        ax.set_title(captions[i], fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="log-mel power")
    fig.supxlabel(key, fontsize=7)
    return fig


def _variant_key(label: str):
    try:
        return (0, float(str(label).rstrip("%")), str(label))
    except ValueError:
        return (1, 0.0, str(label))


def _variant_report(runs: pd.DataFrame, name: str, dest: Path, exclude, extended: bool, draw: bool) -> dict:
    variants = sorted(runs["variant"].dropna().unique(), key=_variant_key)
    merged = {"tests": [], "ticks": [], "deltas": [], "means": {}, "verdicts": []}
    for v in variants:
        sub = build_report(runs[runs["variant"] == v].drop(columns="variant"), f"{name} [{v}]",
                           dest / str(v).replace("%", "pct"), exclude, extended, draw=draw)
        merged["verdicts"] += sub["verdicts"]
        merged["tests"].append(sub["tests"].assign(variant=v))
        merged["ticks"].append(sub["ticks"].rename(index=lambda i: f"{i} [{v}]"))
        merged["deltas"].append(sub["deltas"].assign(variant=v))
        merged["means"].update({(f"{kind} [{v}]", seed): t for (kind, seed), t in sub["means"].items()})
    merged = {**merged, "tests": pd.concat(merged["tests"]), "ticks": pd.concat(merged["ticks"]),
              "deltas": pd.concat(merged["deltas"], ignore_index=True)}
    write_csv(merged["deltas"], dest / "agreement_deltas_by_variant.csv")
    growth = scaling_growth(merged["deltas"], variants)
    write_csv(growth, dest / "scaling_growth.csv")
    merged["growth"] = growth
    stem = dest / "agreement_vs_variant"
    merged["figures"] = save_figure(plot_scaling(merged["deltas"], variants, name), stem) if draw else drawn(stem)
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


@styled
def plot_scaling(deltas: pd.DataFrame, variants: list, title: str = ""):
    """Figure 11 style: delta correct and delta incorrect agreement (vs best control) across student variants,
    one line per alpha with ±1 SEM bands; one row of panels per teacher seed, the legend below."""
    seeds = sorted(deltas["teacher_seed"].unique())
    fig = new_figure(6.0, 2.4 * len(seeds) + 0.4)
    axes = fig.subplots(len(seeds), 2, squeeze=False, sharey="row")
    x = np.arange(len(variants))
    for row, seed in zip(axes, seeds):
        d = deltas[deltas["teacher_seed"] == seed]
        for ax, q in zip(row, ("correct", "incorrect")):
            for alpha, g in d.groupby("alpha"):
                g = g.set_index("variant").loc[variants]
                mean, sem = g[f"delta_{q}"].to_numpy(float), g[f"delta_{q}_sem"].fillna(0).to_numpy(float)
                ax.plot(x, mean, marker="o", ms=3, label=f"α = {alpha:g}")
                ax.fill_between(x, mean - sem, mean + sem, alpha=0.25)
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xticks(x, [str(v) for v in variants])
            ax.set_title(f"Δ teacher-{q} agreement (teacher seed {seed})")
            ax.set_xlabel("student variant")
        row[0].set_ylabel("Δ agreement vs best control (±1 SEM)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
