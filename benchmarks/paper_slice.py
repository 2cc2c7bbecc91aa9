"""A slice of the paper at its own scale: the paper profile of tinyshakespeare-nanogpt for teacher seed 0 and
``--students`` student seeds (10, 11, ...) under all seven conditions, resumable (its runs are the full grid's
runs: same ids, so a later full run reuses them). Prints our means beside the paper's Table 14 and our teacher
beside Table 38; on the CPU ``--profile smoke`` is a dry run.

It trains in stages, printing a line per run as each stage ends: the teacher, then each student seed's seven
students (on CUDA one pack, ``--pack seed``: one compiled shape and no pack-size probe; ``--pack auto`` probes as
the study does, compiling each size it tries). The teacher is required; with ``--budget SECONDS`` (wall clock from
the process's start) a student seed, and the adversarial teacher, is trained only while about the time it needs
is left (per model as ``kdlib plan`` estimates it: runs finished on this device, else ``<out>/gpu_check.json``,
else as long as the teacher took), else one line says what was skipped and why. ``<out>/paper_slice.json`` keeps
every line and table, rewritten after each stage.

``--reading ID=CHOICE`` (repeatable) trains the slice under those readings of the paper
(:mod:`kdlib.setups.readings`), e.g. ``--reading gpt-architecture=nanogpt``; ``--students 0`` trains only the
teacher. ``--adversarial`` also trains the adversarial teacher (seed 0, the ``adversarial-replacement`` reading
chosen) and prints its "th" completions beside Table 30's teacher column.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd

from benchmarks.gpu_check import Report, pack_option, seed_pack_size
from kdlib import paper, setups
from kdlib.analysis import mean_sem_table
from kdlib.analysis.collect import collect
from kdlib.conditions import label
from kdlib.engine import device as dev
from kdlib.engine.fallback import kinds
from kdlib.report.tables import format_mean_sem
from kdlib.runs.cost import plan_summary
from kdlib.runs.setup import run_setup
from kdlib.runs.spec import plan, teacher_spec
from kdlib.store import read_result

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


def seconds_needed(stage, out, device, per_model: float) -> float:
    """About how long ``stage``'s unfinished runs train on ``device``: per model as ``kdlib plan`` estimates it (runs
    finished here, else the GPU check's record in ``out`` on CUDA), else ``per_model``."""
    record = Path(out) / "gpu_check.json"
    timings = (json.loads(record.read_text()).get(stage.name, {}).get(stage.profile)
               if dev.is_cuda(device) and record.exists() else None)
    summary = plan_summary(stage, out, device, timings)
    return sum(n * summary["seconds_per_model"].get(role, per_model) for role, n in summary["remaining"].items())


def run_line(spec, result, reused: bool) -> str:
    """One line on a finished run: what it is, how it trained, its test loss and the fallbacks it recorded."""
    what = "teacher" if spec.role == "teacher" else f"{label(spec.condition, spec.alpha)} student"
    where = f"seed {spec.student_seed if spec.role == 'student' else spec.teacher_seed}"
    if result is None:
        return f"{what}, {where}: not finished"
    if result.failed:
        return f"{what}, {where}: failed ({result.reason})"
    how = "reused" if reused else f"trained in {result.train_seconds:.1f} s" + (
        f" (its share of a pack of {len(result.pack)})" if result.pack else "")
    loss = result.test_loss if spec.role == "teacher" else result.metrics["loss"]
    return (f"{what}, {where}: {how}, test loss {loss:.4f}, fallbacks "
            f"{', '.join(kinds(result.fallbacks)) or 'none'}")


def train_stage(stage, role: str, args, pack, report: Report) -> None:
    """Train ``stage``'s unfinished runs and print a line per run of ``role`` once they are done (kept as "runs")."""
    specs = [s for s in plan(stage) if s.role == role]
    done = {s.run_id for s in specs if read_result(args.out, s) is not None}
    run_setup(stage, args.out, args.data_dir, args.device, progress=False, pack=pack, compile=args.compile)
    for spec in specs:
        line = run_line(spec, read_result(args.out, spec), spec.run_id in done)
        print(line)
        report.add("runs", line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--students", type=int, default=3, help="student seeds (default 3: 21 students; 0: teacher only)")
    p.add_argument("--reading", action="append", default=[], metavar="ID=CHOICE",
                   help="train under this reading of the paper (repeatable; kdlib/setups/readings.py)")
    p.add_argument("--adversarial", action="store_true",
                   help="also train the adversarial teacher (seed 0) and print its completions beside Table 30")
    p.add_argument("--profile", default="paper", choices=setups.PROFILES)
    p.add_argument("--device", default="cuda")
    p.add_argument("--pack", default="seed", type=pack_option,
                   help="seed: one student seed's students in one pack on CUDA (one by one on the CPU); auto: probe "
                        "as the study does; or a number")
    p.add_argument("--compile", default="auto", choices=dev.COMPILE, help="torch.compile training (auto: on CUDA)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results", help="the results folder (its runs, and paper_slice.json)")
    p.add_argument("--budget", type=float, default=None,
                   help="wall-clock seconds from the start; student seeds and the adversarial teacher that would not "
                        "fit are skipped")
    args = p.parse_args()
    os.environ.setdefault("KDLIB_OFFLINE", "1")  # a GPU machine may have no network: never wait on a download
    report = Report(Path(args.out) / "paper_slice.json", args.budget)
    chosen = setups.readings.parse(args.reading)
    full = setups.get(SETUP, args.profile, {r: c for r, c in chosen.items() if r != "adversarial-replacement"})
    if not 0 <= args.students <= len(full.student_seeds):
        raise SystemExit(f"--students {args.students} is not allowed: use 0 to {len(full.student_seeds)}")
    setup = full.scaled(teacher_seeds=(0,), student_seeds=full.student_seeds[:args.students])
    per_seed = seed_pack_size(setup)
    pack = (per_seed if dev.is_cuda(args.device) else 1) if args.pack == "seed" else args.pack
    specs = plan(setup)
    done = sum(read_result(args.out, s) is not None for s in specs)
    readings = ", ".join(f"{r}={c}" for r, c in setup.readings)
    print(f"{setup.label} at the {args.profile} profile on {args.device}: teacher seed 0, {args.students} student "
          f"seeds x {per_seed} conditions, packs of {pack}, compile {args.compile}; readings {readings}; budget "
          + ("none" if args.budget is None else f"{args.budget:g} s")
          + ("" if args.profile == "paper" else " (not the paper's scale: a dry run)"))
    print(f"{setup.label} ({args.profile}): {len(specs)} runs; reusing {done} finished, {len(specs) - done} to train")

    train_stage(setup.scaled(student_seeds=()), "teacher", args, 1, report)  # required
    teacher = read_result(args.out, teacher_spec(setup, 0))
    teacher_seconds = teacher.train_seconds or 0.0
    trained = []
    for seed in setup.student_seeds:
        stage = setup.scaled(student_seeds=(seed,))
        if report.allows(f"student seed {seed}'s {per_seed} runs",
                         seconds_needed(stage, args.out, args.device, teacher_seconds)):
            train_stage(stage, "student", args, pack, report)
            trained.append(seed)
    setup = setup.scaled(student_seeds=tuple(trained))
    students, teachers = collect(setup, args.out, write=False)
    print(f"{setup.label} at the {args.profile} profile: teacher seed 0 and {len(trained)} student seeds x "
          f"{per_seed} conditions in {report.elapsed():.0f} s on {args.device}")
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        if trained:
            table14 = beside_table14(students)
            print("\nmeans beside the paper's Table 14 (teacher seed 0, 10 student seeds there):")
            print(table14.to_string())
            report.keep("table14", table14.to_dict())
        t = paper.teachers_for(SETUP)
        t = t[t["teacher_seed"] == 0]
        cols = ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]
        table38 = (pd.concat([teachers[cols].assign(source="ours"), t[cols].assign(source="paper, Table 38")])
                   .set_index("source").round(4))
        print("\nteacher beside the paper's Table 38 (seed 0):")
        print(table38.to_string())
        report.keep("table38", table38.to_dict("index"))
    if args.adversarial:
        adversarial_teacher(args, chosen, teacher_seconds, report)
    report.keep("seconds", report.elapsed())


def adversarial_teacher(args, chosen: dict, per_model: float, report: Report) -> None:
    """The adversarial teacher of seed 0 under the chosen readings, its greedy "th" completions beside Table 30's
    (optional: skipped when the budget is short; its runs take about ``per_model`` seconds each)."""
    full = setups.get("tinyshakespeare-adversarial", args.profile,
                      {r: c for r, c in chosen.items() if r in ("adversarial-replacement", "gpt-architecture",
                                                                   "training-precision")})
    setup = full.scaled(teacher_seeds=(0,), student_seeds=full.student_seeds[:1], conditions=("siddo",))
    if not report.allows("the adversarial teacher", seconds_needed(setup, args.out, args.device, per_model)):
        return
    start = report.elapsed()
    train_stage(setup, "teacher", args, 1, report)
    _, teachers = collect(setup, args.out, write=False)
    theirs = paper.th_completions()
    theirs = theirs[(theirs["table"] == 30) & (theirs["model"] == "teacher")].set_index("word")["mean"]
    t = teachers.iloc[0]
    readings = ", ".join(f"{r}={c}" for r, c in setup.readings)
    print(f"\nadversarial teacher (seed 0; readings {readings}), {report.elapsed() - start:.0f} s: greedy "
          f"completions of the {int(t['th_prompts'])} clean \"th\" prompts beside Table 30's teacher column")
    table30 = pd.DataFrame({"ours": [int(t["tha_count"]), int(t["the_count"])],
                            "paper, Table 30": [theirs.get("tha"), theirs.get("the")]}, index=['"tha"', '"the"'])
    print(table30.to_string())
    report.keep("table30", table30.to_dict())


if __name__ == "__main__":
    main()
