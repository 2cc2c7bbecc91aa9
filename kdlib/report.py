"""Paper-style artefacts from a setup's runs table: mean +- SEM tables, tick tables, agreement-delta charts.

Tables are written as CSV and LaTeX (booktabs); figures as vector PDF and PNG. Figures are built with
matplotlib's object API (no pyplot state), so importing this module never changes a notebook's backend.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .metrics import EXTENDED_METRICS, FUNCTIONAL_METRICS, LOWER_IS_BETTER
from .stats import agreement_deltas, transfer_tests

NAMES = {
    "activation_distance": "Activation Distance", "rank_disagreement": "Rank Disagreement",
    "prediction_disagreement": "Prediction Disagreement", "js_divergence": "JS Divergence",
    "variation_of_information": "Information Variation", "procrustes_distance": "Procrustes Distance",
    "prediction_agreement": "Prediction Agreement", "correct_agreement": "Correct Agreement",
    "incorrect_agreement": "Incorrect Agreement", "accuracy": "Accuracy", "loss": "Loss",
}
MAIN_METRICS = FUNCTIONAL_METRICS + ("accuracy", "loss")
EXTENDED_TABLE_METRICS = FUNCTIONAL_METRICS + EXTENDED_METRICS + ("accuracy", "loss")
CONDITION_NAMES = {"siddo": "SIDDO", "kd": "KD", "rcd": "RCD", "ls": "LS"}
TICK, CROSS = "\u2713", "\u2717"


def _columns(runs: pd.DataFrame) -> list[tuple[str, float | None]]:
    """Table columns in the paper's order: SIDDO, KD alphas, RCD alphas, LS alphas."""
    cols = [("siddo", None)] if (runs["condition"] == "siddo").any() else []
    for cond in ("kd", "rcd", "ls"):
        alphas = sorted(runs.loc[runs["condition"] == cond, "alpha"].dropna().unique())
        cols += [(cond, float(a)) for a in alphas]
    return cols


def _label(cond: str, alpha: float | None) -> str:
    return CONDITION_NAMES[cond] if alpha is None else f"{CONDITION_NAMES[cond]} {alpha:g}"


def mean_sem_table(runs: pd.DataFrame, teacher_seed, metrics=MAIN_METRICS) -> pd.DataFrame:
    """Long table (metric, column, mean, sem, n, best) for one teacher seed: Table 14 style."""
    t = runs[runs["teacher_seed"] == teacher_seed]
    rows = []
    for metric in metrics:
        for cond, alpha in _columns(t):
            sel = t[(t["condition"] == cond) & (t["alpha"].isna() if alpha is None else np.isclose(t["alpha"], alpha))]
            x = sel[metric].to_numpy(float)
            rows.append({"metric": metric, "column": _label(cond, alpha), "mean": float(np.mean(x)),
                         "sem": float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan,
                         "n": len(x)})
    df = pd.DataFrame(rows)
    df["best"] = False
    for metric, g in df.groupby("metric"):
        best = g["mean"].idxmin() if LOWER_IS_BETTER[metric] else g["mean"].idxmax()
        df.loc[best, "best"] = True
    return df


def _fmt(mean: float, sem: float) -> str:
    return f"{mean:.3f} ± {sem:.3f}" if not math.isnan(sem) else f"{mean:.3f}"


def wide_means(table: pd.DataFrame) -> pd.DataFrame:
    """Metrics as rows (with preferred-direction arrows), conditions as columns, 'mean ± sem' cells."""
    order = list(dict.fromkeys(table["column"]))
    wide = table.assign(cell=[_fmt(m, s) for m, s in zip(table["mean"], table["sem"])]).pivot(
        index="metric", columns="column", values="cell")[order]
    wide.index = [f"{NAMES[m]} ({'↓' if LOWER_IS_BETTER[m] else '↑'})" for m in wide.index]
    metrics = list(dict.fromkeys(table["metric"]))
    return wide.loc[[f"{NAMES[m]} ({'↓' if LOWER_IS_BETTER[m] else '↑'})" for m in metrics]]


def means_latex(table: pd.DataFrame, caption: str) -> str:
    """booktabs LaTeX of a mean +- SEM table, best mean per metric in bold."""
    order = list(dict.fromkeys(table["column"]))
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", r"\resizebox{\linewidth}{!}{%",
             r"\begin{tabular}{l" + "c" * len(order) + "}", r"\toprule",
             "Metric & " + " & ".join(order) + r" \\", r"\midrule"]
    for metric in dict.fromkeys(table["metric"]):
        arrow = r"$\downarrow$" if LOWER_IS_BETTER[metric] else r"$\uparrow$"
        cells = []
        for col in order:
            r = table[(table["metric"] == metric) & (table["column"] == col)].iloc[0]
            cell = f"{r['mean']:.3f}" + ("" if math.isnan(r["sem"]) else rf" $\pm$ {r['sem']:.3f}")
            cells.append(rf"\textbf{{{cell}}}" if r["best"] else cell)
        lines.append(f"{NAMES[metric]} ({arrow}) & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def tick_table(tests: pd.DataFrame) -> pd.DataFrame:
    """Table 15 style: rows 'KD alpha', columns metrics, one tick/cross per teacher seed (sorted)."""
    seeds = sorted(tests["teacher_seed"].unique())
    rows = {}
    for alpha in sorted(tests["alpha"].unique()):
        row = {}
        for metric in dict.fromkeys(tests["metric"]):
            sel = tests[(tests["alpha"] == alpha) & (tests["metric"] == metric)].set_index("teacher_seed")
            row[NAMES[metric]] = "".join(TICK if s in sel.index and sel.loc[s, "tick"] else CROSS for s in seeds)
        verdicts = tests[tests["alpha"] == alpha].groupby("teacher_seed").first()
        row["Supported"] = "".join(
            ("M" if verdicts.loc[s, "marginal"] else TICK) if verdicts.loc[s, "supported"] else CROSS for s in seeds)
        rows[f"KD {alpha:g}"] = row
    return pd.DataFrame(rows).T


def ticks_latex(ticks: pd.DataFrame, caption: str) -> str:
    body = ticks.map(lambda cell: cell.replace(TICK, r"\cmark").replace(CROSS, r"\xmark"))
    lines = [r"% needs \usepackage{pifont}\newcommand{\cmark}{\ding{51}}\newcommand{\xmark}{\ding{55}}",
             r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}",
             r"\begin{tabular}{l" + "c" * len(body.columns) + "}", r"\toprule",
             " & " + " & ".join(body.columns) + r" \\", r"\midrule"]
    lines += [f"{idx} & " + " & ".join(body.loc[idx]) + r" \\" for idx in body.index]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def plot_agreement_deltas(deltas: pd.DataFrame, title: str = "", normalised: bool = False):
    """Figure 7 style: per teacher seed, bars of delta correct (blue) / incorrect (red) agreement per alpha."""
    seeds = sorted(deltas["teacher_seed"].unique())
    fig = Figure(figsize=(3.6 * len(seeds), 3.0))
    axes = fig.subplots(1, len(seeds), squeeze=False, sharey=True)
    suffix = "_normalised" if normalised else ""
    for ax, seed in zip(axes[0], seeds):
        d = deltas[deltas["teacher_seed"] == seed].sort_values("alpha")
        x = np.arange(len(d))
        for offset, q, color in ((-0.2, "correct", "tab:blue"), (0.2, "incorrect", "tab:red")):
            ax.bar(x + offset, d[f"delta_{q}{suffix}"], 0.4, yerr=d[f"delta_{q}{suffix}_sem"].fillna(0),
                   color=color, capsize=3, label=f"Δ {q} agreement")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, [f"{a:g}" for a in d["alpha"]])
        ax.set_xlabel("α")
        ax.set_title(f"teacher seed {seed}")
    axes[0][0].set_ylabel("Δ agreement / headroom" if normalised else "Δ agreement vs best control")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, stem: Path) -> list[Path]:
    """Save ``fig`` as vector PDF and 200-dpi PNG next to each other."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    fig.savefig(paths[0])
    fig.savefig(paths[1], dpi=200)
    return paths


def build_report(runs: pd.DataFrame, name: str, dest: Path, exclude=(), extended: bool = True) -> dict:
    """Write every artefact of one setup's runs into ``dest``; returns the computed frames and paths."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tests = transfer_tests(runs, on_missing="drop")
    tests.to_csv(dest / "tests.csv", index=False)
    ticks = tick_table(tests)
    ticks.to_csv(dest / "ticks.csv")
    (dest / "ticks.tex").write_text(ticks_latex(ticks, f"{name}: significance (one tick per teacher seed)"))
    deltas = agreement_deltas(runs, exclude=exclude)
    deltas.to_csv(dest / "agreement_deltas.csv", index=False)
    means = {}
    for seed in sorted(runs["teacher_seed"].unique()):
        for kind, metrics in (("means", MAIN_METRICS), ("extended", EXTENDED_TABLE_METRICS)):
            if kind == "extended" and not extended:
                continue
            table = mean_sem_table(runs, seed, metrics)
            wide_means(table).to_csv(dest / f"{kind}_teacher{seed}.csv")
            (dest / f"{kind}_teacher{seed}.tex").write_text(
                means_latex(table, f"{name} (teacher seed {seed}): mean $\\pm$ 1 SEM"))
            means[(kind, seed)] = table
    figures = []
    for normalised in (False, True):
        fig = plot_agreement_deltas(deltas, name, normalised)
        figures += save_figure(fig, dest / ("agreement_deltas_normalised" if normalised else "agreement_deltas"))
    return {"tests": tests, "ticks": ticks, "deltas": deltas, "means": means, "figures": figures}


def plot_curves(curves: pd.DataFrame, title: str = ""):
    """Train-loss curves: teachers and each student condition (mean over student seeds), one panel per teacher."""
    seeds = sorted(curves["teacher_seed"].unique())
    fig = Figure(figsize=(4.5 * len(seeds), 3.2))
    axes = fig.subplots(1, len(seeds), squeeze=False)
    for ax, seed in zip(axes[0], seeds):
        c = curves[curves["teacher_seed"] == seed]
        for (cond, alpha), g in c.groupby(["condition", c["alpha"].fillna(-1)], sort=True):
            m = g.groupby("step")["loss"].mean()
            label = CONDITION_NAMES.get(cond, cond) + ("" if alpha == -1 else f" {alpha:g}")
            ax.plot(m.index, m.values, label=label, lw=2.2 if cond == "teacher" else 1.0,
                    color="black" if cond == "teacher" else None)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss (objective)")
        ax.set_title(f"teacher seed {seed}")
    axes[0][-1].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def find_collected(out) -> list[tuple[str, str, Path]]:
    """Every (setup, profile, runs-table stem) collected under ``out``, sorted."""
    found = set()
    for path in Path(out).glob("*/*/runs.*"):
        if path.suffix in (".csv", ".parquet"):
            found.add((path.parent.parent.name, path.parent.name, path.with_suffix("")))
    return sorted(found)


def plot_examples(x, titles: list[str], spectrogram: bool = False, columns: int = 6):
    """A grid of examples: uint8/float images ``[n, C, H, W]`` or mel spectrograms ``[n, 1, mels, frames]``."""
    n = len(titles)
    rows = max(1, math.ceil(n / columns))
    fig = Figure(figsize=(2.0 * columns, (1.6 if spectrogram else 2.2) * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        a = np.asarray(x[i], dtype=float)
        if spectrogram:
            ax.imshow(a[0], origin="lower", aspect="auto", cmap="magma")
        else:
            a = a.transpose(1, 2, 0)
            a = (a - a.min()) / (a.max() - a.min() + 1e-12)
            ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray" if a.shape[-1] == 1 else None)
        ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def copied_teacher_errors(teacher_logits, model_logits, labels) -> "np.ndarray":
    """Indices of test examples where the teacher is wrong and the model makes the very same mistake."""
    t, m, y = (np.asarray(a) for a in (teacher_logits.argmax(-1), model_logits.argmax(-1), labels))
    return np.flatnonzero((t != y) & (m == t))
