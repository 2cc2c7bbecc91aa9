"""One run after another in this process."""
from __future__ import annotations

from tqdm.auto import tqdm

from ..spec import RunSpec
from ..run import run_job


def launch(jobs, ws, workers=1, progress=True, desc="runs"):
    bar = tqdm(jobs, desc=desc, unit="run", disable=not progress)
    for job, teacher in bar:
        if isinstance(job, RunSpec):
            bar.set_postfix_str(f"{job.condition} t{job.teacher_seed} s{job.student_seed} a{job.alpha}")
        else:
            bar.set_postfix_str(f"pack of {len(job)}")
        run_job(job, teacher, ws)
