"""One analysis per collected setup: stored beside its tables, equal to the statistics it holds, and what every
reader shows (change it, and the summary, report, scorecard, overview and explorer follow); the explorer driven in
a kernel redraws for each of its controls."""
import json
import os
import textwrap

import numpy as np
import pandas as pd
import pytest

from conftest import copy_runs
from kdlib import analysis, setups
from kdlib.analysis.stats import agreement_deltas, transfer_tests, verdict
from kdlib.store import setup_dir
from kdlib.analysis.collect import collect

SMOKE = "tinyshakespeare-nanogpt"


@pytest.fixture
def collected(smoke_store, tmp_path):
    setup = setups.get(SMOKE, "smoke")
    copy_runs(setup, smoke_store, tmp_path)
    collect(setup, tmp_path)
    return setup, tmp_path


def test_the_stored_analysis_is_the_statistics_of_the_runs_table(collected):
    setup, out = collected
    stored = analysis.read(setup_dir(out, setup))
    runs = pd.read_csv(setup_dir(out, setup) / "runs.csv")
    tests, deltas = transfer_tests(runs, on_missing="drop"), agreement_deltas(runs)
    pd.testing.assert_frame_equal(stored["tests"][tests.columns], tests, check_dtype=False)  # and mde80, stability
    pd.testing.assert_frame_equal(stored["deltas"].drop(columns="variant"), deltas, check_dtype=False)
    for _, v in stored["verdicts"].iterrows():
        g = tests[(tests["alpha"] == v["alpha"]) & (tests["family"] == "functional")]
        assert v["verdict"] == verdict(int(g["tick"].sum()), len(g), g["mean_functional_improvement"].iloc[0])
    kd = runs[(runs["condition"] == "kd") & np.isclose(runs["alpha"], 0.9)]["activation_distance"]
    means = stored["means"]
    row = means[(means["column"] == "KD 0.9") & (means["metric"] == "activation_distance")].iloc[0]
    assert row["mean"] == pytest.approx(kd.mean()) and row["sem"] == pytest.approx(kd.std(ddof=1) / np.sqrt(len(kd)))


def test_an_analysis_older_than_its_runs_table_is_computed_again(collected):
    setup, out = collected
    folder = setup_dir(out, setup)
    os.utime(folder / "runs.csv")  # the table changed after its analysis was written
    assert analysis.read(folder) is None
    assert len(analysis.collected_analysis(folder)["verdicts"]) == 3 and analysis.read(folder) is not None


def test_every_reader_follows_a_changed_stored_analysis(collected, capsys):
    from kdlib.__main__ import main
    from kdlib.notebook.explorer import Explorer
    from kdlib.analysis.scorecard import scorecard
    from kdlib.report.tables import overview
    setup, out = collected
    folder = setup_dir(out, setup) / "analysis"
    verdicts, deltas = pd.read_csv(folder / "verdicts.csv"), pd.read_csv(folder / "deltas.csv")
    at = np.isclose(verdicts["alpha"], 0.9)
    verdicts.loc[at, ["verdict", "delta_incorrect", "negative_asymmetry"]] = ["marginal", 0.777, True]
    deltas.loc[np.isclose(deltas["alpha"], 0.9), "delta_incorrect"] = 0.777
    verdicts.to_csv(folder / "verdicts.csv", index=False)
    deltas.to_csv(folder / "deltas.csv", index=False)
    line = f"{SMOKE}, KD 0.9, teacher seed 0: transfer marginal; Δcorrect"
    assert main(["summary", "--profile", "smoke", "--out", str(out)]) == 0
    summary = [x for x in capsys.readouterr().out.splitlines() if x.startswith(line)]
    assert len(summary) == 1 and "Δincorrect +0.777" in summary[0]
    assert main(["report", SMOKE, "--profile", "smoke", "--out", str(out), "--figures", str(out / "fig")]) == 0
    printed = capsys.readouterr().out
    assert line in printed and "Δincorrect +0.777" in printed
    written = pd.read_csv(out / "fig" / SMOKE / "smoke" / "agreement_deltas.csv")
    assert written.loc[np.isclose(written["alpha"], 0.9), "delta_incorrect"].item() == 0.777
    claims = scorecard([SMOKE], "smoke", out)["claims"]
    mine = claims[(claims["claim"] == "verdict") & np.isclose(claims["alpha"], 0.9) & (claims["teacher_seed"] == 0)]
    assert set(mine["ours"]) == {"marginal"}
    row = overview([(SMOKE, "smoke", analysis.collected_analysis(setup_dir(out, setup)))]).iloc[-1]
    assert row["verdict"] == "marginal" and row["Δ incorrect"].startswith("0.777")
    explorer = Explorer(out)
    explorer.controls["alpha"].value = 0.9
    explorer.controls["view"].value = "agreement deltas"
    assert "0.777" in explorer.output.outputs[0]["data"]["text/html"]
    bundle = explorer.bundle()  # the cell's output: the live widget, and the view as drawn for any other renderer
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.box.model_id
    assert "0.777" in bundle["text/html"] and "view agreement deltas" in bundle["text/html"]
    assert "VBox" not in bundle["text/plain"]


def _synthetic_results(root):
    """Collected tables and analyses of two profiles and two readings of one setup, two teacher seeds each, whose
    numbers differ between every pair (so each control's change shows)."""
    from test_artefacts import synthetic_runs
    from kdlib.store import write_table
    for label_, profile, shift in (("svhn-resnet18", "smoke", 0.0), ("svhn-resnet18", "cpu", 0.05),
                                   ("svhn-resnet18+small-image-resnet-stem=imagenet", "smoke", 0.1)):
        runs = synthetic_runs(teacher_seeds=(0, 1))
        runs["activation_distance"] += shift + 0.02 * runs["teacher_seed"]
        folder = root / label_ / profile
        write_table(runs, folder / "runs")
        analysis.write(analysis.analyse(runs), folder)


@pytest.mark.slow
def test_the_explorer_redraws_for_each_control_in_a_kernel(tmp_path):
    from jupyter_client.manager import start_new_kernel
    _synthetic_results(tmp_path / "results")
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        def run(code):
            reply = client.execute_interactive(code, output_hook=lambda m: None)
            assert reply["content"]["status"] == "ok", reply["content"]
        shown = tmp_path / "shown.json"
        run(textwrap.dedent(f"""
            import json
            from kdlib import notebook as nb
            ex = nb.explore({str(tmp_path / 'results')!r})
            def shown():
                return json.dumps(ex.output.outputs[0]["data"], sort_keys=True)
            seen = {{"start": shown()}}
            for name, value in [("alpha", 0.9), ("teacher_seed", 1), ("profile", "smoke"), ("profile", "cpu"),
                                ("profile", "smoke"),
                                ("reading", "svhn-resnet18+small-image-resnet-stem=imagenet"), ("view", "ticks"),
                                ("view", "agreement deltas (normalised)"), ("setup", "svhn-resnet18")]:
                before = shown()
                ex.controls[name].value = value
                seen[f"{{name}}={{value}} ({{len(seen)}})"] = before != shown()
            json.dump(seen, open({str(shown)!r}, "w"))
        """))
        seen = json.loads(shown.read_text())
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert seen.pop("start")
    changed = {k: v for k, v in seen.items() if not k.startswith("setup=svhn-resnet18")}
    assert all(changed.values()), changed  # every control redraws (setting the current setup again changes nothing)
