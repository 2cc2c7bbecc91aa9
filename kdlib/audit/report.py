"""The audit's report on disk: ``report.json``, ``report.md``, ``copied_errors.csv`` and the agreement-delta and
copied-error figures (PDF and PNG, the study's figure style and colours)."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..report.figures import COLOURS, new_figure, save_figure, styled
from ..metrics import METRICS
from ..store import atomic_write


class Copies(NamedTuple):
    """The teacher's errors as (true label, teacher's wrong label) pairs, arrays in row-major order: ``errors``
    per pair, and ``by_side`` {side: copies per pair, the mean over the side's models}."""
    true: np.ndarray
    wrong: np.ndarray
    errors: np.ndarray
    by_side: dict


def _json_safe(x):
    """Plain Python types, NaN and inf as None, so report.json is strict JSON."""
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    return x


def _write(out: Path, report: dict, table: pd.DataFrame, copies: Copies, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    atomic_write(out / "report.json", lambda f: f.write(text.encode()))
    atomic_write(out / "copied_errors.csv", lambda f: f.write(table.to_csv(index=False).encode()))
    atomic_write(out / "report.md", lambda f: f.write(_markdown(report).encode()))
    save_figure(_plot_agreement(report), out / "agreement_deltas")
    save_figure(_plot_copied(copies, names), out / "copied_errors")


def _fmt(x, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:+.{digits}f}"


def _uncertainty(r: dict) -> str:
    if "ci_low" in r:
        return f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
    if "sem" in r:
        p = f", p = {r['p']:.3g}" if r.get("p") is not None else ""
        p += f", p_adj = {r['p_adj']:.3g}" if r.get("p_adj") not in (None, r.get("p")) else ""
        return f"± {r['sem']:.4f} SEM{p}" if r["sem"] is not None else p.lstrip(", ")
    return ""


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]) + "\n"


def _markdown(r: dict) -> str:
    yes = lambda b: "n/a" if b is None else ("yes" if b else "no")
    inp, v, u = r["inputs"], r["verdict"], r["uncertainty"]
    shape = "x".join(map(str, inp["logits_shape"]))
    md = [f"# Distillation audit\n\nTeacher: `{inp['teacher']}`, accuracy {r['teacher']['accuracy']:.4f} on "
          f"{inp['n_tokens']} predictions (logits {shape}, K={inp['num_classes']}); labels: `{inp['labels']}`.\n\n"
          f"Students ({len(inp['students'])}): " + ", ".join(f"`{s}`" for s in inp["students"]) + ".\n\n"
          + "".join(f"Control `{c}` ({len(ms)}): " + ", ".join(f"`{m}`" for m in ms) + ".\n\n"
                    for c, ms in inp["controls"].items())]
    md.append(f"## Verdict\n\n- Transfer supported: **{yes(v['transfer_supported'])}**\n"
              f"- Negative asymmetry: **{yes(v['negative_asymmetry'])}** (significant against every control: "
              f"{yes(v['negative_asymmetry_significant'])})\n"
              f"- Negative asymmetric transfer (Section 3.2): **{yes(v['negative_asymmetric_transfer'])}**\n\n"
              f"{v['text']}\n")
    if u["method"] == "bootstrap":
        md.append(f"\nUncertainty: {u['interval']} bootstrap intervals over {u['n_units']} resampled units "
                  f"(resampling unit: {u['resampling_unit']}; {u['n_boot']} replicates, seed {u['seed']}). "
                  f"{u['note'].capitalize()}.\n")
    elif u["method"] == "seeds":
        md.append(f"\nUncertainty: {u['test']}; {u['fdr']}; level {u['alpha_level']}. Deltas are mean ± SEM.\n")
        low = [c for c, p in u["min_attainable_p"].items() if p >= u["alpha_level"]]
        if low:
            md.append(f"\nWarning: with these seed counts no test against {', '.join(low)} can reach "
                      f"p < {u['alpha_level']}; use at least 5 models per side.\n")
    sides = list(r["means"])
    md.append("\n## Metrics against the teacher (mean over models)\n\n" + _md_table(
        ["metric", *sides], [[m, *(f"{r['means'][s][m]:.4f}" if r["means"][s][m] is not None else "n/a"
                                   for s in sides)] for m in METRICS]))
    if "agreement" in r:
        a = r["agreement"]
        md.append("\n## Agreement deltas against the best control (Eqs. 2-3)\n\n" + _md_table(
            ["quantity", "control", "delta", "uncertainty"],
            [[k, a[k]["control"], _fmt(a[k]["delta"]), _uncertainty(a[k])] for k in a]))
        md.append("\nSignificant gain: the student is more teacher-like than the control (lower distance or "
                  "disagreement, higher agreement; for asymmetry, delta_incorrect > delta_correct) or performs "
                  "better (accuracy, loss).\n")
        for c, d in r["deltas"].items():
            md.append(f"\n### Student - `{c}`\n\n" + _md_table(
                ["quantity", "delta", "uncertainty", "significant gain"],
                [[k, _fmt(x["delta"]), _uncertainty(x), yes(x.get("significant"))]
                 for k, x in d.items() if isinstance(x, dict)]))
    rows = r["copied_errors"][:10]
    md.append("\n## Most-copied teacher errors\n\n" + (_md_table(
        ["true label", "teacher's label", "teacher errors", "student copies", "student rate", "control rate"],
        [[x["true_name"], x["teacher_name"], x["teacher_errors"], f"{x['student_copies']:g}",
          f"{x['student_rate']:.3f}", f"{x['control_rate']:.3f}" if x.get("control_rate") is not None else "n/a"]
         for x in rows]) if rows else "The teacher makes no errors on this test set.\n")
        + "\nAll pairs: `copied_errors.csv`.\n")
    if r["notes"]:
        md.append("\n## Notes\n\n" + "".join(f"- {note}\n" for note in r["notes"]))
    md.append("\n## Figures\n\n![agreement deltas](agreement_deltas.png)\n\n![copied errors](copied_errors.png)\n")
    return "".join(md)


@styled
def _plot_agreement(r: dict) -> Figure:
    """Bars of delta_correct / delta_incorrect per control (raw and headroom-normalised) with their uncertainty."""
    fig = new_figure(6.5, 2.8)
    colours = COLOURS
    if "deltas" not in r:  # no control: the student's agreement levels
        ax = fig.subplots()
        vals = [r["means"]["student"][f"{q}_agreement"] for q in colours]
        ax.bar(list(colours), [np.nan if x is None else x for x in vals], color=list(colours.values()))
        ax.set_ylabel("student-teacher agreement")
        ax.set_title("Agreement where the teacher is correct / incorrect (no control)")
        return fig
    controls = list(r["deltas"])
    x, w = np.arange(len(controls)), 0.38
    for ax, suffix, title in zip(fig.subplots(1, 2), ("", "_normalised"),
                                 ("student - control", "normalised by control headroom")):
        for j, q in enumerate(colours):
            recs = [r["deltas"][c][f"{q}_agreement{suffix}"] for c in controls]
            val = np.array([np.nan if d["delta"] is None else d["delta"] for d in recs])
            if "ci_low" in recs[0]:
                err = np.array([[v - (d["ci_low"] if d["ci_low"] is not None else np.nan),
                                 (d["ci_high"] if d["ci_high"] is not None else np.nan) - v]
                                for v, d in zip(val, recs)]).T
            else:
                err = np.array([np.nan if d["sem"] is None else d["sem"] for d in recs])
            ax.bar(x + (j - 0.5) * w, val, w, yerr=err, capsize=3, color=colours[q], label=f"teacher {q}")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, controls)
        ax.set_title(title)
    fig.axes[0].set_ylabel("Δ agreement with teacher")
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False)
    method = r["uncertainty"]["method"]
    fig.suptitle(f"Agreement deltas ({'bootstrap CI' if method == 'bootstrap' else '± SEM over seeds'})")
    return fig


@styled
def _plot_copied(copies: Copies, names: list[str], max_classes: int = 30) -> Figure:
    """Per true class: how often each side reproduces the teacher's wrong label (tick: its most-copied label)."""
    true, wrong, errors, by_side = copies
    per_class = np.bincount(true, weights=errors, minlength=len(names))
    copied = {s: np.bincount(true, weights=c, minlength=len(names)) for s, c in by_side.items()}
    classes = np.nonzero(per_class)[0]
    classes = classes[np.argsort(-copied["student"][classes], kind="stable")][:max_classes]
    fig = new_figure(min(16.0, max(5.0, 0.25 * len(classes) * len(by_side) + 2)), 3.0)
    ax = fig.subplots()
    w = 0.8 / len(by_side)
    for j, s in enumerate(by_side):
        ax.bar(np.arange(len(classes)) + (j - (len(by_side) - 1) / 2) * w, copied[s][classes] / per_class[classes],
               w, label=s)
    ticks = []
    for k in classes:
        student = np.where(true == k, by_side["student"], 0)  # first most-copied label of class k, if any copied
        ticks.append(names[k] + (f"\n→{names[wrong[student.argmax()]]}" if student.max() > 0 else ""))
    ax.set_xticks(np.arange(len(classes)), ticks, fontsize=7)
    ax.set_xlabel("true class (→ teacher's wrong label the student copies most)")
    ax.set_ylabel("copied teacher errors / teacher errors")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("Teacher errors reproduced, per true class" + (f" (top {max_classes})" if len(classes) ==
                                                                max_classes else ""))
    return fig
