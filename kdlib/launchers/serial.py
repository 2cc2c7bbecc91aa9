"""One run after another in this process."""
from __future__ import annotations

from tqdm.auto import tqdm

from ..runs import run_one


def launch(jobs, out, data_dir=None, device="cpu", workers=1, progress=True, desc="runs"):
    bar = tqdm(jobs, desc=desc, unit="run", disable=not progress)
    for spec, teacher in bar:
        bar.set_postfix_str(f"{spec.condition} t{spec.teacher_seed} s{spec.student_seed} a{spec.alpha}")
        run_one(spec, out, data_dir, device, teacher=teacher)
