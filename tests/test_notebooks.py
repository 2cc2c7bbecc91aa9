"""The built-in suite end to end through papermill (run_all.sh at the smoke profile), and notebook hygiene."""
import json
import os
import subprocess
from pathlib import Path


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


def test_run_all_smoke_produces_tables_ticks_and_charts(tmp_path, data_dir):
    env = {**os.environ, "PROFILE": "smoke", "OUT": str(tmp_path / "results"), "FIGURES": str(tmp_path / "figures"),
           "KDLIB_DATA_DIR": str(data_dir), "SUITE": "full", "KDLIB_CACHE_DIR": str(tmp_path / "cache"),
           "LAUNCHER": "serial"}  # the local launcher's process start-up would dominate smoke runs
    subprocess.run(["bash", "run_all.sh"], cwd=REPO, env=env, check=True, capture_output=True)
    figures = tmp_path / "figures"
    assert (figures / "tinyshakespeare-width-scaling" / "smoke" / "agreement_vs_variant.pdf").exists()
    assert (figures / "tinyshakespeare-width-scaling" / "smoke" / "scaling_growth.csv").exists()
    for artefact in ("temperature_teacher0.tex", "ticks_T4.csv", "transfer_proportions_teacher0.pdf"):
        assert (figures / "temperature" / "smoke" / artefact).exists(), artefact
    for artefact in ("th_completions_teacher0.csv", "char_frequency.csv", "zipf.pdf"):
        assert (figures / "tinyshakespeare-adversarial" / "smoke" / artefact).exists(), artefact
    assert (figures / "fsdd-vggish" / "smoke" / "audit" / "report.md").exists()
    assert (figures / "cifar10-resnet18" / "smoke" / "copied_errors_examples.png").exists()
    for setup in ("tinyshakespeare-nanogpt", "tinyshakespeare-nanogpt-to-picogpt", "cifar10-resnet18", "fsdd-vggish",
                  "tinyshakespeare-nanogpt-to-picogpt-t2", "tinyshakespeare-nanogpt-to-picogpt-t4",
                  "tinyshakespeare-nanogpt-featuremap-block4", "tinyshakespeare-nanogpt-featuremap-block5",
                  "tinyshakespeare-adversarial"):
        figures = tmp_path / "figures" / setup / "smoke"
        for artefact in ("means_teacher0.csv", "means_teacher0.tex", "extended_teacher0.csv", "ticks.csv",
                         "ticks.tex", "agreement_deltas.pdf", "agreement_deltas.png",
                         "agreement_deltas_normalised.pdf", "train_curves.pdf"):
            assert (figures / artefact).stat().st_size > 0, (setup, artefact)
        assert list((tmp_path / "results" / setup / "smoke").glob("*.ipynb")), setup
        means = (figures / "means_teacher0.tex").read_text()
        assert r"\toprule" in means and r"\textbf{" in means and "SIDDO" in means
    assert (tmp_path / "results" / "summary-smoke.ipynb").exists()
    # re-running resumes: nothing is trained again
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "runs").glob("*/result.json")}
    subprocess.run(["bash", "run_all.sh"], cwd=REPO, env={**env, "SUITE": "language:tinyshakespeare-nanogpt"},
                   check=True, capture_output=True)
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "runs").glob("*/result.json")}
