"""A slice of the paper at its own scale: the paper profile of tinyshakespeare-nanogpt for teacher seed 0 and
``--students`` student seeds (10, 11, ...) under all seven conditions, packed (``--pack auto`` on CUDA) and
resumable (its runs are the full grid's runs: same ids, so a later full run reuses them). Prints our means
beside the paper's Table 14 and our teacher beside Table 38; on the CPU ``--profile smoke`` is a dry run.

``--reading ID=CHOICE`` (repeatable) trains the slice under those readings of the paper
(:mod:`kdlib.setups.readings`), e.g. ``--reading gpt-architecture=nanogpt``; ``--students 0`` trains only the
teacher. ``--adversarial`` also trains the adversarial teacher (seed 0, the ``adversarial-replacement`` reading
chosen) and prints its "th" completions beside Table 30's teacher column.
"""
from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from kdlib import paper, setups
from kdlib.analysis import mean_sem_table
from kdlib.report.tables import format_mean_sem
from kdlib.analysis.collect import collect
from kdlib.runs.setup import run_setup

SETUP = "tinyshakespeare-nanogpt"


def beside_table14(students: pd.DataFrame) -> pd.DataFrame:
    """Metric rows; per condition our 'mean ± SEM' and the paper's (Table 14, teacher seed 0)."""
    ours = mean_sem_table(students, 0)
    theirs = paper.means_for(SETUP)
    theirs = theirs[theirs["teacher_seed"] == 0]
    both = ours.merge(theirs[["metric", "column", "mean", "sem"]], on=["metric", "column"], how="left",
                      suffixes=("", "_paper"))
    cells = {}
    for column in dict.fromkeys(both["column"]):
        rows = both[both["column"] == column].set_index("metric")
        cells[f"{column} ours"] = [format_mean_sem(m, s) for m, s in zip(rows["mean"], rows["sem"])]
        cells[f"{column} paper"] = [format_mean_sem(m, s, keep_zero=True)
                                   for m, s in zip(rows["mean_paper"], rows["sem_paper"])]
    return pd.DataFrame(cells, index=list(dict.fromkeys(both["metric"])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--students", type=int, default=3, help="student seeds (default 3: 21 students; 0: teacher only)")
    p.add_argument("--reading", action="append", default=[], metavar="ID=CHOICE",
                   help="train under this reading of the paper (repeatable; kdlib/setups/readings.py)")
    p.add_argument("--adversarial", action="store_true",
                   help="also train the adversarial teacher (seed 0) and print its completions beside Table 30")
    p.add_argument("--profile", default="paper", choices=setups.PROFILES)
    p.add_argument("--device", default="cuda")
    p.add_argument("--pack", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results")
    args = p.parse_args()
    os.environ.setdefault("KDLIB_OFFLINE", "1")  # a GPU machine may have no network: never wait on a download
    chosen = setups.readings.parse(args.reading)
    full = setups.get(SETUP, args.profile, {r: c for r, c in chosen.items() if r != "adversarial-replacement"})
    if not 0 <= args.students <= len(full.student_seeds):
        raise SystemExit(f"--students {args.students} is not allowed: use 0 to {len(full.student_seeds)}")
    setup = full.scaled(teacher_seeds=(0,), student_seeds=full.student_seeds[:args.students])
    start = time.perf_counter()
    run_setup(setup, args.out, args.data_dir, args.device, pack=args.pack)
    students, teachers = collect(setup, args.out, write=False)
    readings = ", ".join(f"{r}={c}" for r, c in setup.readings)
    print(f"{setup.label} at the {args.profile} profile: teacher seed 0, {args.students} student seeds x 7 "
          f"conditions, {time.perf_counter() - start:.0f} s on {args.device}; readings {readings}"
          + ("" if args.profile == "paper" else " (not the paper's scale: a dry run)"))
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        if args.students:
            print("\nmeans beside the paper's Table 14 (teacher seed 0, 10 student seeds there):")
            print(beside_table14(students).to_string())
        t = paper.teachers_for(SETUP)
        t = t[t["teacher_seed"] == 0]
        cols = ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]
        print("\nteacher beside the paper's Table 38 (seed 0):")
        print(pd.concat([teachers[cols].assign(source="ours"), t[cols].assign(source="paper, Table 38")])
              .set_index("source").round(4).to_string())
    if args.adversarial:
        adversarial_teacher(args, chosen)


def adversarial_teacher(args, chosen: dict) -> None:
    """The adversarial teacher of seed 0 under the chosen readings, its greedy "th" completions beside Table 30's."""
    full = setups.get("tinyshakespeare-adversarial", args.profile,
                      {r: c for r, c in chosen.items() if r in ("adversarial-replacement", "gpt-architecture",
                                                                   "training-precision")})
    setup = full.scaled(teacher_seeds=(0,), student_seeds=full.student_seeds[:1], conditions=("siddo",))
    start = time.perf_counter()
    run_setup(setup, args.out, args.data_dir, args.device, pack=1)
    _, teachers = collect(setup, args.out, write=False)
    theirs = paper.th_completions()
    theirs = theirs[(theirs["table"] == 30) & (theirs["model"] == "teacher")].set_index("word")["mean"]
    t = teachers.iloc[0]
    readings = ", ".join(f"{r}={c}" for r, c in setup.readings)
    print(f"\nadversarial teacher (seed 0; readings {readings}), {time.perf_counter() - start:.0f} s: greedy "
          f"completions of the {int(t['th_prompts'])} clean \"th\" prompts beside Table 30's teacher column")
    print(pd.DataFrame({"ours": [int(t["tha_count"]), int(t["the_count"])],
                        "paper, Table 30": [theirs.get("tha"), theirs.get("the")]},
                       index=['"tha"', '"the"']).to_string())


if __name__ == "__main__":
    main()
