"""Ray tasks, one per run, each asking for ``gpus_per_run`` GPUs and one CPU.

Connects to the cluster named by ``$RAY_ADDRESS`` (or ``address``), else starts a local Ray instance, once per
process (a study launches twice per setup: its teachers, then its students; starting Ray takes seconds), shut
down when the process exits. Ray's scheduler throttles the tasks to the resources available.
"""
from __future__ import annotations

import atexit
import os

import ray
from tqdm.auto import tqdm

from .worker import run_in_worker


def launch(jobs, ws, workers=2, progress=True, desc="runs", gpus_per_run=0, address=None):
    if not jobs:
        return
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
        atexit.register(ray.shutdown)
    task = ray.remote(num_cpus=1, num_gpus=gpus_per_run)(run_in_worker)
    pending = [task.remote(job, teacher, ws) for job, teacher in jobs]
    with tqdm(total=len(pending), desc=desc, unit="run", disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)  # raises with the task's traceback if a run failed outright
            bar.update(len(done))
