"""The reproduction scorecard: the paper's claims derived from its tables, ours beside them, missing runs "not run"."""
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import copy_runs

from kdlib import paper, setups
from kdlib.analysis.scorecard import (baseline, cohen_kappa, headline, headline_text, regime, scorecard,
                                      setup_claims, write_scorecard)
from kdlib.analysis.collect import collect

NANOGPT = "tinyshakespeare-nanogpt"


def test_claims_without_runs_are_all_not_run():
    claims = pd.DataFrame(setup_claims(setups.get(NANOGPT, "cpu"), None, None))
    assert set(claims["status"]) == {"not run"}
    kinds = claims.groupby("claim").size()
    assert kinds["tick"] == 54  # Table 15: 3 alphas x 6 metrics x 3 teacher seeds
    assert kinds["teacher_regime"] == 3  # Table 38, the shared Nano-GPT teacher
    assert kinds["verdict"] == 9 and kinds["best_accuracy"] == 3


def test_the_papers_verdicts_follow_its_ticks_and_means():
    """Table 15 ticks every functional metric at every alpha; Table 14's mean gain over the better control is
    0.0055 at alpha 0.1 (marginal: 0.009, 0.003, 0.006, 0.004) and well above 0.01 at 0.5 and 0.9."""
    claims = pd.DataFrame(setup_claims(setups.get(NANOGPT, "cpu"), None, None))
    verdicts = claims[(claims["claim"] == "verdict") & (claims["teacher_seed"] == 0)].set_index("alpha")["paper"]
    assert verdicts.to_dict() == {0.1: "marginal", 0.5: "supported", 0.9: "supported"}
    asymmetry = claims[(claims["claim"] == "asymmetry") & (claims["teacher_seed"] == 0)]
    assert sorted(asymmetry["alpha"]) == [0.5, 0.9]  # claimed only where transfer is supported, not marginal
    best = claims[(claims["claim"] == "best_accuracy") & (claims["teacher_seed"] == 0)]["paper"].item()
    assert best == "KD 0.5"  # Table 14: accuracy 0.583
    assert claims[claims["claim"] == "teacher_regime"]["paper"].tolist() == ["high"] * 3  # train loss 0.86


def test_a_run_that_matches_the_paper_agrees_and_missing_seeds_are_not_run():
    """Students whose per-seed values are the paper's Table 14 means (plus tiny noise) reproduce its directions
    and best-accuracy claims; teacher seeds 1 and 2 are missing, so theirs are 'not run'."""
    means = paper.means_for(NANOGPT)
    means = means[means["teacher_seed"] == 0]
    g = np.random.default_rng(0)
    rows = []
    for (cond, alpha), m in means.groupby(["condition", means["alpha"].fillna(-1)]):
        values = m.set_index("metric")["mean"]
        for s in range(10, 16):
            rows.append({"teacher_seed": 0, "student_seed": s, "condition": cond,
                         "alpha": np.nan if alpha == -1 else alpha,
                         **{k: v + g.normal(0, 1e-5) for k, v in values.items()},
                         "correct_agreement": 0.8, "incorrect_agreement": 0.3 + (0.1 if cond == "kd" else 0)})
    teachers = pd.DataFrame([{"teacher_seed": 0, "train_loss": 2.2}])
    claims = pd.DataFrame(setup_claims(setups.get(NANOGPT, "cpu"), pd.DataFrame(rows), teachers))
    seed0 = claims[claims["teacher_seed"] == 0]
    assert set(claims[claims["teacher_seed"] != 0]["status"]) == {"not run"}
    assert (seed0[seed0["claim"] == "direction"]["status"] == "agree").all()
    assert seed0[seed0["claim"] == "best_accuracy"]["status"].item() == "agree"
    assert seed0[seed0["claim"] == "teacher_regime"]["status"].item() == "agree"
    assert (seed0[seed0["claim"] == "asymmetry"]["status"] == "agree").all()
    assert (seed0[seed0["claim"] == "tick"]["status"] != "not run").all()


def test_scorecard_of_a_smoke_run_counts_claims_and_writes_csv_and_markdown(tmp_path, data_dir, smoke_store):
    setup = setups.get(NANOGPT, "smoke")
    copy_runs(setup, smoke_store, tmp_path)  # the session's trained runs of this setup alone
    collect(setup, tmp_path)
    card = scorecard(None, "smoke", tmp_path)
    claims = card["claims"]
    assert set(claims["setup"]) >= {NANOGPT, "svhn-resnet18"}  # every paper setup is listed, run or not
    assert set(claims[claims["setup"] == "svhn-resnet18"]["status"]) == {"not run"}
    tested = claims[claims["status"].isin(["agree", "disagree"])]
    assert len(tested) and set(tested["setup"]) == {NANOGPT}
    counted = tested[tested["counted"]]  # a fact counts once: a tick stands for its metric's directions
    assert len(counted) < len(tested) and not counted["claim"].eq("direction").all()
    assert card["summary"].startswith(f"{(counted['status'] == 'agree').sum()} of {len(counted)} claims reproduced")
    assert "kd-always-wins, which ignores our runs" in card["summary"] and "finds no effect" in card["summary"]
    assert "a different scale" in card["summary"]
    assert "| tinyshakespeare-nanogpt |" in card["markdown"]
    first_cells = [line.split("|")[1].strip() for line in card["markdown"].splitlines() if line.startswith("| ")]
    assert [c for c in first_cells if c in setups.names()] == [NANOGPT]  # a row per setup that ran, none for others
    idle = [line for line in card["markdown"].splitlines() if "svhn-resnet18" in line]
    assert len(idle) == 1 and idle[0].startswith("Not run here: ")
    csv_path, md_path = write_scorecard(card, tmp_path)
    assert csv_path.name == "scorecard.csv" and len(pd.read_csv(csv_path)) == len(claims)
    assert md_path.read_text().startswith("# Reproduction scorecard: smoke profile")


def test_a_scorecard_of_nothing_run_names_the_setups_in_one_line_under_the_notebooks_heading(tmp_path):
    card = scorecard(None, "smoke", tmp_path)
    lines = card["markdown"].splitlines()
    assert lines[0] == "### Reproduction scorecard: smoke profile"  # shown under the notebook's "## ..." heading
    assert not any(line.startswith(("# ", "## ")) for line in lines)
    assert not any(line.startswith("| ") for line in lines)  # no table of setups with nothing in it
    idle = [line for line in lines if line.startswith("Not run here: ")]
    assert len(idle) == 1 and idle[0].startswith(f"Not run here: {len(paper.SETUP_TABLES)} setups "
                                                 f"({len(card['claims'])} claims of the paper): ")
    assert all(name in idle[0] for name in paper.SETUP_TABLES) and "`python -m kdlib study SETUP" in idle[0]
    assert card["summary"].endswith(f"{len(card['claims'])} claims not run here: {len(card['claims'])} of the "
                                    f"{len(paper.SETUP_TABLES)} setups with no runs (the smoke profile: a different "
                                    "scale from the paper's, so differences are expected)")
    assert scorecard([NANOGPT], "smoke", tmp_path, level=2)["markdown"].startswith("## Reproduction scorecard")
    _, md_path = write_scorecard(card, tmp_path)
    assert md_path.read_text() == card["markdown"].replace("### ", "# ", 1)  # the file's title is level 1


@pytest.mark.parametrize("loss, expected", [(0.000646, "near zero"), (0.2, "low"), (0.86, "high"),
                                            (math.nan, "unknown")])
def test_teacher_regimes(loss, expected):
    assert regime(loss) == expected


def test_the_notebook_scorecard_of_every_profile_writes_them_all(tmp_path, monkeypatch):
    from kdlib.notebook import show
    from kdlib.analysis import scorecard as card_module
    monkeypatch.setattr(show, "find_collected", lambda out: [("a", "cpu", None), ("a", "smoke", None)])
    monkeypatch.setattr(card_module, "scorecard", lambda names, profile, out: {
        "claims": pd.DataFrame({"profile": [profile], "status": ["agrees"]}), "markdown": f"### {profile}"})
    show.show_scorecard(tmp_path, None)
    assert sorted(pd.read_csv(tmp_path / "scorecard.csv")["profile"]) == ["cpu", "smoke"]
    assert (tmp_path / "scorecard.md").read_text().splitlines() == ["# cpu", "# smoke"]  # the file's titles


def _claim(kind, paper_value, ours, **extra):
    return {"setup": "s", "claim": kind, "paper": paper_value, "ours": ours, "counted": True, "stability": 0.9,
            "status": "not run" if ours is None else ("agree" if ours == paper_value else "disagree"),
            "baseline": baseline(kind), **extra}


def test_the_baseline_kappa_and_no_effect_line_recomputed_by_hand():
    """Eight claims worked by hand. The paper: ticks T, T, F, F; verdicts "supported", "not supported"; directions
    T, F. Ours: ticks T, F, F, T; verdicts "supported", "not supported"; directions T, T."""
    claims = pd.DataFrame([
        _claim("tick", True, True), _claim("tick", True, False), _claim("tick", False, False),
        _claim("tick", False, True), _claim("verdict", "supported", "supported", stability=0.55),
        _claim("verdict", "not supported", "not supported"), _claim("direction", True, True),
        _claim("direction", False, True), _claim("tick", True, None),  # not run: left out of every figure
        _claim("tick", False, False, counted=False)])  # counted elsewhere: left out too
    h = headline(claims)
    assert (h["n"], h["ours"]) == (8, 5)  # agree: tick 1, tick 3, both verdicts, direction 1
    assert h["baseline"] == 4  # kd-always-wins: ticks 1, 2, verdict 1, direction 1
    # kappa over the 8 values, chance agreement within each kind: observed 5/8; ticks (4 of 8): paper T, T, F, F and
    # ours T, F, F, T give chance 1/2 * 1/2 + 1/2 * 1/2 = 1/2; verdicts (2 of 8): 1/2; directions (2 of 8): paper
    # T, F, ours T, T give 1/2 * 1 + 1/2 * 0 = 1/2; chance = 1/2, kappa = (5/8 - 1/2) / (1 - 1/2) = 1/4
    assert h["kappa"] == pytest.approx(0.25)
    assert h["kappa"] == pytest.approx(cohen_kappa(claims["paper"][:8], claims["ours"][:8], claims["claim"][:8]))
    # pooled over kinds, "supported" and True would look like agreement beyond chance: chance = 20/64, kappa 0.45
    assert cohen_kappa(claims["paper"][:8], claims["ours"][:8]) == pytest.approx((5 / 8 - 20 / 64) / (1 - 20 / 64))
    assert h["kinds"]["tick"]["kappa"] == pytest.approx(0.0)  # ticks: observed 1/2, chance 1/2
    assert (h["no_effect"], h["no_effect_ours"]) == (4, 2)  # ticks 3, 4, verdict 2, direction 2: ours agree on 3, v2
    assert h["kinds"]["tick"]["n"] == 4 and h["kinds"]["tick"]["baseline"] == 2
    assert (h["verdicts"], h["fragile"]) == (2, 1)  # the first verdict's stability 0.55 is below 0.8
    assert headline_text(h).startswith("5 of 8 claims reproduced (kd-always-wins, which ignores our runs: 4 of 8")
    assert cohen_kappa([True, False], [True, False]) == 1 and cohen_kappa([True, True], [True, True]) != 0


def test_a_teacher_shared_by_setups_counts_its_regime_once(tmp_path, data_dir, smoke_store):
    """The Pico-GPT setups share the Nano-GPT teacher: its regime counts once, and the T=4 setup, whose students
    did not run, adds no claim."""
    for name in (NANOGPT, "tinyshakespeare-nanogpt-to-picogpt"):
        setup = setups.get(name, "smoke")
        copy_runs(setup, smoke_store, tmp_path / name)
        shutil.copytree(tmp_path / name, tmp_path / "out", dirs_exist_ok=True)
        collect(setup, tmp_path / "out")
    claims = scorecard([NANOGPT, "tinyshakespeare-nanogpt-to-picogpt", "tinyshakespeare-nanogpt-to-picogpt-t4"],
                       "smoke", tmp_path / "out")["claims"]
    regimes = claims[(claims["claim"] == "teacher_regime") & (claims["teacher_seed"] == 0)].set_index("setup")
    assert regimes.loc["tinyshakespeare-nanogpt-to-picogpt-t4", "status"] == "not run"  # its students never ran
    tested = regimes[regimes["status"] != "not run"]
    assert len(tested) == 2 and tested["counted"].sum() == 1 and bool(tested.loc[NANOGPT, "counted"])
    asymmetry = claims[claims["claim"] == "asymmetry"]
    assert asymmetry["source"].str.contains("general statement").all()
