import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Tests read the offline copies beside the checkout unless the caller points elsewhere; never download.
if "KDLIB_DATA_DIR" not in os.environ and SHARED_DATA.exists():
    os.environ["KDLIB_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("KDLIB_OFFLINE", "1")
# Small models train fastest on one thread, and one thread per process avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Derived data (decoded images, log-mel features) goes to one folder of this test session, never ~/.cache.
os.environ.setdefault("KDLIB_CACHE_DIR", tempfile.mkdtemp(prefix="kdlib-test-cache-"))
# torch.compile's kernel cache, one per CPU kernel path: inductor's cache key leaves out ATEN_CPU_CAPABILITY, and C++
# kernels cached under AVX2 fail to build when reused under the default path (torch 2.14: "'at::vec' has not been
# declared"; kdlib then trains eagerly and says so, which the compile tests would count as a failure).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"torchinductor-kdlib-tests-{os.environ.get('ATEN_CPU_CAPABILITY', 'native')}"))

#: The setups the shared smoke store trains: every path the golden tables guard (tests/golden/); the end-to-end
#: run_all.sh test starts from a copy of it and trains the temperature setup itself.
STORE_SETUPS = ("tinyshakespeare-nanogpt", "tinyshakespeare-nanogpt-to-picogpt", "cifar10-resnet18", "fsdd-vggish",
                "digits-resnet18", "tinyshakespeare-width-scaling", "tinyshakespeare-nanogpt-featuremap-block4",
                "tinyshakespeare-adversarial")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("KDLIB_DATA_DIR", "data"))
    if not (path / "tinyshakespeare.txt").exists():
        pytest.skip(f"built-in data not found in {path}")
    return path


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory, data_dir) -> Path:
    """One results folder with every setup of :data:`STORE_SETUPS` trained at the smoke profile, once per test
    session. Tests read it as it is; a test that writes to a store takes :func:`smoke_copy` instead.

    The test processes of one session (pytest-xdist) share the folder and train it together, as several launchers
    share one output folder: each run is claimed by one of them and the others wait for it (same bits on one
    machine whoever trains a run: tests/test_golden.py)."""
    from kdlib import setups
    from kdlib.runs.setup import run_setup
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder, above each process's own
    out = shared / "smoke-store"
    for name in STORE_SETUPS:
        run_setup(setups.get(name, "smoke"), out, data_dir, progress=False, poll_seconds=0.1)
    while any((out / "runs").glob("*/claim")):  # another process releasing its last claims: copies stay whole
        time.sleep(0.05)
    return out


def copy_store(store: Path, dest: Path) -> Path:
    """A private copy of a results folder (claims and results included) for a test that changes it."""
    shutil.copytree(store, dest)
    return dest


def copy_runs(setup, store: Path, dest: Path, leave_out=()) -> Path:
    """A results folder with only ``setup``'s finished runs copied from ``store``, less the specs in ``leave_out``
    (a launcher or a test then has just those to train)."""
    from kdlib.runs.spec import plan
    from kdlib.store import run_dir
    skip = {s.run_id for s in leave_out}
    for spec in plan(setup):
        if spec.run_id not in skip and run_dir(store, spec).exists():
            shutil.copytree(run_dir(store, spec), run_dir(dest, spec))
    return dest


@pytest.fixture
def smoke_copy(smoke_store, tmp_path) -> Path:
    """A private copy of :func:`smoke_store` for this test."""
    return copy_store(smoke_store, tmp_path / "store")


def assert_pack_matches_members(packed, models, x):
    """A packed forward and backward pass over ``x [K, B, ...]`` against each member run alone (float64): outputs to
    1e-12, every parameter's gradient to 1e-10 (tests/test_together.py, tests/test_packed_layout.py)."""
    import torch
    out = packed(x)
    out.square().sum().backward()
    for k, model in enumerate(models):
        alone = model(x[k])
        torch.testing.assert_close(out[k], alone, rtol=1e-12, atol=1e-12)
        alone.square().sum().backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(packed.body.get_parameter(name).grad[k], p.grad, rtol=1e-10, atol=1e-12,
                                       msg=f"model {k}: {name}")


#: Test files that take longest, longest first (seconds measured on a 2-core machine: about 180, 145, 125, 75, 71,
#: 66, 64, 60, 60, 56, 50, 36, 33, 20, 19, 18), so that two test processes (pytest.ini), each taking the next file
#: when free, finish together.
LONGEST_FIRST = ("test_launchers.py", "test_audit_models.py", "test_notebooks.py", "test_install.py",
                 "test_drills.py", "test_jupyter.py", "test_study.py", "test_yours.py", "test_benchmarks.py",
                 "test_modalities_smoke.py", "test_checkpoint.py", "test_together.py", "test_artefacts.py",
                 "test_runs.py", "test_fidelity.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))
