"""The whole study in batch (``python -m kdlib study``; ``run_all.sh`` is its wrapper): per setup of a suite, train
or resume it in the terminal with progress and collect it, then execute its study notebook with papermill beside
the next setup's training (``notebook_jobs`` at once); then the summary notebook, one verdict line per setup,
teacher seed and alpha, and the reproduction scorecard. Setups whose data is missing are listed up front with
where to get them; the others still run. Nothing finished is trained again.

It needs the ``notebooks`` extra (papermill and the notebook stack): without it, it stops before training, in one
line naming ``pip install 'kdlib[notebooks]'``. The notebooks it executes are those of the kdlib that runs
(:mod:`kdlib.notebook.sources`: an installed kdlib's package data, a checkout's ``notebooks/``). Relative folders
(results, figures, data) are the working directory's, as everywhere on the command line; the notebooks are given
the data folder the study trained on.
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import setups
from .data.base import available, data_status
from .engine.checkpoint import EVERY
from .notebook import executed, sources
from .runs.suites import DEFAULTS, notebook_for, suite


def ready(setup, root: Path) -> bool:
    """Whether a setup's data is in the data folder (or downloads itself)."""
    return available(setup.dataset, root)


def run_study(names, profile: str = DEFAULTS["profile"], data_dir=None, out="results", figures="figures",
              device: str = DEFAULTS["device"], launcher: str = DEFAULTS["launcher"],
              workers: int = DEFAULTS["workers"], pack=DEFAULTS["pack"], compile: str = DEFAULTS["compile"],
              readings=(), summary: bool = True, notebook_jobs: int = 2, threads: int | None = 1,
              checkpoint_every: float = EVERY, log_to: str | None = None, **launcher_options) -> int:
    """Run the suite ``names`` (a suite name or setup names, :func:`kdlib.runs.suites.suite`) end to end; returns the
    exit status (1 if a setup or notebook failed, 2 if nothing was collected at all: no summary is written then).
    ``readings`` (``["ID=CHOICE", ...]``) apply to every setup that uses them. ``threads``: torch CPU threads of
    this process, ``checkpoint_every``: seconds between training checkpoints, ``log_to``: where training is mirrored
    (:class:`~kdlib.runs.workspace.Workspace`).
    Without the notebook stack (:func:`kdlib.notebook.executed.missing`) it says so in one line and returns 2."""
    if why := executed.missing():  # before anything trains
        print(f"kdlib study: error: {why}", file=sys.stderr, flush=True)
        return 2
    from .analysis.collect import collect
    from .analysis.scorecard import scorecard, write_scorecard
    from .report import verdict_summary
    from .runs.setup import run_setup
    from .runs.workspace import Workspace
    chosen = setups.readings.parse(readings)
    ws = Workspace.resolve(Path(out).resolve(), data_dir, device, compile, threads, checkpoint_every, log_to)
    root, out, figures = ws.data_dir, ws.out, Path(figures).resolve()
    plan = []
    for name in suite(names):
        base = setups.get(name, profile)
        plan.append(setups.get(name, profile, {r: c for r, c in chosen.items() if r in dict(base.readings)}))
    print(f"== {profile} profile on {device} (launcher {launcher}, {workers} workers, pack {pack}, compile "
          f"{compile}); data in {data_dir if data_dir is not None else root}", flush=True)
    for setup in plan:
        if not ready(setup, root):
            print(f"-- skipping {setup.name}: its data is missing")
            print(f"{setup.name:42s} {setup.modality:9s} {data_status(setup.dataset, root)}\n"
                  f"{'':52s}{setup.description}", flush=True)
    failed, notebooks, collected = [], [], 0
    for setup in (s for s in plan if ready(s, root)):
        print(f"== {setup.label} ({profile})", flush=True)
        try:
            run_setup(setup, ws, launcher=launcher, workers=workers, pack=pack, **launcher_options)
            students, teachers = collect(setup, out, log_to=ws.log_to)
        except Exception as e:  # noqa: BLE001  (one setup's failure must not stop the suite)
            print(f"{setup.label}: {type(e).__name__}: {e}", flush=True)
            failed.append(setup.label)
            continue
        collected += len(students)
        print(f"{setup.label} ({profile}): {_count(len(students), 'student run')} and "
              f"{_count(len(teachers), 'teacher')} collected in {out / setup.label / profile}", flush=True)
        notebook = sources.path(Path(notebook_for(setup)).name)
        dest = out / setup.label / profile / notebook.name
        print(f"   {notebook} -> {dest}", flush=True)
        _throttle(notebooks, notebook_jobs, failed)
        notebooks.append((setup.label, dest, executed.start(notebook, dest, executed.portable({
            "setup": setup.source or setup.name, "profile": profile, "data_dir": root, "out": out, "figures": figures,
            "device": device, "launcher": launcher, "workers": workers, "pack": pack, "compile": compile,
            "readings": " ".join(f"{r}={c}" for r, c in setup.readings if r in chosen)}, dest, out))))
    _throttle(notebooks, 1, failed)  # every study notebook has run
    if not collected:  # nothing to summarise: say why in one line, and write no empty summary or scorecard
        why = ("the data of every named setup is missing (see above)" if not any(ready(s, root) for s in plan)
               else "no setup trained or collected a student run (see above)")
        print(f"kdlib study: error: nothing to summarise: {why}", file=sys.stderr, flush=True)
        return 2
    if summary:
        dest = out / f"summary-{profile}.ipynb"
        print(f"== summary ({profile}) -> {dest}", flush=True)
        _throttle([("summary", dest, executed.start(sources.path("summary.ipynb"), dest, executed.portable(
            {"out": out, "figures": figures, "profile": profile, "data_dir": root}, dest, out)))], 1, failed,
            html=True)
    print(f"== verdicts ({profile})", flush=True)
    print("\n".join(verdict_summary(out, profile) or [f"nothing collected at the {profile} profile in {out}"]))
    card = scorecard(None, profile, out)
    paths = write_scorecard(card, out)
    print(f"{card['summary']}\nscorecard: {paths[0]} and {paths[1]}", flush=True)
    print(f"done: tables and figures in {figures}/, runs in {out}/"
          + (f"; open {out}/summary-{profile}.ipynb (python -m kdlib lab) for everything, or its .html twin in any "
             f"browser" if summary else ""), flush=True)
    if failed:
        print(f"failed: {' '.join(failed)} (see the messages above)", flush=True)
        return 1
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _throttle(running: list, at_most: int, failed: list, html: bool = False) -> None:
    """Wait until fewer than ``at_most`` notebooks run (0 left when ``at_most`` is 1 and the list is drained); a
    notebook that ran is signed (and, with ``html``, exported: :func:`kdlib.notebook.executed.finish`), a failed
    one's log tail is shown and its setup recorded."""
    while len(running) >= at_most and running:
        label_, dest, (proc, log) = running.pop(0)
        if proc.wait() != 0:
            print("\n".join(log.read_text().splitlines()[-20:]), flush=True)
            failed.append(label_)
            continue
        for written in executed.finish(dest, html):
            print(f"   {written}", flush=True)
