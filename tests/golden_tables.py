"""The golden smoke tables: what they hold, how today's tables are compared with them, and how they are written.

``tests/golden/<setup>.{runs,teachers}.csv`` are the collected tables of the smoke profile; ``<setup>.early.csv``
holds every run's first logged train loss (step 1: the loss of the initial weights on the first batch, before any
update can amplify rounding). ``meta.json`` says which torch, CPU and commit wrote them.

Bits differ across CPUs and kernel paths (AVX512, AVX2, the plain ``default`` kernels), and training amplifies the
difference, so the comparison is not exact: every float column has an absolute tolerance, three times the largest
difference measured between tables of the same code on the three kernel paths (tests/golden/README.md has the
measurement), and every other column (ids, conditions, seeds, prompt counts) must be equal. A change a refactor
must not make moves them far more: planted in ``tests/test_golden.py``, a KD temperature doubled inside the loss,
activation distance raised to the power 1.02 and data-order seeds shifted by one exceed their tolerance 180, 21
and 366 times (the largest ratio of each). Determinism (the same spec twice on one machine
gives the same bits) is asserted exactly, within one test session, not against these files.

Rewrite them (only in a commit of their own that says why they change, and only the setups a change moves):
``python tests/golden_tables.py [SETUP ...]``.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

GOLDEN = Path(__file__).resolve().parent / "golden"
REPO = GOLDEN.parents[1]
SETUPS = ("cifar10-resnet18", "digits-resnet18", "fsdd-vggish", "tinyshakespeare-adversarial",
          "tinyshakespeare-nanogpt", "tinyshakespeare-nanogpt-featuremap-block4", "tinyshakespeare-nanogpt-to-picogpt",
          "tinyshakespeare-width-scaling")
KINDS = ("runs", "teachers", "early")

#: Absolute tolerance per float column: 3x the largest difference measured across the AVX512, AVX2 and default
#: kernel paths (in brackets), rounded up.
TOLERANCE = {
    # rates of counted predictions: 1.1e-3 is two flipped predictions among 1,776 teacher-incorrect tokens
    **dict.fromkeys(["accuracy", "correct_agreement", "incorrect_agreement", "prediction_agreement",
                     "prediction_disagreement", "train_accuracy", "test_accuracy"], 3.5e-3),  # [1.13e-3]
    "activation_distance": 1e-4,  # [3.0e-5]
    "js_divergence": 2e-5,  # [5.0e-6]
    "rank_disagreement": 2e-4,  # [5.4e-5]
    "variation_of_information": 2.5e-3,  # [7.3e-4]
    "procrustes_distance": 3e-3,  # [1.0e-3, fsdd-vggish's small distances]
    **dict.fromkeys(["loss", "train_loss", "test_loss"], 1e-4),  # [3.4e-5]
    "final_train_loss": 3e-5,  # [9e-6]
    "first_train_loss": 3e-5,  # [3.4e-6 between AVX2 and default; written on AVX2, so 9x for AVX512]
    **dict.fromkeys(["tha_count", "the_count"], 2),  # greedy completions counted [0]
}
EXACT = ("alpha", "temperature")  # floats the spec sets, never computed


def tables(setup, store: Path) -> dict[str, pd.DataFrame]:
    """The ``runs``, ``teachers`` and ``early`` tables of ``setup`` (a :class:`kdlib.setups.Setup`) collected
    from ``store``, as they read back from the CSV files they are written to."""
    from kdlib.runs.spec import plan
    from kdlib.store import read_result
    from kdlib.analysis.collect import collect
    students, teachers = collect(setup, store, write=False)
    early = []
    for spec in plan(setup):
        result = read_result(store, spec)
        if result is not None and "train_curve" in result:
            early.append({"run_id": spec.run_id, "condition": spec.condition,
                          "first_train_loss": result["train_curve"]["loss"][0]})
    frames = {"runs": students.drop(columns="train_seconds"), "teachers": teachers.drop(columns="train_seconds"),
              "early": pd.DataFrame(early)}
    return {k: pd.read_csv(io.StringIO(f.to_csv(index=False, float_format="%.17g"))) for k, f in frames.items()}


def golden(name: str) -> dict[str, pd.DataFrame]:
    return {kind: pd.read_csv(GOLDEN / f"{name}.{kind}.csv") for kind in KINDS}


def mismatches(got: pd.DataFrame, want: pd.DataFrame, where: str = "") -> list[str]:
    """Every difference between ``got`` and ``want`` that kernels cannot explain, one line each (empty: none)."""
    if list(got.columns) != list(want.columns):
        return [f"{where}columns differ: {list(got.columns)} vs {list(want.columns)}"]
    if len(got) != len(want):
        return [f"{where}{len(got)} rows vs {len(want)}"]
    found = []
    for col in got.columns:
        a, b = got[col], want[col]
        if col in TOLERANCE:
            diff = (a.astype(float) - b.astype(float)).abs()
            bad = ~(a.isna() & b.isna()) & ~(diff <= TOLERANCE[col])
            found += [f"{where}{col}, {got.at[i, 'condition']} run {got.at[i, 'run_id']}: {a[i]!r} vs golden "
                      f"{b[i]!r} (tolerance {TOLERANCE[col]:g})" for i in bad[bad].index[:3]]
        elif a.dtype.kind == "f" and col not in EXACT:
            found.append(f"{where}float column {col!r} has no measured tolerance: add one to TOLERANCE")
        elif not a.equals(b):
            found.append(f"{where}{col} differs: {a.tolist()[:4]} vs golden {b.tolist()[:4]}")
    return found


def write(store: Path, names=SETUPS) -> None:
    """Write the golden tables of ``names`` (default: every setup in :data:`SETUPS`) from a store that has them
    trained; ``meta.json`` records which torch, CPU and commit wrote which."""
    import torch
    from kdlib import setups
    for name in names:
        for kind, frame in tables(setups.get(name, "smoke"), store).items():
            frame.to_csv(GOLDEN / f"{name}.{kind}.csv", index=False, float_format="%.17g")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    meta = json.loads((GOLDEN / "meta.json").read_text()) if (GOLDEN / "meta.json").exists() else {}
    meta.setdefault("tables", {})[", ".join(names)] = {
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "written_by": f"tests/golden_tables.py at commit {commit}"}
    (GOLDEN / "meta.json").write_text(json.dumps({**meta, "profile": "smoke"}, indent=1) + "\n")


def main(names=None) -> None:
    """Train ``names`` (default: every setup; command line: setup names) at the smoke profile and write them."""
    import os
    from kdlib import setups
    from kdlib.runs.setup import run_setup
    os.environ.setdefault("KDLIB_OFFLINE", "1")
    data = os.environ.get("KDLIB_DATA_DIR", str(REPO.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("KDLIB_CACHE_DIR", str(Path(tmp) / "cache"))
        names = tuple(names or SETUPS)
        for name in names:
            run_setup(setups.get(name, "smoke"), Path(tmp) / "results", data, progress=False)
        write(Path(tmp) / "results", names)
    print(f"wrote the golden tables of {len(names)} setups to {GOLDEN}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
