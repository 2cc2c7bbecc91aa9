"""What a worker process of a launcher (local, slurm, ray) runs for one job."""
from __future__ import annotations

from ...engine import device as dev
from ..run import run_job


def run_in_worker(job, teacher, ws) -> None:
    """One torch CPU thread per worker, then ``run_job`` in the launching command's workspace ``ws``."""
    dev.pin_worker()
    run_job(job, teacher, ws)
