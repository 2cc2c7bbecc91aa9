"""Where the study notebooks are, wherever kdlib is installed: the one place ``kdlib study`` (and anything else that
executes them) finds a notebook.

A built kdlib (a wheel, ``pip install .``) carries them as package data, in ``kdlib/notebooks/`` (pyproject.toml
maps the checkout's ``notebooks/`` there, so they are not kept twice); a checkout (``pip install -e .``, or kdlib
on ``sys.path``) uses its own ``notebooks/``, the ones JupyterLab opens.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def folder() -> Path:
    """The folder of the study notebooks this kdlib runs: its package data, else its checkout's ``notebooks/``."""
    shipped = Path(str(files("kdlib") / "notebooks"))
    if shipped.is_dir():
        return shipped
    checkout = shipped.parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "notebooks").is_dir():
        return checkout / "notebooks"
    raise FileNotFoundError(f"no study notebooks beside kdlib in {shipped.parent}: install kdlib from its wheel "
                            f"or its checkout (pip install kdlib, or pip install -e .)")


def path(name: str) -> Path:
    """The study notebook ``name`` (``language.ipynb``, ``summary.ipynb``, ...)."""
    notebook = folder() / name
    if not notebook.is_file():
        raise FileNotFoundError(f"no study notebook {name} in {notebook.parent}")
    return notebook
