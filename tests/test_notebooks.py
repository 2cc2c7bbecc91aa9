"""The built-in suite end to end through papermill (run_all.sh at the smoke profile), and notebook hygiene."""
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
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        text = path.read_text()
        nb = nbformat.reads(text, as_version=4)
        assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), path.name
        ids = [cell.get("id") for cell in nb.cells]
        assert all(ids) and len(set(ids)) == len(ids), path.name
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name
        nbformat.validate(nb)
        assert text == nbformat.writes(nb) + "\n", f"{path.name} is not in nbformat's saved form"
