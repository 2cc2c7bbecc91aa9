"""The study's figures: vector PDF (TrueType fonts, which venues accept, never Type 3) and PNG, built with
matplotlib's object API (no pyplot state), in one colour scheme: blue for teacher-correct, red for
teacher-incorrect agreement, everywhere (study, audit, summary)."""
from __future__ import annotations

import functools
import math
import re
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..conditions import CONDITIONS, label
from ..metrics import display_name, table_metrics
from ..store import atomic_write

#: The study's colours: teacher-correct (positive transfer) and teacher-incorrect (negative transfer).
COLOURS = {"correct": "#1f77b4", "incorrect": "#d62728"}


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


def _seed_title(title: str, seed) -> str:
    """A panel's title: its teacher seed, or nothing where the figure's title already names that seed."""
    return "" if re.search(rf"\bteacher seed {seed}\b", title) else f"teacher seed {seed}"


def _control_name(control: str) -> str:
    cond, _, alpha = str(control).partition(" ")
    return label(cond, float(alpha) if alpha else None) if cond in CONDITIONS else str(control)


@styled
def plot_agreement_deltas(deltas: pd.DataFrame, title: str = "", normalised: bool = False):
    """Figure 7 style: per teacher seed, bars of Δ correct (blue) and Δ incorrect (red) agreement per alpha,
    against the best control of each quantity (named under each bar group), with error bars of ±1 SEM over
    the student seeds (normalised: ±1 bootstrap SE of the ratio of means). The legend (the error bars' spread
    too) sits below the panels, the title above them all (a panel names its teacher seed unless the title does);
    the y label is short enough to fit beside one panel."""
    seeds = sorted(deltas["teacher_seed"].unique())
    fig = new_figure(2.6 * len(seeds) + 0.4, 2.9)
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
        ax.set_title(_seed_title(title, seed))
    n = int(deltas[["n_correct", "n_incorrect"]].min().min()) if "n_correct" in deltas else None
    spread = "±1 bootstrap SE" if normalised else "±1 SEM"
    axes[0][0].set_ylabel("Δ agreement /\ncontrol headroom" if normalised else "Δ agreement vs\nbest control")
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles.append(Line2D([], [], ls="", marker="|", ms=8, mew=0.8, color="black"))
    labels.append(f"error bar: {spread}" + (f" over {n} seeds" if n else ""))
    fig.legend(handles, labels, loc="outside lower center", ncols=3 if len(seeds) > 1 else 2)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


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
        ax.set_title(_seed_title(title, seed))
    axes[0][0].set_ylabel("our mean")
    handles = [Line2D([], [], ls="", marker="o", color=colours[c], label=c) for c in columns]
    handles += [Line2D([], [], ls="", marker=mk, color="grey", label=display_name(m, short=True))
                for m, mk in markers.items() if any(m in set(means[s]["metric"]) for s in seeds)]
    fig.legend(handles=handles, loc="outside right center", fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


#: What each objective (:attr:`kdlib.conditions.Condition.objective`) is called in the curves' legend.
OBJECTIVE_NAMES = {"ce": "CE", "kd": "Eq. 1", "rcd": "Eq. 1, uniform teacher", "ls": "smoothed CE"}
CURVES_NOTE = ("Each curve is its condition's own training objective, so the curves differ in scale: compare their "
               "shapes, not their heights. CE: cross-entropy. Eq. 1: (1−α)·CE + α·T²·KL(teacher ‖ student) (a "
               "feature-map setup: α·MSE to the teacher's features). RCD: Eq. 1 against a uniform teacher (zero "
               "features). LS: CE against labels smoothed by ε = α.")


@styled
def plot_curves(curves: pd.DataFrame, title: str = ""):
    """Train-loss curves: teachers and each student condition (mean over student seeds), one panel per teacher
    seed, the legend (each condition with the objective it trains) to the right of the panels and, beneath, a
    note on the objectives: their scales differ."""
    seeds = sorted(curves["teacher_seed"].unique())
    width = 3.2 * len(seeds) + 1.9
    fig = new_figure(width, 3.0)
    axes = fig.subplots(1, len(seeds), squeeze=False, sharey=True)
    for ax, seed in zip(axes[0], seeds):
        c = curves[curves["teacher_seed"] == seed]
        for (cond, alpha), g in c.groupby(["condition", c["alpha"].fillna(-1)], sort=True):
            m = g.groupby("step")["loss"].mean()
            objective = CONDITIONS[cond].objective
            ax.plot(m.index, m.values, label=f"{label(cond, None if alpha == -1 else alpha)}: "
                                             f"{OBJECTIVE_NAMES.get(objective, objective)}",
                    lw=2.0 if cond == "teacher" else 0.9, color="black" if cond == "teacher" else None)
        ax.set_xlabel("step")
        ax.set_title(_seed_title(title, seed))
    axes[0][0].set_ylabel("training objective (mean over seeds;\nscales differ between objectives)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right center")
    fig.supxlabel(textwrap.fill(CURVES_NOTE, int(width * 17)), fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


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


@styled
def plot_scaling(deltas: pd.DataFrame, variants: list, title: str = ""):
    """Figure 11 style: delta correct and delta incorrect agreement (vs best control) across student variants,
    one line per alpha with ±1 SEM bands; one row of panels per teacher seed (named beside it unless the title
    does), a column per quantity (named above it), the legend below."""
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
            ax.set_xlabel("student variant")
        row[0].set_ylabel("\n".join(filter(None, [_seed_title(title, seed), "Δ agreement vs best control (±1 SEM)"])))
    for ax, q in zip(axes[0], ("correct", "incorrect")):
        ax.set_title(f"Δ teacher-{q} agreement")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


@styled
def plot_power(calibration: pd.DataFrame, title: str = ""):
    """The verdict rule's calibration (:func:`kdlib.analysis.evidence.calibrate`): the share of "supported" against
    the planted improvement, one line per number of student seeds (mean over the teacher seeds and alphas), the
    null rate at the observed seeds with its interval, and the 5% and 80% guides."""
    fig = new_figure(4.6, 3.0)
    ax = fig.subplots()
    power = calibration[calibration["kind"] == "power"]
    effects = sorted(power["effect"].unique())
    x = np.arange(len(effects))  # the grid's steps, evenly spaced; labelled with the effects
    for n, g in power.groupby("n_seeds"):
        ax.plot(x, g.groupby("effect")["p_supported"].mean().reindex(effects).to_numpy(), marker="o", ms=3,
                label=f"{n} seeds")
    null = calibration[calibration["kind"] == "null_rate"]
    if len(null):
        rate = float(null["p_supported"].mean())
        ax.errorbar([x[0] - 0.25], [rate], yerr=[[rate - null["low"].mean()], [null["high"].mean() - rate]],
                    fmt="s", color="black", ms=4, capsize=2,
                    label=f"null ({int(null['n_seeds'].iloc[0])} seeds, exchanged)")
    for level, style in ((0.05, ":"), (0.8, "--")):
        ax.axhline(level, color="grey", lw=0.7, ls=style)
    ax.set_xticks(x, [f"{e:g}" for e in effects])
    ax.set_xlabel("planted mean improvement of KD (metric units)")
    ax.set_ylabel('share of "supported" verdicts')
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return fig
