"""Launchers map ``kdlib.runs.run.run_job`` over a setup's jobs; ``kdlib.runs.setup.run_setup`` calls them.

Each launcher is a function ``launch(jobs, out, data_dir, device, workers, progress)`` where ``jobs`` is a
list of ``(job, teacher_spec_or_None)`` that are all independent of each other; a job is one spec, or a tuple
of specs trained together (``--pack``). ``run_setup`` calls it twice: once for the teachers, once for the
students. Engine-specific options (``partition``, ``gpus_per_run``, ``time_limit_min``, ``address``) are
passed as keyword arguments. kdlib's core never imports an engine; ``slurm`` (submitit) and ``ray`` live in
their own modules, are imported only when chosen, and their packages are optional
(requirements-launchers.txt). A new launcher is one module here with a ``launch`` function, plus its name in
:data:`LAUNCHERS`.
"""
from __future__ import annotations

import importlib

LAUNCHERS = ("serial", "local", "slurm", "ray")


def get(name: str):
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}: allowed launchers are {list(LAUNCHERS)}")
    try:
        return importlib.import_module(f"{__name__}.{name}").launch
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"launcher {name!r} needs the optional package {e.name!r}: "
                                  f"pip install -r requirements-launchers.txt") from e
