"""Every launcher gives the same collected table as one-after-another training (smoke profile)."""
import pandas as pd
import pytest

from kdlib import launchers, setups
from kdlib.study import collect, run_setup

SMOKE = "tinyshakespeare-nanogpt"


def small_setup():
    """The smoke setup with one student seed: 8 runs, so each launcher's process start-ups stay few."""
    return setups.get(SMOKE, "smoke").scaled(student_seeds=(10,))


@pytest.fixture(scope="module")
def serial_table(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("serial")
    setup = small_setup()
    run_setup(setup, out, data_dir, progress=False)
    return collect(setup, out, write=False)[0]


@pytest.mark.parametrize("launcher, options", [
    ("local", {}),
    ("slurm", {"cluster": "local", "time_limit_min": 10}),
    ("ray", {}),
])
def test_launcher_matches_serial(launcher, options, serial_table, tmp_path, data_dir):
    if launcher in ("slurm", "ray"):
        pytest.importorskip("submitit" if launcher == "slurm" else "ray")
    setup = small_setup()
    run_setup(setup, tmp_path, data_dir, progress=False, launcher=launcher, workers=2, **options)
    table = collect(setup, tmp_path, write=False)[0]
    drop = ["train_seconds"]
    pd.testing.assert_frame_equal(table.drop(columns=drop), serial_table.drop(columns=drop))


def test_unknown_launcher():
    with pytest.raises(ValueError, match=r"unknown launcher 'mpi'.*'serial', 'local', 'slurm', 'ray'"):
        launchers.get("mpi")
