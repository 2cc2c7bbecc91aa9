"""Launchers map :func:`kdlib.runs.run.run_job` over a setup's jobs; :func:`kdlib.runs.setup.run_setup` calls them.

A launcher is a function ``launch(jobs, ws, workers, progress, desc, **options)``: ``jobs`` is a list of ``(job,
teacher_spec_or_None)``, all independent of each other (a job is one spec, or a tuple of specs trained together,
``--pack``), and ``ws`` the command's :class:`~kdlib.runs.workspace.Workspace`. ``run_setup`` calls it twice: once
for the teachers, once for the students. A launcher declares its own :class:`Option` s where it is registered;
the CLI makes each a flag, ``run_all.sh`` reads each from its environment variable, and the chosen launcher gets
them as keyword arguments. kdlib's core never imports an engine: ``slurm`` (submitit) and ``ray`` are imported only
when chosen, and their packages are optional (requirements-launchers.txt). A new launcher is one module with a
``launch`` function and one :func:`register` call.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...registry import Registry


@dataclass(frozen=True)
class Option:
    """One launcher option: ``name``, the keyword ``launch`` takes; ``flag``, the command line's; ``env``, the
    variable ``run_all.sh`` reads it from (None: none); ``type``, ``default``, ``help`` and ``choices`` as in
    argparse."""
    name: str
    flag: str
    help: str
    type: type = str
    default: object = None
    env: str | None = None
    choices: tuple | None = None


LAUNCHERS = Registry("launcher")


def register(name: str, launch, options: tuple[Option, ...] = (), help: str = "") -> None:
    """Register ``launch`` (the function, or its ``"module:name"`` path) under ``name`` with its options."""
    LAUNCHERS.register(name, launch, options=tuple(options), help=help)


def get(name: str):
    """The ``launch`` function of launcher ``name`` (its optional engine imported now)."""
    try:
        return LAUNCHERS[name]
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"launcher {name!r} needs the optional package {e.name!r}: "
                                  f"pip install -r requirements-launchers.txt") from e


def options(name: str | None = None) -> list[Option]:
    """The options of launcher ``name``, or of every launcher (each flag once, in registration order)."""
    names = [name] if name is not None else LAUNCHERS.names()
    seen, out = set(), []
    for n in names:
        for option in LAUNCHERS.meta(n)["options"]:
            if option.flag not in seen:
                seen.add(option.flag)
                out.append(option)
    return out


GPUS = Option("gpus_per_run", "--gpus-per-run", "GPUs each run asks for (slurm, ray)", int, 0, env="GPUS_PER_RUN")
register("serial", f"{__name__}.serial:launch", help="one run after another")
register("local", f"{__name__}.local:launch", help="a process pool")
register("slurm", f"{__name__}.slurm:launch", help="submitit job arrays", options=(
    GPUS,
    Option("partition", "--slurm-partition", "SLURM partition", env="SLURM_PARTITION"),
    Option("cluster", "--slurm-cluster", "force submitit's executor (default: SLURM if sbatch exists, else local)",
           choices=("slurm", "local")),
    Option("time_limit_min", "--time-limit", "minutes per SLURM task (default 60)", int, 60, env="TIME_LIMIT")))
register("ray", f"{__name__}.ray:launch", help="Ray tasks", options=(
    GPUS, Option("address", "--ray-address", "Ray cluster address (default: $RAY_ADDRESS or local)")))
