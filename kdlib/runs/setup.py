"""Running one setup: every spec of its plan that has no result yet, teachers first, through a launcher."""
from __future__ import annotations

import time
from dataclasses import replace

from tqdm.auto import tqdm

from .. import data as datasets
from ..engine import device as dev
from . import launchers
from .autopack import pack_size
from .spec import RunSpec, packs, plan, teacher_spec
from ..setups import Setup
from ..setups.yours import SetupFileError
from .. import models
from ..store import RunResult, is_claimed, read_result
from .workspace import Workspace


def run_setup(setup: Setup, out, data_dir=None, device: str = "cpu", progress: bool = True,
              launcher: str = "serial", workers: int = 1, threads: int | None = 1,
              poll_seconds: float = 2.0, pack=1, compile: str = "auto", **launcher_options) -> list[RunResult]:
    """Run every spec of ``setup`` that has no result yet: teachers first, then their students. ``out``: a
    :class:`~kdlib.runs.workspace.Workspace` (its ``threads`` then apply), or the results folder with ``data_dir``,
    ``device``, ``threads`` and ``compile``.

    ``pack`` > 1 trains up to that many students of a teacher together in one vectorised step (see
    :mod:`kdlib.engine.together`: for small models on a GPU, not a CPU); 1 trains them one by one; ``"auto"`` probes
    the best size on CUDA once and remembers it (:mod:`kdlib.runs.autopack`; 1 on CPU). ``compile``: torch.compile
    the training steps ("auto": on CUDA only; :func:`kdlib.engine.device.use_compile`).

    Several launchers may share one output folder: each run is claimed before training, so none is trained
    twice; runs claimed by another launcher are waited for (polling every ``poll_seconds``).

    ``launcher_options`` go to the launcher (e.g. ``partition``, ``gpus_per_run``, ``time_limit_min``,
    ``cluster`` for slurm; ``address``, ``gpus_per_run`` for ray). ``threads``: torch CPU threads of this
    process (None: torch's default). One thread is the default because
    the study's small models train about as fast on one thread, and a second thread that competes with any
    other process for a core slows training many times over.
    """
    ws = Workspace.of(out, data_dir, device, compile, threads)
    dev.set_threads(ws.threads)  # a bad compile value failed above, before any training
    datasets.check(setup.dataset, ws.data_dir)  # and a missing dataset, before any worker starts
    if setup.source:
        check_yours(setup, ws)
    launch = launchers.get(launcher)
    specs = plan(setup)
    out = ws.out
    teachers = {s.run_id: s for s in specs if s.role == "teacher"}
    done = sum(read_result(out, s) is not None for s in specs)
    if progress:
        tqdm.write(f"{setup.label} ({setup.profile}): {len(specs)} runs; " + (
            f"reusing {done} finished, {len(specs) - done} to train" if done else "none finished yet"))
    stranded: set[str] = set()  # runs without result or claim after the last launch
    while True:
        todo = [s for s in specs if read_result(out, s) is None]
        for role in ("teacher", "student"):
            probe: list[str] = []  # a failed pack-size probe's line, which every student trained here records
            size = (pack_size(setup, ws.out, ws.data_dir, ws.device, pack, compile=ws.compiled, fallbacks=probe)
                    if role == "student" and any(s.role == "student" for s in todo) else 1)
            ws = replace(ws, fallbacks=tuple(probe))
            jobs = [(job, teachers.get((job if isinstance(job, RunSpec) else job[0]).teacher_id))
                    for job in packs([s for s in todo if s.role == role], size)]
            if jobs:
                launch(jobs, ws, workers=workers, progress=progress,
                       desc=f"{setup.label} {role}s" + (f" (packs of {size})" if size > 1 else ""), **launcher_options)
        busy = [s for s in specs if read_result(out, s) is None]
        if not busy:
            return [read_result(out, s) for s in specs]
        unclaimed = {s.run_id for s in busy if not is_claimed(out, s)}
        if len(unclaimed) < len(busy):  # another launcher is training some: wait, then pick up what it leaves
            stranded = set()
            time.sleep(poll_seconds)
            continue
        if unclaimed & stranded:  # launched while nobody held them, and still no result: a bug, not a race
            raise RuntimeError(f"{len(unclaimed)} runs of {setup.label} neither finished nor are claimed by another "
                               f"process, e.g. {sorted(unclaimed)[0]}")
        stranded = unclaimed  # released by another process without a result (it died or gave up): take them over


def check_yours(setup: Setup, ws: Workspace) -> None:
    """Your own setup, tried before any worker starts, each failure one line (:class:`SetupFileError`): its data
    loads, its models build, the teacher's checkpoint fits its architecture, and every model gives one output per
    class of the data."""
    import torch
    from .run import load_task
    from .weights import load_weights
    try:
        task = load_task(teacher_spec(setup, setup.teacher_seeds[0]), ws.data_dir)
    except (datasets.DatasetMissing, SetupFileError):
        raise
    except Exception as e:  # noqa: BLE001  (your loader's own error, as one line)
        raise SetupFileError(f"setup {setup.name}: dataset {setup.dataset!r} failed to load: {type(e).__name__}: "
                             f"{e}") from None
    x, _ = next(iter(task.test.eval_batches(2)))
    for role, model in [("teacher", setup.teacher), *[(label or "student", m) for label, m in setup.students()]]:
        try:
            net = models.build(model.arch, task.num_classes, **model.kwargs)
        except Exception as e:  # noqa: BLE001  (an unknown architecture, your factory's own error)
            raise SetupFileError(f"setup {setup.name}: {role} {model.arch!r} failed to build: {type(e).__name__}: "
                                 f"{e}") from None
        if role == "teacher" and setup.teacher_checkpoint:
            load_weights(net, setup.teacher_checkpoint)
        with torch.no_grad():
            out = net.eval()(x)
        if not torch.is_tensor(out):
            raise SetupFileError(f"setup {setup.name}: {role} {model.arch!r} returns {type(out).__name__}: a model "
                                 f"must return its logits as a tensor")
        if out.shape[-1] != task.num_classes:
            raise SetupFileError(f"setup {setup.name}: {role} {model.arch!r} gives {out.shape[-1]} outputs per "
                                 f"example, but dataset {setup.dataset!r} has {task.num_classes} classes")
