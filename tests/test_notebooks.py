"""The built-in suite end to end through papermill (run_all.sh at the smoke profile), and notebook hygiene."""
import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import copy_store

REPO = Path(__file__).resolve().parents[1]


def test_committed_notebooks_carry_no_outputs():
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert notebooks
    for nb in notebooks:
        cells = json.loads(nb.read_text())["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), nb.name
        for c in cells:
            if c["cell_type"] == "code":
                assert not c.get("outputs") and not c.get("execution_count"), nb.name


# every notebook and every cross-setup view (Nano-GPT self-distillation and the feature-map setups run through the
# same language notebook; their training is covered by tests/test_golden.py's golden tables). Pico-GPT at T = 1 is
# collected beforehand: the summary shows it, and beside T = 4 in the temperature view.
SUITE = ("vision:cifar10-resnet18 audio:fsdd-vggish language:tinyshakespeare-nanogpt-to-picogpt-t4 "
         "language:tinyshakespeare-adversarial language:tinyshakespeare-width-scaling")


@pytest.mark.slow
def test_run_all_smoke_produces_tables_ticks_and_charts(tmp_path, data_dir, smoke_store):
    copy_store(smoke_store, tmp_path / "results")  # six setups trained already: run_all.sh trains the T=4 one
    from kdlib import setups
    from kdlib.analysis.collect import collect
    collect(setups.get("tinyshakespeare-nanogpt-to-picogpt", "smoke"), tmp_path / "results")
    env = {**os.environ, "PROFILE": "smoke", "OUT": str(tmp_path / "results"), "FIGURES": str(tmp_path / "figures"),
           "KDLIB_DATA_DIR": str(data_dir), "SUITE": SUITE, "KDLIB_CACHE_DIR": str(tmp_path / "cache"),
           "LAUNCHER": "serial"}  # the local launcher's process start-up would dominate smoke runs
    run = subprocess.run(["bash", "run_all.sh"], cwd=REPO, env=env, check=True, capture_output=True, text=True)
    terminal = run.stdout + run.stderr
    assert "== tinyshakespeare-nanogpt-to-picogpt-t4 (smoke)" in terminal and "run/s" in terminal  # progress, rates
    assert "tinyshakespeare-nanogpt-to-picogpt, KD 0.9, teacher seed 0: transfer" in terminal  # a verdict per alpha
    assert f"open {tmp_path / 'results'}/summary-smoke.ipynb" in terminal
    assert "claims reproduced" in terminal
    assert (tmp_path / "results" / "scorecard.csv").exists() and (tmp_path / "results" / "scorecard.md").exists()
    figures = tmp_path / "figures"
    assert (figures / "tinyshakespeare-width-scaling" / "smoke" / "agreement_vs_variant.pdf").exists()
    assert (figures / "tinyshakespeare-width-scaling" / "smoke" / "scaling_growth.csv").exists()
    for artefact in ("temperature_teacher0.tex", "ticks_T4.csv", "transfer_proportions_teacher0.pdf"):  # T=1 and 4
        assert (figures / "temperature" / "smoke" / artefact).exists(), artefact
    for artefact in ("th_completions_teacher0.csv", "char_frequency.csv", "zipf.pdf"):
        assert (figures / "tinyshakespeare-adversarial" / "smoke" / artefact).exists(), artefact
    assert (figures / "fsdd-vggish" / "smoke" / "audit" / "report.md").exists()
    assert (figures / "cifar10-resnet18" / "smoke" / "copied_errors_examples.png").exists()
    for setup in ("tinyshakespeare-nanogpt-to-picogpt", "cifar10-resnet18", "fsdd-vggish",
                  "tinyshakespeare-nanogpt-to-picogpt-t4", "tinyshakespeare-adversarial"):
        figures = tmp_path / "figures" / setup / "smoke"
        shown = setup != "tinyshakespeare-nanogpt-to-picogpt"  # its study notebook did not run: the summary reports it
        for artefact in ("means_teacher0.csv", "means_teacher0.tex", "extended_teacher0.csv", "ticks.csv",
                         "ticks.tex", "agreement_deltas.pdf", "agreement_deltas.png",
                         "agreement_deltas_normalised.pdf") + (("train_curves.pdf",) if shown else ()):
            assert (figures / artefact).stat().st_size > 0, (setup, artefact)
        assert list((tmp_path / "results" / setup / "smoke").glob("*.ipynb")) or not shown, setup
        means = (figures / "means_teacher0.tex").read_text()
        assert r"\toprule" in means and r"\textbf{" in means and "SIDDO" in means
    assert (tmp_path / "results" / "summary-smoke.ipynb").exists()
    for artefact in ("vs_paper_teacher0.csv", "ticks_vs_paper.csv", "teachers_vs_paper.csv", "vs_paper.pdf"):
        assert (tmp_path / "figures" / "tinyshakespeare-nanogpt-to-picogpt" / "smoke" / artefact).exists(), artefact


def test_papermill_lists_every_parameter_with_its_type_and_default():
    """`papermill --help-notebook` reads each parameters cell: every assignment is listed, typed, with its default
    (a line with a second '=' in its comment, or no annotation, would drop or leave it untyped)."""
    import ast

    import papermill
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cell = next(c for c in json.loads(path.read_text())["cells"]
                    if "parameters" in c.get("metadata", {}).get("tags", []))
        assigned = {node.target.id for node in ast.parse("".join(cell["source"])).body
                    if isinstance(node, ast.AnnAssign)}
        plain = [node for node in ast.parse("".join(cell["source"])).body if isinstance(node, ast.Assign)]
        assert not plain, f"{path.name}: untyped parameters"
        listed = papermill.inspect_notebook(str(path))
        assert set(listed) == assigned, path.name
        assert all(p["inferred_type_name"] not in ("None", "") and p["default"] for p in listed.values()), listed


def test_tracked_notebooks_are_stored_as_jupyterlab_saves_them():
    """nbformat 4.5 with a cell id on every cell, the kernelspec, no outputs, and nbformat's own serialisation
    (what JupyterLab 4 writes on save), so opening one changes nothing."""
    import nbformat
    from kdlib.notebook.stored import stored_text
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        text = path.read_text()
        nb = nbformat.reads(text, as_version=4)
        assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), path.name
        ids = [cell.get("id") for cell in nb.cells]
        assert all(ids) and len(set(ids)) == len(ids), path.name
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name
        assert not any(cell.get("outputs") or cell.get("execution_count") for cell in nb.cells), path.name
        nbformat.validate(nb)
        assert text == nbformat.writes(nb) + "\n", f"{path.name} is not in nbformat's saved form"
        assert text == stored_text(json.loads(text)), f"{path.name} is not in the tracked form"


def _run_copy(text: str) -> dict:
    """A tracked notebook as JupyterLab saves it after Run All: outputs, counts, widget state, session metadata."""
    run = json.loads(text)
    run["metadata"]["kernelspec"]["display_name"] = "Python 3"
    run["metadata"]["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python"}
    run["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    for i, cell in enumerate(c for c in run["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = i + 1
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x\n"}]
        cell["metadata"].update({"execution": {"iopub.status.idle": "2026-12-07"}, "scrolled": True})
    return run


def test_jupyterlab_keeps_a_tracked_notebook_as_tracked_and_its_run_beside_it(tmp_path):
    """The contents manager `kdlib lab` starts JupyterLab with: after Run All and save, the tracked file is byte for
    byte as committed and the run (outputs) is in notebooks/.runs/, which opening the notebook shows; once the
    tracked notebook changes (a pull), the stale run is not shown; a notebook elsewhere keeps its outputs."""
    import asyncio
    import nbformat
    from kdlib.notebook.stored import RUNS, RunCopies
    (tmp_path / "notebooks").mkdir()
    tracked = (REPO / "notebooks" / "summary.ipynb").read_text()
    (tmp_path / "notebooks" / "summary.ipynb").write_text(tracked)
    manager = RunCopies(root_dir=str(tmp_path))
    run = _run_copy(tracked)

    async def steps():
        for where in ("notebooks/summary.ipynb", "elsewhere.ipynb"):
            await manager.save({"type": "notebook", "format": "json", "content": copy.deepcopy(run)}, where)
        assert (tmp_path / "notebooks" / "summary.ipynb").read_text() == tracked
        opened = await manager.get("notebooks/summary.ipynb")
        (tmp_path / "notebooks" / "summary.ipynb").write_text(tracked.replace("## Explore", "## Explore it"))
        return opened, await manager.get("notebooks/summary.ipynb")

    opened, after_pull = asyncio.run(steps())
    kept = nbformat.read(tmp_path / "notebooks" / RUNS / "summary.ipynb", as_version=4)
    assert all(cell.outputs for cell in kept.cells if cell.cell_type == "code")
    assert all(cell["outputs"] for cell in opened["content"]["cells"] if cell["cell_type"] == "code")
    assert not any(cell["outputs"] for cell in after_pull["content"]["cells"] if cell["cell_type"] == "code")
    assert any(cell.outputs for cell in nbformat.read(tmp_path / "elsewhere.ipynb", as_version=4).cells
               if cell.cell_type == "code")
    assert not (tmp_path / RUNS).exists()
