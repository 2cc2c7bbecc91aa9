"""The command line: python -m kdlib {list,launchers,plan,run,study,collect,report,calibrate,scorecard,summary,
export,audit,lab}.

Only ``--help`` and ``list`` answer without loading torch (at once). A user's
mistake (an unknown setup, a missing dataset, nothing to report) prints one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .runs import launchers
from . import setups
from .runs.suites import DEFAULTS, SUITES, suite
from .engine.checkpoint import EVERY
from .data.base import DatasetMissing, available, data_dir, data_status
from .setups.base import UnknownSetup
from .setups.readings import UnknownReading
from .setups.yours import SetupFileError

DESCRIPTION = """\
kdlib: the functional study of knowledge distillation (arXiv 2510.12615).
Train teachers and students (KD, SIDDO, RCD), measure teacher-student functional similarity, test it, and
compare every result with the paper's tables."""

EXAMPLES = """\
examples:
  python -m kdlib list --data-dir ../shared/data
  python -m kdlib plan tinyshakespeare-nanogpt --profile paper --device cuda
  python -m kdlib run tinyshakespeare-nanogpt --profile cpu --data-dir ../shared/data --launcher local
  python -m kdlib run svhn-resnet18 --profile paper --device cuda --pack auto
  python -m kdlib run tinyshakespeare-nanogpt --profile cpu --reading gpt-architecture=nanogpt
  python -m kdlib study --suite core --profile smoke --data-dir ../shared/data
  python -m kdlib report tinyshakespeare-nanogpt --profile cpu
  python -m kdlib scorecard --profile cpu
  python -m kdlib audit --teacher t.npy --student s.npy --control no_kd=c.npy --labels y.npy --out audit"""


class UserError(Exception):
    """A mistake in what the user asked for: reported in one line, exit status 2."""


def _setup_name(args) -> str:
    """The setup a command names: SETUP or --setup-from (exactly one)."""
    if bool(args.setup) == bool(args.setup_from):
        raise UserError("name one setup: SETUP (a name, an import path or a TOML file) or --setup-from REF")
    return args.setup or args.setup_from


def _pack(value: str):
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not allowed: use a positive integer or 'auto'")
    return size


def _setup_args(p: argparse.ArgumentParser, data: bool = True, several: bool = False) -> None:
    if several:
        p.add_argument("setups", nargs="*", metavar="SETUP", help="setups (default: every collected one)")
        p.add_argument("--reading", action="append", default=[], metavar="ID=CHOICE",
                       help="every setup under this reading of the paper (repeatable; an analysis reading re-analyses "
                            "the collected runs, stored beside the default analysis)")
    else:
        p.add_argument("setup", nargs="?", help="setup name (see: python -m kdlib list), or your own: an import path "
                                                 "(mypkg.kd:my_setup) or a TOML file")
        p.add_argument("--setup-from", metavar="REF", help="your own setup: an import path (mypkg.kd:my_setup) or a "
                                                          "TOML file (the same as giving it as SETUP)")
        p.add_argument("--reading", action="append", default=[], metavar="ID=CHOICE",
                       help="read an ambiguity of the paper another way than the default (repeatable; `python -m "
                            "kdlib list SETUP` shows the readings a setup uses, the README lists them all)")
    p.add_argument("--profile", default="cpu", choices=setups.PROFILES, help="scale of the setup (default: cpu)")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    if data:
        p.add_argument("--data-dir", default=None, help="data folder (default: $KDLIB_DATA_DIR or data/)")
        p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="training device (default: cpu)")


def _run_args(p: argparse.ArgumentParser) -> None:
    described = "; ".join(f"{n}: {launchers.LAUNCHERS.meta(n)['help']}" for n in launchers.LAUNCHERS)
    p.add_argument("--launcher", default=DEFAULTS["launcher"], choices=launchers.LAUNCHERS.names(),
                   help=f"{described} (default: {DEFAULTS['launcher']})")
    p.add_argument("--workers", type=int, default=DEFAULTS["workers"],
                   help=f"runs at once for local/slurm/ray (default {DEFAULTS['workers']})")
    p.add_argument("--pack", type=_pack, default=DEFAULTS["pack"],
                   help="students of a teacher trained together in one vectorised step: a number, or auto (the "
                        "largest pack that raises models per hour, probed once on CUDA; 1 on CPU). Default 1")
    p.add_argument("--compile", default=DEFAULTS["compile"], choices=("auto", "on", "off"),  # engine.device.COMPILE
                   help="torch.compile the training steps: auto (on CUDA only), on or off (default auto)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per process (default 1; 0: torch's default)")
    p.add_argument("--log-to", default=None, metavar="{tensorboard,mlflow}",
                   help="mirror each run's loss curve and result, and each setup's analysis, to TensorBoard event "
                        "files or a local MLflow store under OUT/tracking/ (default: off)")
    p.add_argument("--trust-checkpoints", action="store_true",
                   help="read teacher checkpoint files that hold pickled objects beyond tensors (they can run code "
                        "when loaded; by default such a file is refused)")
    p.add_argument("--checkpoint-every", type=float, default=EVERY / 60, metavar="MINUTES",
                   help=f"minutes between a training run's checkpoints, from which a killed or preempted run "
                        f"resumes (default {EVERY / 60:g}; 0: only when SIGTERM asks, as slurm does before it "
                        f"requeues a job)")
    for option in launchers.options():  # each launcher's own options (kdlib.runs.launchers.register)
        p.add_argument(option.flag, type=option.type, default=option.default, choices=option.choices,
                       help=option.help)


def _audit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, metavar="FILE",
                   help="teacher logits [N, K] or [N, L, K] (.npy, .npz, .pt or .csv)")
    p.add_argument("--student", required=True, action="append", metavar="FILE",
                   help="student logits; repeat for several seeds")
    p.add_argument("--control", action="append", default=[], metavar="[NAME=]FILE",
                   help="control logits, e.g. the student trained without KD or with label smoothing; repeat "
                        "NAME=FILE with the same NAME for several seeds of one control")
    p.add_argument("--labels", required=True, metavar="FILE", help="labels [N] or [N, L]")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap replicates when a side has a single model (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--alpha-level", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--class-names", metavar="FILE", help="text file with one class name per line, label order")
    p.add_argument("--ignore-index", type=int, default=-100,
                   help="the label of padding positions, left out for every model (default -100, PyTorch's)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdlib", description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="every setup, and whether its data is here")
    listing.add_argument("setups", nargs="*", metavar="SETUP", help="only these setups (default: all)")
    listing.add_argument("--data-dir", default=None, help="data folder (default: $KDLIB_DATA_DIR or data/)")
    listing.add_argument("--ready", action="store_true",
                         help="print only the names of the setups whose data is here or downloads itself")
    known = sub.add_parser("launchers", help="every launcher and its own options")
    known.add_argument("--env", action="store_true", help="print 'VARIABLE --flag' per option run_all.sh passes on")
    planning = sub.add_parser("plan", help="models a setup trains, how many are finished, and device-hours left")
    _setup_args(planning, data=False)
    planning.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device to estimate for")
    run = sub.add_parser("run", help="train (or resume) every run of a setup, then collect it")
    _setup_args(run)
    _run_args(run)
    study = sub.add_parser("study", help="a suite end to end: train, notebooks, summary, verdicts, scorecard")
    study.add_argument("names", nargs="*", metavar="SETUP", help="setups to run instead of a suite (names, import "
                                                                 "paths or TOML files)")
    study.add_argument("--setup-from", action="append", default=[], metavar="REF",
                       help="your own setup (an import path or a TOML file; repeatable), run beside SETUPs")
    study.add_argument("--suite", default="core", help=f"a named suite: {', '.join(SUITES)} (default core)")
    study.add_argument("--profile", default=DEFAULTS["profile"], choices=setups.PROFILES,
                       help="scale of every setup (default: cpu)")
    study.add_argument("--out", default="results", help="results folder (default: results)")
    study.add_argument("--figures", default="figures", help="folder for the artefacts (default: figures)")
    study.add_argument("--data-dir", default=None, help="data folder (default: $KDLIB_DATA_DIR or data/)")
    study.add_argument("--device", default=DEFAULTS["device"], choices=("cpu", "cuda"), help="training device")
    study.add_argument("--reading", action="append", default=[], metavar="ID=CHOICE",
                       help="a reading of the paper, for every setup that uses it (repeatable)")
    study.add_argument("--no-summary", action="store_true", help="skip the summary notebook")
    study.add_argument("--notebook-jobs", type=int, default=2, help="study notebooks executed at once (default 2)")
    _run_args(study)
    _setup_args(sub.add_parser("collect", help="gather a setup's finished runs into tables"), data=False)
    report = sub.add_parser("report", help="tables (CSV, LaTeX) and figures (PDF, PNG) of a setup's collected runs "
                                           "(run or collect gathers them), beside the paper")
    _setup_args(report, data=False)
    report.add_argument("--figures", default="figures", help="folder for the artefacts (default: figures)")
    cal = sub.add_parser("calibrate", help="how often the verdict rule says supported when KD does nothing, and "
                                           "how large a gain it needs (from a setup's collected runs)")
    _setup_args(cal, data=False)
    cal.add_argument("--figures", default="figures", help="folder for the power figure (default: figures)")
    cal.add_argument("--draws", type=int, default=1000, help="null draws per teacher seed and alpha (default 1000)")
    score = sub.add_parser("scorecard", help="claim by claim: does this run reproduce the paper?")
    _setup_args(score, data=False, several=True)
    summary = sub.add_parser("summary", help="one verdict line per collected setup, teacher seed and alpha")
    _setup_args(summary, data=False, several=True)
    export = sub.add_parser("export", help="write a setup's test-set logits as .npy files for the audit command")
    _setup_args(export)
    export.add_argument("--dest", required=True, help="folder for the exported outputs")
    _audit_args(sub.add_parser("audit", help="functional-transfer report for any teacher/student from saved logits"))
    sub.add_parser("lab", help="JupyterLab on this checkout (notebooks/ stays as tracked, its runs kept beside it; as "
                               "root too); other arguments go to jupyter lab")
    return p


def cmd_list(args) -> int:
    root = data_dir(args.data_dir)
    names = args.setups or setups.names()
    chosen = [setups.get(name, "paper") for name in names]
    if args.ready:
        for s in chosen:
            if available(s.dataset, root):
                print(s.name)
        return 0
    print(f"{len(chosen)} setups; data folder {root.resolve()}\n")
    for s in chosen:
        readings = ", ".join(f"{r}={c}" for r, c in s.readings)
        print(f"{s.name:42s} {s.modality:9s} {data_status(s.dataset, root)}\n{'':52s}{s.description}\n"
              f"{'':52s}readings: {readings} (--reading ID=CHOICE)")
    return 0


def cmd_plan(args) -> int:
    from .runs.cost import plan_summary
    setup = setups.get(_setup_name(args), args.profile, args.reading)
    timings = None
    record = Path(args.out) / "gpu_check.json"
    if args.device.startswith("cuda") and record.exists():  # the GPU check's timings are a GPU's
        timings = json.loads(record.read_text()).get(setup.name, {}).get(setup.profile)
    p = plan_summary(setup, args.out, args.device, timings)
    print(f"{setup.label} at the {setup.profile} profile, on {args.device}:")
    for role, c in p["counts"].items():
        print(f"  {role}s: {c['planned']} planned, {c['finished']} finished, {c['failed']} failed, "
              f"{p['remaining'][role]} to train"
              + (f"; {p['seconds_per_model'][role]:.1f} s each ({p['source'][role]})"
                 if role in p["seconds_per_model"] else ""))
    if p["device_hours"] is not None:
        print(f"  estimated: {p['device_hours']:.2f} device-hours left")
    else:
        print(f"  no per-model time measured on {args.device} yet: train a few models of this setup there "
              f"(or run benchmarks/gpu_check.sh) to get an estimate")
    return 0


def _launcher_options(args) -> dict:
    """The chosen launcher's own options from the command line."""
    return {o.name: getattr(args, o.flag[2:].replace("-", "_")) for o in launchers.options(args.launcher)}


def cmd_launchers(args) -> int:
    if args.env:  # run_all.sh: one "VARIABLE --flag" line per option that a variable sets
        print("\n".join(f"{o.env} {o.flag}" for o in launchers.options() if o.env))
        return 0
    for name in launchers.LAUNCHERS:
        meta = launchers.LAUNCHERS.meta(name)
        print(f"{name:8s} {meta['help']}")
        for o in meta["options"]:
            env = f" (run_all.sh: {o.env})" if o.env else ""
            print(f"{'':8s}   {o.flag} {o.type.__name__.upper()}: {o.help}{env}")
    return 0


def cmd_run(args) -> int:
    setup = setups.get(_setup_name(args), args.profile, args.reading)  # a mistyped name fails before torch loads
    from .analysis.collect import collect
    from .runs.setup import run_setup
    from .runs.workspace import Workspace
    ws = Workspace.resolve(args.out, args.data_dir, args.device, args.compile, args.threads or None,
                           args.checkpoint_every * 60, args.log_to)
    run_setup(setup, ws, launcher=args.launcher, workers=args.workers, pack=args.pack, **_launcher_options(args))
    students, teachers = collect(setup, args.out, log_to=ws.log_to)
    _say_collected(setup, students, teachers, args.out)
    return 0


def cmd_study(args) -> int:
    args.names = [*args.names, *args.setup_from]
    suite(args.names or args.suite)  # a mistyped setup or suite fails before torch loads
    from .study import run_study
    return run_study(args.names or args.suite, args.profile, args.data_dir, args.out, args.figures, args.device,
                     args.launcher, args.workers, args.pack, args.compile, args.reading, not args.no_summary,
                     args.notebook_jobs, threads=args.threads or None, checkpoint_every=args.checkpoint_every * 60,
                     log_to=args.log_to, **_launcher_options(args))


def _say_collected(setup, students, teachers, out) -> None:
    """One line: how many student and teacher runs the tables hold, and where they are."""
    from .store import setup_dir

    def count(n, noun):
        return f"{n} {noun}{'' if n == 1 else 's'}"
    print(f"{setup.label} ({setup.profile}): {count(len(students), 'student run')} and "
          f"{count(len(teachers), 'teacher')} collected in {setup_dir(out, setup)}")


def _collected(setup, out, fresh: bool = True):
    """A setup's collected tables: gathered from the store and written (``fresh``), or as ``run``/``collect`` last
    wrote them (gathered when there are none yet); a setup with no finished runs is an error."""
    from .store import read_table, setup_dir
    from .analysis.collect import gather, write_collected
    folder = setup_dir(out, setup)
    if not fresh and list(folder.glob("runs.*")):
        students, teachers, failed = read_table(folder / "runs"), read_table(folder / "teachers"), None
    else:
        students, teachers, failed = gather(setup, out)
    if students.empty or not (students["condition"] == "kd").any():
        readings = "".join(f" --reading {r}" for r in setup.tag.split("+")[1:])
        raise UserError(f"nothing to report: {setup.label} has no finished KD student runs at the {setup.profile} "
                        f"profile in {Path(out).resolve()} (train them with: python -m kdlib run {setup.name} "
                        f"--profile {setup.profile}{readings})")
    if failed is not None:
        write_collected(setup, out, students, teachers, failed)
    return students, teachers


def cmd_collect(args) -> int:
    setup = setups.get(_setup_name(args), args.profile, args.reading)
    students, teachers = _collected(setup, args.out)
    _say_collected(setup, students, teachers, args.out)
    return 0


def cmd_report(args) -> int:
    from .analysis import collected_analysis
    from .report import build_report, calibration_warning
    from .runs import provenance
    from .store import figures_dir, setup_dir
    setup = setups.get(_setup_name(args), args.profile, args.reading)
    students, teachers = _collected(setup, args.out, fresh=False)  # what run/collect collected, and its analysis
    rep = build_report(students, setup.label, figures_dir(args.figures, setup), setup=setup, teachers=teachers,
                       analysis=collected_analysis(setup_dir(args.out, setup)))
    print(f"{setup.label} ({setup.profile}): artefacts in {figures_dir(args.figures, setup)}")
    for line in rep["verdicts"] + calibration_warning(setup_dir(args.out, setup), setup.label):
        print("  " + line)
    made = setup_dir(args.out, setup) / provenance.FILE
    if made.exists():
        print("  " + provenance.describe(json.loads(made.read_text())))
    return 0


def cmd_calibrate(args) -> int:
    from .analysis import options
    from .report import CALIBRATION, NULL_LEVEL, calibration_report
    from .store import figures_dir, setup_dir
    setup = setups.get(_setup_name(args), args.profile, args.reading)
    students, _ = _collected(setup, args.out, fresh=False)
    _, summary = calibration_report(setup, students, setup_dir(args.out, setup), figures_dir(args.figures, setup),
                                    options(setup)["rule"], args.draws)
    print(f"{setup.label} ({setup.profile}): null rate of \"supported\" (KD and controls exchanged within pairs) "
          f"{summary['null']:.3f} (95% upper bound up to {summary['null_high']:.3f})"
          + (f": ABOVE {NULL_LEVEL}, the rule is not calibrated here" if summary["null"] > NULL_LEVEL else ""))
    at10 = {e: p for (n, e), p in summary["power"].items() if n == 10}
    print("  power at 10 seeds: " + ", ".join(f"{e:g}: {p:.2f}" for e, p in sorted(at10.items())))
    print(f"  {setup_dir(args.out, setup) / 'analysis' / CALIBRATION} and "
          f"{figures_dir(args.figures, setup) / 'power.pdf'}")
    return 0


def _under_readings(args) -> list[str] | None:
    """With ``--reading``: every named (else every collected) setup collected under those readings (the runs are
    the same where the readings are analysis readings; their tables and analysis go beside the default's), as
    labels; None without ``--reading``."""
    if not args.reading:
        return None
    from .analysis.collect import collect
    from .report import find_collected
    from .store import setup_dir
    chosen = setups.readings.parse(args.reading)
    names = args.setups or sorted({label.split("+")[0] for label, profile, _ in find_collected(args.out)
                                   if profile == args.profile})
    labels = []
    for name in names:
        uses = dict(setups.get(name, args.profile).readings)
        setup = setups.get(name, args.profile, {r: c for r, c in chosen.items() if r in uses})
        if list(setup_dir(args.out, setup).glob("runs.*")) or len(collect(setup, args.out)[0]):
            labels.append(setup.label)
    return labels


def cmd_scorecard(args) -> int:
    from .analysis.scorecard import scorecard, write_scorecard
    labels = _under_readings(args)
    card = scorecard(labels if labels is not None else (args.setups or None), args.profile, args.out)
    paths = write_scorecard(card, args.out)
    print(card["summary"])
    print(f"scorecard: {paths[0]} and {paths[1]}")
    return 0


def cmd_summary(args) -> int:
    from .report import verdict_summary
    labels = _under_readings(args)
    lines = verdict_summary(args.out, args.profile, labels if labels is not None else args.setups)
    if lines is None:
        raise UserError(f"nothing collected at the {args.profile} profile in {Path(args.out).resolve()}")
    print("\n".join(lines))
    return 0


def cmd_export(args) -> int:
    from .runs.export import export_outputs
    from .runs.workspace import Workspace
    setup = setups.get(_setup_name(args), args.profile, args.reading)
    ws = Workspace.resolve(args.out, args.data_dir, args.device)
    print(f"outputs in {export_outputs(setup, ws, args.dest)}")
    return 0


def parse_controls(specs: list[str]) -> dict[str, list[str]]:
    """``NAME=FILE`` items group into control NAME (repeat NAME for seeds); a bare FILE is its own control."""
    groups: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not (sep and name and path) or any(ch in name for ch in "/\\") or Path(spec).exists():
            name, path = Path(spec).stem, spec
            name = name if name not in groups else f"{name}_{len(groups) + 1}"
        groups.setdefault(name, []).append(path)
    return groups


def cmd_audit(args) -> int:
    from .audit import audit
    names = None
    if args.class_names:
        names = [line.strip() for line in Path(args.class_names).read_text().splitlines() if line.strip()]
    report = audit(args.teacher, args.student, args.labels, controls=parse_controls(args.control), out=args.out,
                   n_boot=args.bootstrap, seed=args.seed, alpha_level=args.alpha_level, class_names=names,
                   ignore_index=args.ignore_index)
    print(report["verdict"]["text"])
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def cmd_lab(args) -> int:
    """``jupyter lab`` in the working directory with the project's contents manager
    (:class:`kdlib.notebook.stored.RunCopies`: ``notebooks/`` stays as tracked, each run kept in a git-ignored copy
    beside it), the tracked notebooks signed (no "not trusted" warning), ``--allow-root`` when run as root, and the
    user's own arguments after these."""
    import os
    from .notebook import stored
    from .paths import project_root
    stored.trust(project_root())
    root_user = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    os.execv(sys.executable, [sys.executable, "-m", "jupyterlab", *root_user,
                              f"--ServerApp.contents_manager_class={stored.__name__}.RunCopies", *args.jupyter])


COMMANDS = {"list": cmd_list, "launchers": cmd_launchers, "plan": cmd_plan, "run": cmd_run, "study": cmd_study,
            "collect": cmd_collect, "report": cmd_report, "calibrate": cmd_calibrate,
            "scorecard": cmd_scorecard, "summary": cmd_summary, "export": cmd_export, "audit": cmd_audit,
            "lab": cmd_lab}


def main(argv=None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if getattr(args, "trust_checkpoints", False):
        os.environ["KDLIB_TRUST_CHECKPOINTS"] = "1"  # for this process and every worker it starts (runs.weights)
    if extra and args.command != "lab":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    args.jupyter = extra
    user_errors = (UserError, DatasetMissing, UnknownSetup, UnknownReading, SetupFileError)
    if getattr(args, "log_to", None):  # a bad tracker or a missing package, before torch loads
        from . import tracking
        try:
            tracking.check(args.log_to)
        except ValueError as e:
            print(f"kdlib {args.command}: error: {e}", file=sys.stderr)
            return 2
    if args.command == "audit":  # the audit's input files are the user's: any problem with them is theirs
        user_errors += (ValueError, FileNotFoundError)
    try:
        return COMMANDS[args.command](args)
    except user_errors as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"kdlib {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
