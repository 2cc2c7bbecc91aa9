"""Executed notebooks that open as they ran (kdlib.notebook.executed): folder parameters relative to the copy, so a
moved results folder still finds itself; a signature, as `jupyter trust` gives; an HTML twin that shows each widget's
static view."""
import shutil
from pathlib import Path

import nbformat
from nbformat.sign import NotebookNotary

from kdlib import paths
from kdlib.notebook.executed import WIDGET_VIEW, finish, portable


def test_folders_inside_the_results_are_named_from_the_copy_and_survive_a_move(tmp_path, monkeypatch):
    results = tmp_path / "results"
    dest = results / "svhn-resnet18" / "smoke" / "vision.ipynb"
    given = {"out": results, "figures": str(tmp_path / "figures"), "data_dir": None, "tables": results / "t"}
    injected = portable(given, dest, results)
    assert injected["out"] == "../.." and injected["tables"] == results / "t"  # only the folder parameters
    assert injected["figures"] == str((tmp_path / "figures").resolve()) and injected["data_dir"] is None
    assert portable({"out": results}, results / "summary-smoke.ipynb", results)["out"] == "."
    assert portable({"out": results / "a"}, results / "summary-smoke.ipynb", results)["out"] == "./a"
    dest.parent.mkdir(parents=True)
    shutil.move(results, tmp_path / "moved")  # the whole folder, elsewhere
    monkeypatch.chdir(tmp_path / "moved" / "svhn-resnet18" / "smoke")  # where JupyterLab starts the copy's kernel
    assert paths.project_path(injected["out"], "out") == (tmp_path / "moved").resolve()


def _executed(path: Path) -> Path:
    """A notebook as papermill leaves it: one output with a widget view and its static HTML fallback."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("explorer = nb.explore(out)", outputs=[nbformat.v4.new_output(
        "display_data", data={WIDGET_VIEW: {"model_id": "abc", "version_major": 2, "version_minor": 0},
                              "text/html": "<p>The explorer as drawn (view means)</p>", "text/plain": "x"})])]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                            "version_minor": 0}}
    nbformat.write(nb, path)
    return path


def test_an_executed_notebook_is_signed_for_its_user_and_gets_a_static_html_twin(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))  # this user's signature store, fresh
    path = _executed(tmp_path / "summary-smoke.ipynb")
    assert not NotebookNotary().check_signature(nbformat.read(path, as_version=4))
    written = finish(path, html=True)
    assert NotebookNotary().check_signature(nbformat.read(path, as_version=4))  # as `jupyter trust` leaves it
    assert written == [path.with_suffix(".html")]
    page = written[0].read_text()
    assert "The explorer as drawn (view means)" in page and WIDGET_VIEW not in page
    assert finish(_executed(tmp_path / "vision.ipynb")) == [] and not (tmp_path / "vision.html").exists()
