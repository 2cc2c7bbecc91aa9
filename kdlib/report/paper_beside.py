"""The paper beside ours: per teacher seed our mean +- SEM next to the paper's, the ticks beside the paper's,
the teachers beside the paper's teacher table, and a scatter of our means against the paper's. The scorecard
(:mod:`kdlib.analysis.scorecard`) turns the same tables into claims."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import paper
from ..analysis import mean_sem_table
from .figures import drawn, plot_vs_paper, save_figure
from ..metrics import display_name, table_metrics
from ..store import write_csv
from .tables import MISSING_MARK, format_mean_sem, tick_marks


def beside_wide(both: pd.DataFrame, keep_zero: bool = False) -> pd.DataFrame:
    """Metrics as rows, per condition our 'mean ± sem' and the paper's (``both``: our means merged with the
    paper's, ``_paper`` suffixed). The paper's SEM of 0 is printed (it reports one below its precision); ours only
    with ``keep_zero`` (the written CSV)."""
    cells = both.assign(ours=[format_mean_sem(m, s, keep_zero) for m, s in zip(both["mean"], both["sem"])],
                        paper=[format_mean_sem(m, s, True) for m, s in zip(both["mean_paper"], both["sem_paper"])])
    wide = cells.pivot(index="metric", columns="column", values=["ours", "paper"]).swaplevel(axis=1)
    wide = wide[[(c, side) for c in dict.fromkeys(both["column"]) for side in ("ours", "paper")]]
    wide = wide.loc[list(dict.fromkeys(both["metric"]))]
    wide.index = [display_name(m, arrow=True) for m in wide.index]
    return wide


def paper_beside(runs: pd.DataFrame, tests: pd.DataFrame, setup, teachers: pd.DataFrame | None, dest: Path,
                 draw: bool = True, means: pd.DataFrame | None = None) -> dict:
    """Our numbers beside the paper's, teacher seed by teacher seed: means (``vs_paper_teacher<seed>.csv``),
    ticks (``ticks_vs_paper.csv``), teachers (``teachers_vs_paper.csv``) and one scatter of our means against
    the paper's (``vs_paper.pdf/png``). ``means``: the analysis's mean +- SEM table of every teacher seed (else
    computed from ``runs``). Outside the ``paper`` profile the comparison is labelled as a different scale. Returned
    under ``wide``: the means as a notebook shows them (:func:`beside_wide`)."""
    scale = "" if setup.profile == "paper" else f" (ours: the {setup.profile} profile, a different scale)"
    paper_means = paper.means_for(setup.name, setup.temperature)
    out = {"means": {}, "wide": {}, "scale": scale, "figures": []}
    for seed in sorted(set(runs["teacher_seed"]) & set(paper_means["teacher_seed"])):
        ours = (mean_sem_table(runs, seed, [m for m in table_metrics(extended=True) if m in runs]) if means is None
                else means[means["teacher_seed"] == seed].drop(columns="teacher_seed").reset_index(drop=True))
        theirs = paper_means[paper_means["teacher_seed"] == seed]
        both = ours.merge(theirs[["metric", "column", "mean", "sem", "table"]], on=["metric", "column"],
                          suffixes=("", "_paper"))
        write_csv(beside_wide(both, keep_zero=True), dest / f"vs_paper_teacher{seed}.csv", index=True)
        out["means"][seed], out["wide"][seed] = both, beside_wide(both)
    p_ticks = paper.ticks_for(setup.name, setup.temperature,
                              int(setup.feature_layer.rsplit(".", 1)[-1]) if setup.feature_layer else None)
    if len(p_ticks):
        rows, seeds = {}, sorted(set(tests["teacher_seed"]) | set(p_ticks["teacher_seed"]))  # MISSING_MARK: not run
        for alpha, g in tests.groupby("alpha"):
            row = {}
            for metric, m in g.groupby("metric", sort=False):
                theirs = p_ticks[np.isclose(p_ticks["alpha"], alpha) & (p_ticks["metric"] == metric)]
                theirs = (tick_marks(theirs.set_index("teacher_seed")["tick"], seeds, MISSING_MARK) if len(theirs)
                          else "n/a")
                row[display_name(metric)] = f"{tick_marks(m.set_index('teacher_seed')['tick'], seeds, MISSING_MARK)} " \
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
