"""The project's folders, wherever a process starts: what notebooks resolve their paths against.

JupyterLab starts a notebook's kernel in the notebook's own folder (``notebooks/``, or ``results/<setup>/<profile>/``
for an executed copy), so a notebook cannot take its working directory for the project. The project root is:

1. ``$KDLIB_HOME``, if set;
2. else the checkout kdlib is imported from (the one ``pip install -e .`` installed, where ``pyproject.toml``
   sits beside the package);
3. else the working directory.

:func:`project_path` puts a notebook's relative ``out``/``figures`` (and ``None``: the defaults) under that root;
:func:`data_path` does the same for the data folder (``$KDLIB_DATA_DIR`` included). The command line keeps the
usual meaning of a relative path: relative to where the command runs.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {"out": "results", "figures": "figures", "data": "data"}


def project_root() -> Path:
    """The project folder: ``$KDLIB_HOME``, else the checkout kdlib lives in, else the working directory."""
    if os.environ.get("KDLIB_HOME"):
        return Path(os.environ["KDLIB_HOME"]).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists() and (checkout / "kdlib").is_dir():
        return checkout
    return Path.cwd()


def project_path(path, kind: str) -> Path:
    """``path`` (``kind``: out, figures or data) for a notebook: absolute as given, relative under the project root,
    ``None`` the project's default folder of that kind."""
    if kind not in DEFAULTS:
        raise ValueError(f"unknown kind of folder {kind!r}: allowed are {list(DEFAULTS)}")
    path = Path(path if path is not None else DEFAULTS[kind]).expanduser()
    return path if path.is_absolute() else project_root() / path


def data_path(path=None) -> Path:
    """The data folder for a notebook: ``path``, else ``$KDLIB_DATA_DIR``, else ``data/``, under the project root."""
    return project_path(path if path is not None else os.environ.get("KDLIB_DATA_DIR"), "data")
