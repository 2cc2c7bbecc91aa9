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
from .store import atomic_write, write_csv, write_text

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
    """Save ``fig`` atomically as vector PDF and 200-dpi PNG next to each other."""
    paths = [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    for path in paths:
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix[1:], dpi=200, bbox_inches="tight"))
    return paths


def build_report(runs: pd.DataFrame, name: str, dest: Path, exclude=(), extended: bool = True) -> dict:
    """Write every artefact of one setup's runs into ``dest``; returns the computed frames and paths.

    A setup with student variants (a ``variant`` column, e.g. widths) gets one sub-report per variant in
    ``dest/<variant>/`` plus the scaling view across variants (Figure 11 style)."""
    if "variant" in runs.columns and runs["variant"].notna().any():
        return _variant_report(runs, name, Path(dest), exclude, extended)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tests = transfer_tests(runs, on_missing="drop")
    write_csv(tests, dest / "tests.csv")
    ticks = tick_table(tests)
    write_csv(ticks, dest / "ticks.csv", index=True)
    write_text(dest / "ticks.tex", ticks_latex(ticks, f"{name}: significance (one tick per teacher seed)"))
    deltas = agreement_deltas(runs, exclude=exclude)
    write_csv(deltas, dest / "agreement_deltas.csv")
    means = {}
    for seed in sorted(runs["teacher_seed"].unique()):
        for kind, metrics in (("means", MAIN_METRICS), ("extended", EXTENDED_TABLE_METRICS)):
            if kind == "extended" and not extended:
                continue
            table = mean_sem_table(runs, seed, metrics)
            write_csv(wide_means(table), dest / f"{kind}_teacher{seed}.csv", index=True)
            write_text(dest / f"{kind}_teacher{seed}.tex",
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


def _variant_key(label: str):
    try:
        return (0, float(str(label).rstrip("%")), str(label))
    except ValueError:
        return (1, 0.0, str(label))


def _variant_report(runs: pd.DataFrame, name: str, dest: Path, exclude, extended: bool) -> dict:
    variants = sorted(runs["variant"].dropna().unique(), key=_variant_key)
    merged = {"tests": [], "ticks": [], "deltas": [], "means": {}}
    for v in variants:
        sub = build_report(runs[runs["variant"] == v].drop(columns="variant"), f"{name} [{v}]",
                           dest / str(v).replace("%", "pct"), exclude, extended)
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
    merged["figures"] = save_figure(plot_scaling(merged["deltas"], variants, name), dest / "agreement_vs_variant")
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


def plot_scaling(deltas: pd.DataFrame, variants: list, title: str = ""):
    """Figure 11 style: delta correct and delta incorrect agreement (vs best control) across student variants,
    one line per alpha with SEM bands; one row of panels per teacher seed."""
    seeds = sorted(deltas["teacher_seed"].unique())
    fig = Figure(figsize=(8.0, 3.0 * len(seeds)))
    axes = fig.subplots(len(seeds), 2, squeeze=False, sharey="row")
    x = np.arange(len(variants))
    for row, seed in zip(axes, seeds):
        d = deltas[deltas["teacher_seed"] == seed]
        for ax, q in zip(row, ("correct", "incorrect")):
            for alpha, g in d.groupby("alpha"):
                g = g.set_index("variant").loc[variants]
                mean, sem = g[f"delta_{q}"].to_numpy(float), g[f"delta_{q}_sem"].fillna(0).to_numpy(float)
                ax.plot(x, mean, marker="o", label=f"α = {alpha:g}")
                ax.fill_between(x, mean - sem, mean + sem, alpha=0.25)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xticks(x, [str(v) for v in variants], fontsize=7)
            ax.set_title(f"Δ {q} agreement (teacher seed {seed})", fontsize=9)
            ax.set_xlabel("student variant")
        row[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- cross-setup views (Section 4.4-4.5)

def temperature_table(runs_by_temperature: dict[float, pd.DataFrame], teacher_seed=0,
                      metrics=MAIN_METRICS) -> pd.DataFrame:
    """Table 27 style: SIDDO beside KD at every alpha for each temperature (mean +- SEM, one teacher seed)."""
    parts = []
    for i, (temperature, runs) in enumerate(sorted(runs_by_temperature.items())):
        runs = runs[runs["condition"].isin(["siddo", "kd"] if i == 0 else ["kd"])]
        table = mean_sem_table(runs, teacher_seed, metrics)
        table["column"] = table["column"].where(table["column"] == "SIDDO", table["column"] + f" T={temperature:g}")
        parts.append(table.drop(columns="best"))
    table = pd.concat(parts, ignore_index=True)
    table["best"] = False
    for metric, g in table.groupby("metric"):
        table.loc[g["mean"].idxmin() if LOWER_IS_BETTER[metric] else g["mean"].idxmax(), "best"] = True
    return table


def transfer_proportions(deltas: pd.DataFrame) -> pd.DataFrame:
    """Share of KD's agreement gain that is positive (teacher-correct) vs negative (teacher-incorrect) transfer:
    max(delta, 0) of each, normalised to sum 1 (NaN where neither grows)."""
    pos, neg = deltas["delta_correct"].clip(lower=0), deltas["delta_incorrect"].clip(lower=0)
    total = (pos + neg).replace(0, np.nan)
    return deltas.assign(positive_share=pos / total, negative_share=neg / total)


def plot_transfer_proportions(deltas_by_temperature: dict[float, pd.DataFrame], teacher_seed=0, title: str = ""):
    """Figure 14 style: per temperature, stacked bars of positive (blue) and negative (red) transfer per alpha."""
    temps = sorted(deltas_by_temperature)
    fig = Figure(figsize=(3.2 * len(temps), 3.0))
    axes = fig.subplots(1, len(temps), squeeze=False, sharey=True)
    for ax, temperature in zip(axes[0], temps):
        d = transfer_proportions(deltas_by_temperature[temperature])
        d = d[d["teacher_seed"] == teacher_seed].sort_values("alpha")
        x = np.arange(len(d))
        ax.bar(x, d["positive_share"].fillna(0), color="tab:blue", label="positive (teacher-correct)")
        ax.bar(x, d["negative_share"].fillna(0), bottom=d["positive_share"].fillna(0), color="tab:red",
               label="negative (teacher-incorrect)")
        ax.set_xticks(x, [f"{a:g}" for a in d["alpha"]])
        ax.set_xlabel("α")
        ax.set_title(f"T = {temperature:g}")
    axes[0][0].set_ylabel("share of agreement gain")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
               fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def th_completion_table(runs: pd.DataFrame, teachers: pd.DataFrame, teacher_seed=0) -> pd.DataFrame:
    """Table 30 style: greedy completions of clean "th" prompts to "tha" / "the", teacher and mean +- SEM per
    condition (student seeds)."""
    t = runs[runs["teacher_seed"] == teacher_seed]
    teacher = teachers[teachers["teacher_seed"] == teacher_seed].iloc[0]
    out = {}
    for word, col in (("tha", "tha_count"), ("the", "the_count")):
        row = {"Teacher": f"{teacher[col]:.0f}"}
        for cond, alpha in _columns(t):
            sel = t[(t["condition"] == cond) & (t["alpha"].isna() if alpha is None else np.isclose(t["alpha"], alpha))]
            x = sel[col].to_numpy(float)
            row[_label(cond, alpha)] = _fmt(x.mean(), x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else math.nan)
        out[f'"{word}"'] = row
    return pd.DataFrame(out).T


def char_frequency(text: str, top: int = 9) -> pd.DataFrame:
    """Table 91 style: the most frequent characters of ``text`` and their relative frequency."""
    counts = pd.Series(list(text)).value_counts()
    names = ["Space" if c == " " else "\\n" if c == "\n" else c for c in counts.index[:top]]
    return pd.DataFrame({"character": names, "frequency": (counts.iloc[:top] / len(text)).round(4).to_numpy()})


def plot_zipf(text: str, title: str = "Zipf's law (characters)"):
    """Figure 15 style: character frequency against rank, log-log."""
    counts = pd.Series(list(text)).value_counts().to_numpy(float)
    fig = Figure(figsize=(4.0, 3.0))
    ax = fig.subplots()
    ranks = np.arange(1, len(counts) + 1)
    ax.loglog(ranks, counts / counts.sum(), marker=".", lw=1)
    ax.set_xlabel("rank")
    ax.set_ylabel("relative frequency")
    ax.set_title(title)
    fig.tight_layout()
    return fig


TEMPERATURE_SETUPS = {1.0: "tinyshakespeare-nanogpt-to-picogpt", 2.0: "tinyshakespeare-nanogpt-to-picogpt-t2",
                      4.0: "tinyshakespeare-nanogpt-to-picogpt-t4"}


def temperature_view(runs_by_temperature: dict[float, pd.DataFrame], dest: Path) -> dict:
    """Section 4.4.2's artefacts: the combined KD-at-every-T table per teacher seed (CSV, LaTeX), ticks per
    temperature, and the positive/negative transfer proportions (Figure 14 style)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {"tables": {}, "ticks": {}, "figures": []}
    seeds = sorted(next(iter(runs_by_temperature.values()))["teacher_seed"].unique())
    for seed in seeds:
        table = temperature_table(runs_by_temperature, seed)
        write_csv(wide_means(table), dest / f"temperature_teacher{seed}.csv", index=True)
        write_text(dest / f"temperature_teacher{seed}.tex",
            means_latex(table, f"KD at T = {', '.join(f'{t:g}' for t in sorted(runs_by_temperature))} "
                               f"(teacher seed {seed}): mean $\\pm$ 1 SEM"))
        out["tables"][seed] = table
    deltas = {}
    for temperature, runs in sorted(runs_by_temperature.items()):
        ticks = tick_table(transfer_tests(runs, on_missing="drop"))
        write_csv(ticks, dest / f"ticks_T{temperature:g}.csv", index=True)
        out["ticks"][temperature] = ticks
        deltas[temperature] = agreement_deltas(runs)
    proportions = pd.concat([transfer_proportions(d).assign(temperature=t) for t, d in deltas.items()])
    write_csv(proportions, dest / "transfer_proportions.csv")
    out["proportions"] = proportions
    for seed in seeds:
        out["figures"] += save_figure(plot_transfer_proportions(deltas, seed, f"teacher seed {seed}"),
                                      dest / f"transfer_proportions_teacher{seed}")
    return out


def adversarial_view(runs: pd.DataFrame, teachers: pd.DataFrame, text: str | None, dest: Path) -> dict:
    """Section 4.5's artefacts: Table 30 per teacher seed, and (given the text) Table 91 and Figure 15."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {"tables": {}, "figures": []}
    for seed in sorted(runs["teacher_seed"].unique()):
        table = th_completion_table(runs, teachers, seed)
        write_csv(table, dest / f"th_completions_teacher{seed}.csv", index=True)
        out["tables"][seed] = table
    if text is not None:
        out["char_frequency"] = char_frequency(text)
        write_csv(out["char_frequency"], dest / "char_frequency.csv")
        out["figures"] += save_figure(plot_zipf(text), dest / "zipf")
    return out
