"""Every launcher gives the same collected table as one-after-another training (smoke profile)."""
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_runs
from kdlib.runs import launchers
from kdlib import setups
from kdlib.runs.spec import plan
from kdlib.analysis.collect import collect
from kdlib.runs.setup import run_setup
from kdlib.store import read_result

REPO = Path(__file__).resolve().parents[1]

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


# ----------------------------------------------------------------------------- your own setup, through every launcher
# (here, not in tests/test_yours.py: tests of one file run one after another, and two local Ray clusters started at
# once by the two test processes hung both)

MODULE = '''
"""A user's module: its own dataset and architecture registered by name, and a setup using them."""
import torch
from kdlib import data, models, setups
from kdlib.data.base import Source, TaskData
from kdlib.data.sources import ExampleData
from kdlib.engine.recipe import Recipe


def load_blobs(root):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 4, generator=g) + 2.0 * torch.nn.functional.one_hot(y, 4).float()
    return TaskData(ExampleData(x[:40], y[:40]), ExampleData(x[40:], y[40:]), 3)


def mlp(num_classes, hidden=8):
    return torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes))


data.register("blobs", Source((), "the user's own", built_in=True, loader=load_blobs))
models.register("mlp", mlp)


def my_setup(profile):
    recipe = Recipe("sgd", lr=0.1, batch_size=8, steps=5)
    return setups.Setup(name="blobs-kd", modality="vision", description="a user's setup", dataset="blobs",
                        teacher=setups.Model("mlp", {"hidden": 16}), student=setups.Model("mlp"),
                        teacher_recipe=recipe, student_recipe=recipe, teacher_seeds=(0,), student_seeds=(10,),
                        alphas=(0.5,), profile=profile)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``myplugin_kd`` on the path of this process and of every process it starts, and not yet imported."""
    (tmp_path / "myplugin_kd.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")]))
    yield "myplugin_kd:my_setup"
    sys.modules.pop("myplugin_kd", None)
    from kdlib.data.base import SOURCES
    from kdlib.models import ARCHITECTURES
    for registry, name in ((SOURCES, "blobs"), (ARCHITECTURES, "mlp"), (setups.SETUPS, "myplugin_kd:my_setup")):
        if name in registry:
            registry.unregister(name)


@pytest.mark.slow
@pytest.mark.parametrize("launcher, options", [("local", {}), ("slurm", {"cluster": "local", "time_limit_min": 10}),
                                               ("ray", {})])
def test_a_setup_named_by_import_path_trains_through_every_launcher(launcher, options, user_module, tmp_path):
    """The workers know nothing of the user's module until the runs' source makes them import it: its dataset and
    architecture are registered names, not paths."""
    if launcher != "local":
        engine = pytest.importorskip("submitit" if launcher == "slurm" else "ray")
        if launcher == "ray" and engine.is_initialized():
            engine.shutdown()  # Ray's workers keep the environment their cluster started in: this one has the module
    setup = setups.get(user_module, "smoke")
    assert setup.name == "blobs-kd" and setup.source == user_module
    assert user_module not in setups.names()  # found by its path, not listed among the named setups
    specs = plan(setup)
    assert all(s.tags["source"] == user_module for s in specs)
    run_setup(setup, tmp_path / "out", tmp_path, progress=False, launcher=launcher, workers=2, **options)
    results = [read_result(tmp_path / "out", s) for s in specs]
    assert all(r is not None and r["status"] == "ok" for r in results)
    assert {r["pid"] for r in results[1:]} - {os.getpid()}  # trained in other processes
    students, _ = collect(setup, tmp_path / "out", write=False)
    assert len(students) == 3
