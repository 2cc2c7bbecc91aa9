"""Every launcher gives the same collected table as one-after-another training (smoke profile)."""
import pandas as pd
import pytest

from conftest import copy_runs
from kdlib.runs import launchers
from kdlib import setups
from kdlib.runs.spec import plan
from kdlib.analysis.collect import collect
from kdlib.runs.setup import run_setup

SMOKE = "tinyshakespeare-nanogpt"


def small_setup():
    """The smoke setup with one student seed: 8 runs, trained one after another in the session's smoke store."""
    return setups.get(SMOKE, "smoke").scaled(student_seeds=(10,))


@pytest.fixture(scope="module")
def serial_table(smoke_store):
    return collect(small_setup(), smoke_store, write=False)[0]


def store_missing_two_students(smoke_store, dest):
    """The serial runs, less two students: what a launcher then trains, in parallel on two workers, in one launch
    (a teacher would need a launch of its own first), so its process start-ups stay few."""
    specs = plan(small_setup())
    return copy_runs(small_setup(), smoke_store, dest, leave_out=specs[1:3])


@pytest.mark.slow
@pytest.mark.parametrize("launcher, options", [
    ("local", {}),
    ("slurm", {"cluster": "local", "time_limit_min": 10}),
    ("ray", {}),
])
def test_launcher_matches_serial(launcher, options, serial_table, smoke_store, tmp_path, data_dir):
    if launcher in ("slurm", "ray"):
        pytest.importorskip("submitit" if launcher == "slurm" else "ray")
    setup = small_setup()
    out = store_missing_two_students(smoke_store, tmp_path / "store")
    run_setup(setup, out, data_dir, progress=False, launcher=launcher, workers=2, **options)
    table = collect(setup, out, write=False)[0]
    drop = ["train_seconds"]
    pd.testing.assert_frame_equal(table.drop(columns=drop), serial_table.drop(columns=drop))


def test_unknown_launcher():
    with pytest.raises(ValueError, match=r"unknown launcher 'mpi'.*'serial', 'local', 'slurm', 'ray'"):
        launchers.get("mpi")
