"""The project's folders, wherever a process starts: what notebooks resolve their paths against.

JupyterLab starts a notebook's kernel in the notebook's own folder (``notebooks/``, or ``results/<setup>/<profile>/``
for an executed copy), so a notebook cannot take its working directory for the project. The project root is:

1. ``$KDLIB_HOME``, if set;
2. else the checkout kdlib is imported from (the one ``pip install -e .`` installed, where ``pyproject.toml``
   sits beside the package);
3. else the working directory.

:func:`project_path` puts a notebook's relative ``out``/``figures`` (and ``None``: the defaults) under that root;
:func:`data_path` does the same for the data folder (``$KDLIB_DATA_DIR`` included). A path that starts with ``./``
or ``../`` is the notebook's own: relative to its folder (the kernel's working directory), which is how an executed
copy names the results folder it lies in, so that the folder can be moved whole. The command line keeps the usual
meaning of a relative path: relative to where the command runs.
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


def project_path(path, kind: str, own: bool = True) -> Path:
    """``path`` (``kind``: out, figures or data) for a notebook: absolute as given, ``./...`` or ``../...`` under the
    working directory (with ``own``: a notebook's parameter), any other relative path under the project root,
    ``None`` the project's default folder."""
    if kind not in DEFAULTS:
        raise ValueError(f"unknown kind of folder {kind!r}: allowed are {list(DEFAULTS)}")
    given = str(path if path is not None else DEFAULTS[kind])
    path = Path(given).expanduser()
    if path.is_absolute():
        return path
    if own and (given in (".", "..") or given.startswith(("./", "../"))):
        return (Path.cwd() / path).resolve()
    return project_root() / path


def data_path(path=None) -> Path:
    """The data folder for a notebook: ``path``, else ``$KDLIB_DATA_DIR`` (relative: to the project root, as
    ``run_all.sh`` reads it), else ``data/``, under the project root."""
    if path is not None:
        return project_path(path, "data")
    return project_path(os.environ.get("KDLIB_DATA_DIR"), "data", own=False)
