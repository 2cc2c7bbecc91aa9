"""The reproduction scorecard: the paper's claims derived from its tables, ours beside them, missing runs "not run"."""
import math

import numpy as np
import pandas as pd
import pytest
from conftest import copy_runs

from kdlib import paper, setups
from kdlib.analysis.scorecard import regime, scorecard, setup_claims, write_scorecard
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
    assert card["summary"].startswith(f"{(tested['status'] == 'agree').sum()} of {len(tested)} claims reproduced")
    assert "a different scale" in card["summary"]
    assert "| tinyshakespeare-nanogpt |" in card["markdown"]
    csv_path, md_path = write_scorecard(card, tmp_path)
    assert csv_path.name == "scorecard.csv" and len(pd.read_csv(csv_path)) == len(claims)
    assert md_path.read_text().startswith("# Reproduction scorecard: smoke profile")


@pytest.mark.parametrize("loss, expected", [(0.000646, "near zero"), (0.2, "low"), (0.86, "high"),
                                            (math.nan, "unknown")])
def test_teacher_regimes(loss, expected):
    assert regime(loss) == expected


def test_the_notebook_scorecard_of_every_profile_writes_them_all(tmp_path, monkeypatch):
    from kdlib import notebook
    from kdlib.analysis import scorecard as card_module
    monkeypatch.setattr(notebook, "find_collected", lambda out: [("a", "cpu", None), ("a", "smoke", None)])
    monkeypatch.setattr(card_module, "scorecard", lambda names, profile, out: {
        "claims": pd.DataFrame({"profile": [profile], "status": ["agrees"]}), "markdown": f"# {profile}"})
    notebook.show_scorecard(tmp_path, None)
    assert sorted(pd.read_csv(tmp_path / "scorecard.csv")["profile"]) == ["cpu", "smoke"]
    assert (tmp_path / "scorecard.md").read_text().splitlines() == ["# cpu", "# smoke"]
