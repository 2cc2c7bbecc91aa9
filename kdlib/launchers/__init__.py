"""Launchers map ``run_one`` over a setup's specs: teachers first, then their students.

Each launcher is a function ``launch(jobs, out, data_dir, device, workers, progress)`` where ``jobs`` is a
list of ``(spec, teacher_spec_or_None)`` that are all independent of each other. ``kdlib.runs.run_setup``
calls it twice: once for the teachers, once for the students. kdlib's core never imports an engine;
optional engines live in their own modules and are imported only when chosen.
"""
from __future__ import annotations

import importlib

LAUNCHERS = ("serial", "local")


def get(name: str):
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}: allowed launchers are {list(LAUNCHERS)}")
    return importlib.import_module(f"{__name__}.{name}").launch
