import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Tests read the offline copies beside the checkout unless the caller points elsewhere; never download.
if "KDLIB_DATA_DIR" not in os.environ and SHARED_DATA.exists():
    os.environ["KDLIB_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("KDLIB_OFFLINE", "1")
# Small models train fastest on one thread, and one thread per process avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("KDLIB_DATA_DIR", "data"))
    if not (path / "tinyshakespeare.txt").exists():
        pytest.skip(f"built-in data not found in {path}")
    return path
