"""Executed notebooks that open as they ran, wherever the results folder goes.

``kdlib study`` executes each notebook with papermill (:func:`start`) in the executed copy's own folder, on a kernel
of the interpreter that runs the study, with the path parameters :func:`portable`: a folder inside the results folder
is named relative to the copy (``./...`` or ``../...``, which :func:`kdlib.paths.project_path` resolves against the
kernel's folder), so the results folder can be moved, zipped or opened on another machine whole. Once it has run,
:func:`finish` signs the copy for the user who ran it (what ``jupyter trust`` does: JupyterLab then renders its widgets
from the widget state papermill stored, without running anything) and, for the summary, writes an HTML export beside
it that reads with no server (:func:`to_html`). All of it needs the ``notebooks`` extra (:func:`missing`).
"""
from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..store import write_text

PATHS = ("out", "figures", "data_dir")  #: the notebooks' parameters that name folders
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: What executing, signing and exporting a notebook imports: the ``notebooks`` extra's (pyproject.toml)
NEEDS = ("papermill", "ipykernel", "nbconvert", "ipywidgets")


def missing() -> str | None:
    """Why this environment cannot execute the study notebooks, in one line naming the extra to install; None if
    it can."""
    absent = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    return (f"executing the study notebooks needs {', '.join(absent)}: pip install 'kdlib[notebooks]'"
            if absent else None)


def portable(parameters: dict, dest: Path, results: Path) -> dict:
    """``parameters`` with every folder (:data:`PATHS`) inside ``results`` relative to ``dest``'s folder
    (``./``- or ``../``-prefixed), every other one absolute; ``None`` stays ``None`` (the project's default)."""
    here, results = Path(dest).resolve().parent, Path(results).resolve()
    out = dict(parameters)
    for key in PATHS:
        if out.get(key) is None:
            continue
        path = Path(out[key]).expanduser().resolve()
        inside = path == results or results in path.parents
        out[key] = _relative(path, here) if inside else str(path)
    return out


def _relative(path: Path, here: Path) -> str:
    rel = os.path.relpath(path, here)
    return rel if rel.startswith("..") else f"./{rel}" if rel != "." else "."


def start(notebook: Path, dest: Path, parameters: dict) -> tuple[subprocess.Popen, Path]:
    """Start papermill on ``notebook`` -> ``dest``, its kernel this interpreter (:func:`_kernels`) in ``dest``'s
    folder (as JupyterLab starts it); the log goes beside the executed copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "papermill", "--no-progress-bar", "--log-level", "WARNING",
            "--cwd", str(dest.parent), str(notebook), str(dest)]
    for key, value in parameters.items():
        args += ["-p", key, value] if isinstance(value, str) else ["-y", f"{key}: {json.dumps(value)}"]
    log = dest.with_suffix(".log")
    jupyter_path = os.pathsep.join(filter(None, (_kernels(), os.environ.get("JUPYTER_PATH"))))
    env = {**os.environ, "JUPYTER_PATH": jupyter_path}
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env), log


@functools.cache
def _kernels() -> str:
    """A Jupyter data folder (for ``JUPYTER_PATH``, searched first) whose ``python3`` kernel, the one the notebooks
    name, is this interpreter: an executed notebook must import the kdlib that runs the study, not the one a
    ``python3`` kernel installed elsewhere (``ipykernel install --user``) starts. Removed when the process ends."""
    from ipykernel.kernelspec import KERNEL_NAME, write_kernel_spec
    folder = tempfile.mkdtemp(prefix="kdlib-kernels-")
    atexit.register(shutil.rmtree, folder, True)
    write_kernel_spec(Path(folder) / "kernels" / KERNEL_NAME)
    return folder


def finish(dest: Path, html: bool = False) -> list[Path]:
    """Sign the executed ``dest`` (:func:`sign`) and, with ``html``, write its HTML export beside it; returns what
    was written besides the signature."""
    sign(dest)
    return [to_html(dest)] if html else []


def sign(path: Path) -> None:
    """Trust ``path`` for this user, as ``jupyter trust`` does (the signature goes to Jupyter's signature store)."""
    import nbformat
    from nbformat.sign import NotebookNotary
    notebook = nbformat.read(path, as_version=4)
    NotebookNotary().sign(notebook)


def to_html(path: Path) -> Path:
    """``path`` as a self-contained HTML page beside it: widget outputs show their static fallback (the explorer's
    view as it ran, :func:`kdlib.notebook.explorer.explore`), since live widgets would need a kernel or a CDN."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.utils.base import NbConvertBase
    from traitlets.config import Config
    config = Config()
    config.NbConvertBase.display_data_priority = [m for m in NbConvertBase().display_data_priority
                                                  if m != WIDGET_VIEW]
    exporter = HTMLExporter(config=config)
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata.pop("widgets", None)  # no widget manager script: the static fallbacks stand alone
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": Path(path).stem}})
    dest = Path(path).with_suffix(".html")
    write_text(dest, body)
    return dest
