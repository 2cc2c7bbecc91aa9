"""Golden smoke tables, two questions kept apart (tests/golden_tables.py says how they are compared):

- regression: today's numbers equal the committed ones within what kernels move them (any CPU, any kernel path),
  and a real change (a planted KD temperature, metric formula or data-order seed) fails that comparison;
- determinism: the same specs trained twice in this session give the same bits, exactly.
"""
import numpy as np
import pandas as pd
import pytest
import torch

from golden_tables import GOLDEN, SETUPS, golden, mismatches, tables
from kdlib import setups
from kdlib.runs.spec import plan
from kdlib.store import run_dir
from kdlib.runs.setup import run_setup

pytestmark = pytest.mark.kernels


@pytest.mark.parametrize("name", SETUPS)
def test_smoke_tables_match_the_golden_tables_within_what_kernels_move(name, smoke_store):
    got, want = tables(setups.get(name, "smoke"), smoke_store), golden(name)
    problems = [p for kind in got for p in mismatches(got[kind], want[kind], f"{name}.{kind}: ")]
    assert not problems, "\n".join(problems)


def test_golden_tables_cover_every_path():
    assert set(SETUPS) == {p.name.split(".")[0] for p in GOLDEN.glob("*.runs.csv")}
    assert {"tinyshakespeare-nanogpt", "cifar10-resnet18", "fsdd-vggish", "tinyshakespeare-width-scaling",
            "tinyshakespeare-nanogpt-featuremap-block4", "tinyshakespeare-adversarial"} <= set(SETUPS)
    runs = pd.read_csv(GOLDEN / "tinyshakespeare-nanogpt.runs.csv")
    assert not np.isnan(runs["activation_distance"]).any() and set(runs["condition"]) == {"siddo", "kd", "rcd"}
    early = pd.read_csv(GOLDEN / "tinyshakespeare-nanogpt.early.csv")
    assert len(early) == len(runs) + 1 and early["first_train_loss"].notna().all()  # every student and the teacher


def _plant_kd_temperature(monkeypatch):
    from kdlib.engine import objectives as train_mod
    real = train_mod.kd_loss
    monkeypatch.setattr(train_mod, "kd_loss", lambda s, t, y, alpha, temperature=1.0, validate=True, **kw:
                        real(s, t, y, alpha, 2 * temperature, validate, **kw))


def _plant_metric_formula(monkeypatch):
    from kdlib import metrics
    real = metrics.token_terms

    def terms(t, m, y):  # activation distance as the 1.02th power of the L2 distance: a 1-2% change
        out = real(t, m, y)
        return {**out, "activation_distance": out["activation_distance"] ** 1.02}
    monkeypatch.setattr(metrics, "token_terms", terms)


def _plant_data_order_seed(monkeypatch):
    from kdlib.engine import train as train_mod
    real = train_mod.derive_seeds
    monkeypatch.setattr(train_mod, "derive_seeds", lambda seed, n: real(seed + 1, n))


PLANTS = {"kd temperature": _plant_kd_temperature, "metric formula": _plant_metric_formula,
          "data-order seed": _plant_data_order_seed}


@pytest.mark.parametrize("plant", PLANTS)
def test_a_planted_change_fails_the_golden_comparison(plant, monkeypatch, tmp_path, data_dir):
    PLANTS[plant](monkeypatch)
    name = "tinyshakespeare-nanogpt"
    setup = setups.get(name, "smoke")
    run_setup(setup, tmp_path, data_dir, progress=False)
    got, want = tables(setup, tmp_path), golden(name)
    problems = [p for kind in got for p in mismatches(got[kind], want[kind], f"{kind}: ")]
    assert problems, f"the planted {plant} went unnoticed"
    if plant == "kd temperature":  # only KD students train differently
        assert all(", kd run" in p for p in problems), problems
    if plant == "metric formula":
        assert all("activation_distance" in p for p in problems), problems


DETERMINISM = ("tinyshakespeare-nanogpt", "tinyshakespeare-adversarial", "cifar10-resnet18", "fsdd-vggish")


def test_the_same_specs_trained_twice_give_the_same_bits(smoke_store, tmp_path, data_dir):
    """A text, an image and a spectrogram setup (dropout, augmentation-free caches, a probe), trained again."""
    for name in DETERMINISM:
        setup = setups.get(name, "smoke")
        run_setup(setup, tmp_path, data_dir, progress=False)
        first, again = tables(setup, smoke_store), tables(setup, tmp_path)
        for kind in first:
            pd.testing.assert_frame_equal(again[kind], first[kind], check_exact=True, obj=f"{name}.{kind}")
        for spec in plan(setup):
            a = torch.load(run_dir(smoke_store, spec) / "model.pt")
            b = torch.load(run_dir(tmp_path, spec) / "model.pt")
            assert all(torch.equal(a[k], b[k]) for k in a), (name, spec.run_id)
