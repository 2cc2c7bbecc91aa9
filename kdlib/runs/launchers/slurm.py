"""SLURM through submitit: one job array per phase, one task per run; preempted tasks are requeued.

On a machine without SLURM, submitit's local executor runs the same array as local processes (that is how
CI tests it). ``run_job`` is idempotent and claims each run, so a requeued or duplicated task never trains a
finished run again, and a run that was preempted mid-way resumes from its last checkpoint (written every
``--checkpoint-every`` minutes and when SIGTERM comes: :mod:`kdlib.engine.checkpoint`). Options come from ``launch``'s keyword arguments (the CLI's ``--slurm-*`` flags).
"""
from __future__ import annotations

from pathlib import Path

import submitit
from tqdm.auto import tqdm

from .worker import run_in_worker


class _RunTask(submitit.helpers.Checkpointable):
    """A picklable task; being Checkpointable, SLURM preemption requeues it instead of failing it."""

    def __call__(self, job, teacher, ws):
        run_in_worker(job, teacher, ws)


def launch(jobs, ws, workers=2, progress=True, desc="runs", partition=None, gpus_per_run=0, time_limit_min=60,
           cluster=None, log_dir=None):
    """Submit ``jobs`` as a SLURM job array (at most ``workers`` at once) and wait for them.

    ``cluster``: None picks SLURM when ``sbatch`` is available, else submitit's local executor; "local" forces
    it. The local executor has no array throttle, so there the array is submitted in waves of ``workers``."""
    if not jobs:
        return
    executor = submitit.AutoExecutor(folder=Path(log_dir or ws.out / "slurm_logs") / "%j", cluster=cluster)
    params = dict(timeout_min=time_limit_min, cpus_per_task=1, tasks_per_node=1, gpus_per_node=gpus_per_run,
                  name=desc.replace(" ", "_"))
    if executor.cluster == "slurm":
        params["slurm_array_parallelism"] = workers
        if partition:
            params["slurm_partition"] = partition
    executor.update_parameters(**params)
    wave = len(jobs) if executor.cluster == "slurm" else max(1, workers)
    bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress)
    for i in range(0, len(jobs), wave):
        work, teachers = zip(*jobs[i:i + wave])
        n = len(work)
        submitted = executor.map_array(_RunTask(), work, teachers, [ws] * n)
        for job in submitted:
            job.result()  # raises with the task's traceback if a run failed outright
            bar.update()
    bar.close()
