"""The form the tracked notebooks (``notebooks/*.ipynb``) are stored in, and JupyterLab's contents manager that keeps
them in it, so that Run All and save in ``notebooks/`` leave ``git status`` clean.

The form: nbformat 4.5 as nbformat writes it (what JupyterLab 4 writes), a cell id on every cell, the ipykernel
kernelspec, no outputs or execution counts, and no session metadata (execution times, collapsed or scrolled outputs,
the kernel's language_info details, widget state); a cell keeps only its tags (papermill's ``parameters``).

The mechanism (:class:`RunCopies`, which ``python -m kdlib lab`` starts JupyterLab with): a tracked notebook is saved
in that form, and its run, outputs and widget state included, to a git-ignored run copy (``notebooks/.runs/``);
opening the notebook shows the run again, as long as it is a run of the notebook as tracked now. So the file git
sees never changes, a page reload still shows the run (the explorer restored from the live kernel), and nothing
else is needed. A git clean filter (nbstripout) was the other choice: git status still lists a filtered file whose
size changed, and a clone without the filter configured dirties again; stripping on save alone loses the run on
reload.
"""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE = {"name": "python"}
CELL_KEYS = ("tags",)  #: the cell metadata a tracked notebook keeps
RUNS = ".runs"  #: the run copies' folder, inside notebooks/ (git-ignored)


def stored(nb: dict) -> dict:
    """``nb`` (nbformat JSON) in the tracked form: no outputs or execution counts, no session metadata."""
    nb = copy.deepcopy(dict(nb))
    nb["metadata"] = {"kernelspec": dict(KERNELSPEC), "language_info": dict(LANGUAGE)}
    nb["nbformat"], nb["nbformat_minor"] = 4, max(5, nb.get("nbformat_minor", 5))
    for cell in nb["cells"]:
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in CELL_KEYS}
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def stored_text(nb: dict) -> str:
    """The file text of ``nb`` in the tracked form (nbformat's serialisation, as JupyterLab saves it)."""
    return nbformat.writes(nbformat.from_dict(stored(nb))) + "\n"


def trust(root: Path) -> None:
    """Sign the tracked notebooks for this user (they carry no outputs, so there is nothing to distrust), so that
    JupyterLab's server opens them without a "not trusted" warning."""
    from nbformat.sign import NotebookNotary
    notary = NotebookNotary()
    for path in sorted((Path(root) / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if not any(cell.get("outputs") for cell in nb.cells):
            notary.sign(nb)


def tracked(path: Path, root: Path | None = None) -> bool:
    """Whether ``path`` is one of the project's notebooks: an ``.ipynb`` directly in ``notebooks/`` of the project
    root (:func:`kdlib.paths.project_root`) or of ``root`` (the server's root folder)."""
    from ..paths import project_root
    folders = {(Path(r) / "notebooks").resolve() for r in (project_root(), root) if r is not None}
    path = Path(path).resolve()
    return path.suffix == ".ipynb" and path.parent in folders


class RunCopies(AsyncLargeFileManager):
    """JupyterLab's contents manager for this project: a tracked notebook is saved in its tracked form and its run to
    ``notebooks/.runs/<name>``; opened, it shows that run while the run is of the notebook as tracked now."""

    def _run_copy(self, path: str) -> Path | None:
        os_path = Path(self._get_os_path(path))
        return os_path.parent / RUNS / os_path.name if tracked(os_path, Path(self.root_dir)) else None

    async def save(self, model: dict, path: str = "") -> dict:
        run = self._run_copy(path)
        if run is not None and model.get("type") == "notebook" and "content" in model:
            from ..store import write_text
            nb = nbformat.from_dict(model["content"])
            self.check_and_sign(nb, path)
            run.parent.mkdir(exist_ok=True)
            write_text(run, nbformat.writes(nb) + "\n")
            model = {**model, "content": stored(model["content"])}
        return await super().save(model, path)

    async def get(self, path: str, content: bool = True, type=None, format=None, **kwargs) -> dict:
        model = await super().get(path, content=content, type=type, format=format, **kwargs)
        run = self._run_copy(path)
        if content and run is not None and model["type"] == "notebook" and run.exists():
            nb = nbformat.read(run, as_version=4)
            if stored_text(nb) == stored_text(model["content"]):  # a run of this very notebook
                self.mark_trusted_cells(nb, path)
                model["content"] = nb
        return model
