"""What a setup will cost: runs planned and finished, and the device-hours the rest needs."""
from __future__ import annotations


import numpy as np

from ..engine import device as dev
from .spec import plan
from ..setups import Setup
from ..store import read_result


def plan_summary(setup: Setup, out, device: str = "cpu", timings=None) -> dict:
    """What a setup will cost: teachers and students planned and finished in ``out``, and the device-hours the
    rest needs, from the median training seconds of the setup's runs finished on ``device`` here, else from
    ``timings`` (per-model seconds recorded by ``benchmarks/gpu_check.py``: {"teacher": s, "student": s})."""
    specs = plan(setup)
    kind = "cuda" if dev.is_cuda(device) else "cpu"
    counts, seconds = {}, {"teacher": [], "student": []}
    for spec in specs:
        result = read_result(out, spec)
        c = counts.setdefault(spec.role, {"planned": 0, "finished": 0, "failed": 0})
        c["planned"] += 1
        if result is not None:
            c["failed" if result.failed else "finished"] += 1
            if str(result.device or "").startswith(kind) and result.train_seconds is not None:
                seconds[spec.role].append(result.train_seconds)
    per_model, source = {}, {}
    for role in ("teacher", "student"):
        if seconds[role]:
            per_model[role], source[role] = float(np.median(seconds[role])), f"median of {len(seconds[role])} runs here"
        elif timings and role in timings:
            per_model[role], source[role] = float(timings[role]), "the GPU check"
    remaining = {r: c["planned"] - c["finished"] - c["failed"] for r, c in counts.items()}
    hours = (sum(remaining[r] * per_model[r] for r in remaining) / 3600
             if all(r in per_model or not remaining[r] for r in remaining) else None)
    return {"setup": setup.label, "profile": setup.profile, "device": device, "counts": counts,
            "remaining": remaining, "seconds_per_model": per_model, "source": source, "device_hours": hours}
