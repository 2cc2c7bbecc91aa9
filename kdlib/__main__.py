"""Command line: ``python -m kdlib {list,run,collect,report,export,audit}``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import launchers, setups
from .store import figures_dir, setup_dir
from .study import collect, run_setup


def _setup_args(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("setup", help="setup name (see `python -m kdlib list`)")
    p.add_argument("--profile", default="cpu", choices=setups.PROFILES, help="scale of the setup (default: cpu)")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    if data:
        p.add_argument("--data-dir", default=None, help="data folder (default: $KDLIB_DATA_DIR or data/)")
        p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="training device")
        p.add_argument("--launcher", default="serial", choices=launchers.LAUNCHERS,
                       help="serial: one run after another; local: a process pool; slurm: submitit job arrays; "
                            "ray: Ray tasks")
        p.add_argument("--workers", type=int, default=2,
                       help="runs at once for local/slurm/ray (default 2)")
        p.add_argument("--gpus-per-run", type=int, default=0, help="GPUs each run asks for (slurm, ray)")
        p.add_argument("--slurm-partition", default=None, help="SLURM partition")
        p.add_argument("--slurm-cluster", default=None, choices=("slurm", "local"),
                       help="force submitit's executor (default: SLURM if sbatch exists, else local)")
        p.add_argument("--time-limit", type=int, default=60, help="minutes per SLURM task (default 60)")
        p.add_argument("--ray-address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
        p.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads per process (default 1; 0: torch's default)")
        p.add_argument("--pack", type=int, default=1,
                       help="students of a teacher trained together in one vectorised step (default 1: one by "
                            "one; e.g. 8 for small models on a GPU)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdlib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list every setup")
    _setup_args(sub.add_parser("run", help="train (or resume) every run of a setup, then collect and report"))
    _setup_args(sub.add_parser("collect", help="gather a setup's finished runs into tables"), data=False)
    r = sub.add_parser("report", help="tables (CSV, LaTeX) and figures (PDF, PNG) of a setup's runs")
    _setup_args(r, data=False)
    r.add_argument("--figures", default="figures", help="folder for the artefacts (default: figures)")
    e = sub.add_parser("export", help="write a setup's test-set logits as .npy files for `kdlib audit`")
    _setup_args(e)
    e.add_argument("--dest", required=True, help="folder for the exported outputs")
    try:
        from . import audit
    except ImportError:
        audit = None
    if audit is not None:
        a = sub.add_parser("audit", help="functional-transfer report for any teacher/student from saved logits")
        audit.add_arguments(a)
    return p


def report(setup: setups.Setup, out, figures) -> Path:
    from .report import build_report
    students, _ = collect(setup, out)
    dest = figures_dir(figures, setup)
    build_report(students, setup.name, dest)
    return dest


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "list":
        for name in setups.names():
            s = setups.get(name, "paper")
            print(f"{name:45s} {s.modality:9s} {s.description}")
        return 0
    if args.command == "audit":
        from . import audit
        return audit.main(args)
    try:
        setup = setups.get(args.setup, args.profile)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "export":
        from .study import export_outputs
        print(f"outputs in {export_outputs(setup, args.out, args.dest, args.data_dir, args.device)}")
        return 0
    if args.command == "run":
        options = {}
        if args.launcher == "slurm":
            options = dict(partition=args.slurm_partition, gpus_per_run=args.gpus_per_run,
                           time_limit_min=args.time_limit, cluster=args.slurm_cluster)
        elif args.launcher == "ray":
            options = dict(gpus_per_run=args.gpus_per_run, address=args.ray_address)
        run_setup(setup, args.out, args.data_dir, args.device, launcher=args.launcher, workers=args.workers,
                  threads=args.threads or None, pack=args.pack, **options)
    students, teachers = collect(setup, args.out)
    print(f"{setup.name} ({setup.profile}): {len(students)} student runs, {len(teachers)} teachers "
          f"collected in {setup_dir(args.out, setup)}")
    if args.command == "report":
        print(f"artefacts in {report(setup, args.out, args.figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
