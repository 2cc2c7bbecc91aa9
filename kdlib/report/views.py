"""The paper's cross-setup experiment views (Sections 4.4-4.5): KD across temperatures (Table 27, Figure 14)
and the adversarial "tha" teacher (Tables 30 and 91, Figure 15). Each reads the collected tables of named
setups and writes its artefacts next to the per-setup reports of :mod:`kdlib.report`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..conditions import label
from ..analysis import mark_best, mean_sem_table, table_columns
from .figures import COLOURS, new_figure, save_figure, styled
from .latex import means_latex
from ..analysis.stats import agreement_deltas, sem, transfer_tests
from .tables import format_mean_sem, tick_table, wide_means
from ..store import write_csv, write_text

def temperature_table(runs_by_temperature: dict[float, pd.DataFrame], teacher_seed=0, metrics=None) -> pd.DataFrame:
    """Table 27 style: SIDDO beside KD at every alpha for each temperature (mean +- SEM, one teacher seed)."""
    parts = []
    for i, (temperature, runs) in enumerate(sorted(runs_by_temperature.items())):
        runs = runs[runs["condition"].isin(["siddo", "kd"] if i == 0 else ["kd"])]
        table = mean_sem_table(runs, teacher_seed, metrics)
        kd = table["condition"] == "kd"
        table["column"] = table["column"].where(~kd, table["column"] + f" T={temperature:g}")
        table["group"] = table["group"].where(~kd, f"KD, T = {temperature:g}")
        parts.append(table)
    return mark_best(pd.concat(parts, ignore_index=True))


def transfer_proportions(deltas: pd.DataFrame) -> pd.DataFrame:
    """Share of KD's agreement gain that is positive (teacher-correct) vs negative (teacher-incorrect) transfer:
    max(delta, 0) of each, normalised to sum 1 (NaN where neither grows)."""
    pos, neg = deltas["delta_correct"].clip(lower=0), deltas["delta_incorrect"].clip(lower=0)
    total = (pos + neg).replace(0, np.nan)
    return deltas.assign(positive_share=pos / total, negative_share=neg / total)


@styled
def plot_transfer_proportions(deltas_by_temperature: dict[float, pd.DataFrame], teacher_seed=0, title: str = ""):
    """Figure 14 style: per temperature, stacked bars of positive (blue) and negative (red) transfer per alpha."""
    temps = sorted(deltas_by_temperature)
    fig = new_figure(2.2 * len(temps) + 0.4, 2.5)
    axes = fig.subplots(1, len(temps), squeeze=False, sharey=True)
    for ax, temperature in zip(axes[0], temps):
        d = transfer_proportions(deltas_by_temperature[temperature])
        d = d[d["teacher_seed"] == teacher_seed].sort_values("alpha")
        x = np.arange(len(d))
        ax.bar(x, d["positive_share"].fillna(0), color=COLOURS["correct"], label="positive (teacher-correct)")
        ax.bar(x, d["negative_share"].fillna(0), bottom=d["positive_share"].fillna(0), color=COLOURS["incorrect"],
               label="negative (teacher-incorrect)")
        ax.set_xticks(x, [f"{a:g}" for a in d["alpha"]])
        ax.set_xlabel("α")
        ax.set_title(f"T = {temperature:g}")
    axes[0][0].set_ylabel("share of KD's agreement gain")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def th_completion_table(runs: pd.DataFrame, teachers: pd.DataFrame, teacher_seed=0,
                        keep_zero: bool = False) -> pd.DataFrame:
    """Table 30 style: greedy completions of clean "th" prompts to "tha" / "the", teacher and mean +- SEM per
    condition (student seeds; ``keep_zero``: :func:`kdlib.report.tables.format_mean_sem`'s)."""
    t = runs[runs["teacher_seed"] == teacher_seed]
    teacher = teachers[teachers["teacher_seed"] == teacher_seed].iloc[0]
    out = {}
    for word, col in (("tha", "tha_count"), ("the", "the_count")):
        row = {"Teacher": f"{teacher[col]:.0f}"}
        for cond, alpha in table_columns(t):
            sel = t[(t["condition"] == cond) & (t["alpha"].isna() if alpha is None else np.isclose(t["alpha"], alpha))]
            x = sel[col].to_numpy(float)
            row[label(cond, alpha)] = format_mean_sem(x.mean(), sem(x), keep_zero)
        out[f'"{word}"'] = row
    return pd.DataFrame(out).T


def char_frequency(text: str, top: int = 9) -> pd.DataFrame:
    """Table 91 style: the most frequent characters of ``text`` and their relative frequency."""
    counts = pd.Series(list(text)).value_counts()
    names = ["Space" if c == " " else "\\n" if c == "\n" else c for c in counts.index[:top]]
    return pd.DataFrame({"character": names, "frequency": (counts.iloc[:top] / len(text)).round(4).to_numpy()})


@styled
def plot_zipf(text: str, title: str = "Zipf's law (characters)"):
    """Figure 15 style: character frequency against rank, log-log."""
    counts = pd.Series(list(text)).value_counts().to_numpy(float)
    fig = new_figure(3.2, 2.4)
    ax = fig.subplots()
    ranks = np.arange(1, len(counts) + 1)
    ax.loglog(ranks, counts / counts.sum(), marker=".", lw=1, color=COLOURS["correct"])
    ax.set_xlabel("rank")
    ax.set_ylabel("relative frequency")
    ax.set_title(title)
    return fig


TEMPERATURE_SETUPS = {1.0: "tinyshakespeare-nanogpt-to-picogpt", 2.0: "tinyshakespeare-nanogpt-to-picogpt-t2",
                      4.0: "tinyshakespeare-nanogpt-to-picogpt-t4"}


def temperature_view(runs_by_temperature: dict[float, pd.DataFrame], dest: Path,
                     analyses: dict[float, dict] | None = None) -> dict:
    """Section 4.4.2's artefacts: the combined KD-at-every-T table per teacher seed (CSV, LaTeX), ticks per
    temperature, and the positive/negative transfer proportions (Figure 14 style). ``analyses``: each
    temperature's stored analysis (:mod:`kdlib.analysis`; computed from its runs when not given)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {"tables": {}, "ticks": {}, "figures": []}
    seeds = sorted(next(iter(runs_by_temperature.values()))["teacher_seed"].unique())
    for seed in seeds:
        table = temperature_table(runs_by_temperature, seed)
        write_csv(wide_means(table, keep_zero=True), dest / f"temperature_teacher{seed}.csv", index=True)
        temps = ", ".join(f"{t:g}" for t in sorted(runs_by_temperature))
        write_text(dest / f"temperature_teacher{seed}.tex",
                   means_latex(table, f"KD at temperatures {temps} beside SIDDO, teacher seed {seed}"))
        out["tables"][seed] = table
    deltas = {}
    for temperature, runs in sorted(runs_by_temperature.items()):
        stored = (analyses or {}).get(temperature)
        tests = stored["tests"].drop(columns="variant") if stored else transfer_tests(runs, on_missing="drop")
        ticks = tick_table(tests)
        write_csv(ticks, dest / f"ticks_T{temperature:g}.csv", index=True)
        out["ticks"][temperature] = ticks
        deltas[temperature] = stored["deltas"].drop(columns="variant") if stored else agreement_deltas(runs)
    proportions = pd.concat([transfer_proportions(d).assign(temperature=t) for t, d in deltas.items()])
    write_csv(proportions, dest / "transfer_proportions.csv")
    out["proportions"] = proportions
    for seed in seeds:
        out["figures"] += save_figure(plot_transfer_proportions(deltas, seed, f"teacher seed {seed}"),
                                      dest / f"transfer_proportions_teacher{seed}")
    return out


def adversarial_view(runs: pd.DataFrame, teachers: pd.DataFrame, text: str | None, dest: Path) -> dict:
    """Section 4.5's artefacts: Table 30 per teacher seed (as written, and as shown: an SEM of 0 left out), and
    (given the text) Table 91 and Figure 15."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {"tables": {}, "figures": []}
    for seed in sorted(runs["teacher_seed"].unique()):
        write_csv(th_completion_table(runs, teachers, seed, keep_zero=True), dest / f"th_completions_teacher{seed}.csv",
                  index=True)
        out["tables"][seed] = th_completion_table(runs, teachers, seed)
    if text is not None:
        out["char_frequency"] = char_frequency(text)
        write_csv(out["char_frequency"], dest / "char_frequency.csv")
        out["figures"] += save_figure(plot_zipf(text), dest / "zipf")
    return out
