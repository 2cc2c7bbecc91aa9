"""What the study notebooks show (``nb.<name>``), so each of their cells stays a line or two: run a setup, then
display its teacher, copied errors, training curves and report. Every figure is also written under ``figures/``.
"""
from __future__ import annotations

from pathlib import Path

import os

import pandas as pd
from IPython.display import Image, Markdown, display

from .. import setups
from ..conditions import label
from ..paths import data_path, project_path
from ..analysis import collected_analysis, options
from ..report.figures import plot_curves, plot_examples, save_figure, stratified
from ..report import build_report, find_collected
from ..store import figures_dir, read_table, setup_dir
from ..report.tables import overview, readable, style_deltas, style_means, tick_legend
from ..analysis.collect import collect, curves
from ..runs.export import copied_errors
from ..runs.setup import run_setup
from ..runs.workspace import Workspace


def folders(out=None, figures=None, data_dir=None) -> tuple[Path, Path, Path]:
    """The notebook's results, figures and data folders as the project's (:mod:`kdlib.paths`): a relative path is
    taken under the project root, wherever JupyterLab started the kernel (``notebooks/``, ``results/...``)."""
    return project_path(out, "out"), project_path(figures, "figures"), data_path(data_dir)


def run(setup: str, profile: str, out, data_dir=None, device: str = "cpu", launcher: str = "serial",
        workers: int = 2, pack=1, readings="", **options):
    """Run (or resume) ``setup`` at ``profile`` and collect it: returns (Setup, students, teachers). ``readings``:
    ``"ID=CHOICE ..."`` (or a list or dict) read otherwise than the defaults (:mod:`kdlib.setups.readings`)."""
    S = setups.get(setup, profile, readings.split() if isinstance(readings, str) else readings)
    out, _, data_dir = folders(out, None, data_dir)
    chosen = ", ".join(f"`{r}={c}`" for r, c in S.readings)
    display(Markdown(f"**{S.label}** at the `{profile}` profile: {S.description}. Paper: {S.paper_ref}. "
                     f"Readings: {chosen}."))
    ws = Workspace.resolve(out, data_dir, device, options.pop("compile", "auto"))
    run_setup(S, ws, launcher=launcher, workers=workers, pack=pack, **options)
    students, teachers = collect(S, out)
    return S, students, teachers


def show_png(paths) -> None:
    """Display the PNG of every saved figure in ``paths`` (PDF twins are skipped)."""
    for path in paths:
        if Path(path).suffix == ".png":
            display(Image(filename=str(path)))


def show_teachers(teachers: pd.DataFrame) -> None:
    display(readable(teachers[["teacher_seed", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]]))


def show_ticks(ticks: pd.DataFrame, setup=None) -> None:
    """A tick table, and under it the legend of its marks under ``setup``'s verdict rule."""
    display(readable(ticks))
    display(Markdown(tick_legend(options(setup)["rule"] if setup is not None else None)))


def show_curves(S, out, figures) -> None:
    show_png(save_figure(plot_curves(curves(S, out)), figures_dir(figures, S) / "train_curves"))


def show_copied_errors(S, out, figures, data_dir=None, device: str = "cpu", spectrogram: bool = False) -> dict:
    """Test examples whose teacher error the KD student (largest alpha) copies, spread over the true classes,
    with how many teacher errors each student copies; returns :func:`kdlib.runs.export.copied_errors`' view."""
    view = copied_errors(S, out, data_dir, device)
    kd = view["kd_spec"]
    display(Markdown(
        f"The teacher gets {view['teacher_errors']} test examples wrong. The KD student ({label('kd', kd.alpha)}, "
        f"student seed {kd.student_seed}) copies {len(view['kd_copied'])} of those errors; the SIDDO student of "
        f"the same seed copies {len(view['siddo_copied'])}."))
    if not len(view["kd_copied"]):
        display(Markdown("The KD student copies none of the teacher's errors: there is nothing to show."))
        return view
    show = stratified(view["kd_copied"], view["labels"])
    names = view["classes"]
    captions = [f"{names[view['labels'][i]]} → {names[view['teacher'][i]]}" for i in show]
    key = (f"Each panel: true label → the teacher's wrong label, which the KD student ({label('kd', kd.alpha)}, "
           f"seed {kd.student_seed}) also predicts; at most one per true class before a second.")
    extra = view["task"].extra
    fig = plot_examples(view["task"].test.x[show], captions, key, spectrogram=spectrogram,
                        seconds=extra.get("seconds"))
    show_png(save_figure(fig, figures_dir(figures, S) / ("copied_errors_spectrograms" if spectrogram
                                                          else "copied_errors_examples")))
    return view


def show_report(students: pd.DataFrame, S, figures, teachers: pd.DataFrame | None = None, out=None) -> dict:
    """Build the setup's report (tables, ticks, agreement deltas, and the paper beside ours where the paper reports
    the setup; :func:`kdlib.report.build_report`) from its stored analysis (given ``out``) and show it."""
    analysis = collected_analysis(setup_dir(out, S)) if out is not None else None
    rep = build_report(students, S.label, figures_dir(figures, S), setup=S, teachers=teachers, analysis=analysis)
    for (kind, seed), table in rep["means"].items():
        if kind.startswith("means"):
            display(Markdown(f"Mean ± 1 SEM, teacher seed {seed} ({kind.partition(' ')[2] or 'all students'}); "
                             f"best mean per metric in bold."))
            display(style_means(table))
    show_ticks(rep["ticks"], S)
    display(Markdown("Δ agreement of KD against the best control (mean ± 1 SEM over student seeds)."))
    display(style_deltas(rep["deltas"]))
    show_png([f for f in rep["figures"] if "vs_paper" not in Path(f).name])
    show_paper(rep, S, level=3)
    return rep


def show_paper(rep: dict, S, level: int = 3) -> None:
    """The paper's numbers beside ours (means per teacher seed, ticks, teacher) under a heading of ``level``, or
    why there are none."""
    from .. import paper
    if "paper" not in rep:
        reason = paper.NOT_IN_PAPER.get(S.name, "the paper reports no table for it")
        display(Markdown(f"**The paper beside ours:** nothing to compare: {S.name} is not in the paper ({reason})."))
        return
    p = rep["paper"]
    display(Markdown(f"{'#' * level} The paper beside ours{p['scale']}\n\nOur mean ± 1 SEM next to the paper's "
                     f"(tables {', '.join(map(str, paper.tables_for(S.name)))})."))
    for seed, both in p["means"].items():
        display(Markdown(f"Teacher seed {seed} (paper: Table {int(both['table'].iloc[0])})"))
        display(readable(p["wide"][seed]))
    if "ticks" in p:
        display(Markdown("Ticks, ours beside the paper's:"))
        show_ticks(p["ticks"], S)
    if "teachers" in p:
        display(Markdown("The teachers, ours beside the paper's:"))
        display(readable(p["teachers"]))
    show_png(p["figures"])
def show_text_samples(S, out, data_dir=None, prompt: str = "ROMEO:\n", length: int = 200) -> None:
    """Text sampled from the teacher and a KD student (largest alpha) from the same prompt and generator seed."""
    import torch
    from ..runs.run import load_model, load_task
    from ..runs.spec import plan
    specs = plan(S)
    teacher = specs[0]
    kd = next(s for s in specs if s.condition == "kd" and s.alpha == max(S.alphas))
    tok = load_task(teacher, data_dir).extra["tokenizer"]
    for name, spec in (("teacher", teacher), (f"KD student ({label('kd', kd.alpha)}, seed {kd.student_seed})", kd)):
        model = load_model(out, spec, data_dir)
        text = model.generate(tok.encode(prompt)[None], length, greedy=False,
                              generator=torch.Generator().manual_seed(0))[0]
        print(f"--- {name} ---\n{tok.decode(text)}\n")


def show_audit(S, out, figures, data_dir=None) -> dict:
    """The audit (:func:`kdlib.audit.audit`) of the KD students at the largest alpha against SIDDO, from the
    study's own exported test outputs: its verdict and the teacher confusions the students copy."""
    from ..audit import audit
    from ..store import setup_dir
    from ..runs.export import export_outputs
    seed, alpha = S.teacher_seeds[0], max(S.alphas)
    exported = export_outputs(S, out, setup_dir(out, S) / "exported", data_dir) / f"teacher{seed}"
    names = (exported / "classes.txt").read_text().splitlines()
    report = audit(exported / "teacher.npy", [exported / f"kd_{alpha:g}" / f"seed{s}.npy" for s in S.student_seeds],
                   exported / "labels.npy",
                   controls={"SIDDO": [exported / "siddo" / f"seed{s}.npy" for s in S.student_seeds]},
                   out=figures_dir(figures, S) / "audit", class_names=names)
    display(Markdown(report["verdict"]["text"]))
    show_png([figures_dir(figures, S) / "audit" / "copied_errors.png"])
    return report


def audit_files(teacher, students, labels, controls: dict, out, n_boot: int = 1000, seed: int = 0) -> dict:
    """``python -m kdlib audit`` for the audit notebook: relative paths under the project root; shows the report,
    the most-copied errors and the figures."""
    from ..audit import audit
    at = lambda p: project_path(p, "out")
    report = audit(at(teacher), [at(s) for s in students], at(labels),
                   controls={k: [at(p) for p in v] for k, v in controls.items()}, out=at(out), n_boot=n_boot,
                   seed=seed)
    md = (at(out) / "report.md").read_text()
    display(Markdown("\n".join(line for line in md.splitlines() if not line.startswith("!["))))
    display(readable(pd.read_csv(at(out) / "copied_errors.csv").head(20)))
    show_png([at(out) / f"{name}.png" for name in ("agreement_deltas", "copied_errors")])
    return report


def explore(out=None):
    """The interactive explorer of everything collected under ``out`` (:mod:`kdlib.notebook.explorer`): controls for
    setup, profile, reading, teacher seed, alpha and view, redrawn from the stored analyses."""
    from .explorer import explore as show
    return show(folders(out)[0])


def collected(out, profile: str | None = None) -> list[tuple[str, str, Path]]:
    """Every (setup, profile, runs-table stem) collected under ``out`` (at ``profile``, or all)."""
    found = [f for f in find_collected(out) if profile is None or f[1] == profile]
    display(Markdown(f"{len(found)} setups collected under `{out}`" + (f" at the `{profile}` profile" if profile
                                                                       else "") + "."))
    return found


def show_overview(found) -> pd.DataFrame:
    """Setup x alpha across every collected setup: verdict, Δ correct, Δ incorrect and their headroom shares."""
    if not found:
        display(Markdown("No setup is collected yet: run `bash run_all.sh` (or `python -m kdlib run SETUP`)."))
        return pd.DataFrame()
    table = overview([(name, prof, collected_analysis(stem.parent)) for name, prof, stem in found])
    display(readable(table))
    return table


def show_scorecard(out, profile: str | None) -> None:
    """The reproduction scorecard (:mod:`kdlib.analysis.scorecard`) of every profile collected under ``out``."""
    from ..analysis.scorecard import scorecard, write_scorecard
    profiles = [profile] if profile else sorted({p for _, p, _ in find_collected(out)})
    cards = [scorecard(None, prof, out) for prof in profiles]
    for card in cards:
        display(Markdown(card["markdown"]))
    if cards:  # one file for all profiles shown (each claim's ``profile`` column says which)
        write_scorecard({"claims": pd.concat([c["claims"] for c in cards], ignore_index=True),
                         "markdown": "\n".join(c["markdown"] for c in cards)}, out)


def show_calibration(found, figures, draws: int = 1000) -> pd.DataFrame:
    """How far each collected setup's verdicts can be trusted: the verdict rule's rate of "supported" when KD does
    nothing (KD and its controls exchanged within pairs) with its 95% interval, and its power at 10 seeds for planted
    improvements (:func:`kdlib.analysis.evidence.calibrate`, as ``kdlib calibrate`` stores it), with the power
    figure; computed and stored where a setup has none yet."""
    from ..analysis import options
    from ..analysis.evidence import calibration_summary
    from ..report import CALIBRATION, NULL_LEVEL, calibration_report
    rows = []
    for name, prof, stem in found:
        runs = read_table(stem)
        if runs.empty or not (runs["condition"] == "kd").any():
            continue
        path = stem.parent / "analysis" / CALIBRATION
        dest = Path(figures) / name / prof
        if path.exists() and (dest / "power.png").exists():
            summary = calibration_summary(pd.read_csv(path))
        else:
            setup = setups.get(name, prof)
            summary = calibration_report(setup, runs, stem.parent, dest, options(setup)["rule"], draws)[1]
        at10 = {e: p for (n, e), p in summary["power"].items() if n == 10}
        rows.append({"setup": name, "profile": prof, "null rate of supported": f"{summary['null']:.3f}",
                     "calibrated": "yes" if summary["null"] <= NULL_LEVEL else "NO: above 0.05",
                     **{f"power at 10 seeds, gain {e:g}": f"{p:.2f}" for e, p in sorted(at10.items()) if e > 0}})
        show_png([dest / "power.png"])
    table = pd.DataFrame(rows)
    if len(table):
        display(readable(table))
    return table


def show_setups(found, figures, data_dir=None) -> None:
    """Every collected setup's report, the paper beside it where the paper has it. Figures the setup's own report
    drew after its runs were last collected are shown as they are, not drawn again."""
    for name, prof, stem in found:
        runs = read_table(stem)
        display(Markdown(f"### {name} ({prof})\n\n{_links(setups.get(name, prof), stem.parent, Path(figures))}"))
        if runs.empty or not (runs["condition"] == "kd").any():
            display(Markdown("No finished KD students yet (only runs it shares with other setups)."))
            continue
        teachers = read_table(stem.parent / "teachers")
        dest = Path(figures) / name / prof
        rep = build_report(runs, name, dest, setup=setups.get(name, prof), teachers=teachers,
                           draw=not _drawn_since(dest, stem), analysis=collected_analysis(stem.parent))
        for (kind, seed), table in rep["means"].items():
            display(Markdown(f"{kind} table, teacher seed {seed}: mean ± 1 SEM over student seeds, best in bold"))
            display(style_means(table))
        show_ticks(rep["ticks"], setups.get(name, prof))
        if "growth" in rep:
            display(readable(rep["growth"]))
        show_png([f for f in rep["figures"] if "vs_paper" not in Path(f).name])
        show_paper(rep, setups.get(name, prof), level=4)


def _links(setup, folder: Path, figures: Path) -> str:
    """Links, relative to the notebook's folder (the kernel's), to the setup's executed study notebook (in its
    results ``folder``), its figures folder and main charts."""
    from ..runs.suites import notebook_for
    here = Path.cwd()
    rel = lambda p: Path(os.path.relpath(p, here)).as_posix()
    dest = figures / setup.label / setup.profile
    links = [(f"study notebook `{Path(notebook_for(setup)).name}`", folder / Path(notebook_for(setup)).name),
             ("figures and tables", dest), ("agreement deltas (PDF)", dest / "agreement_deltas.pdf"),
             ("normalised (PDF)", dest / "agreement_deltas_normalised.pdf"), ("training curves (PDF)",
                                                                               dest / "train_curves.pdf")]
    shown = [f"[{text}]({rel(path)})" for text, path in links if path.exists()]
    return "Open: " + " · ".join(shown) if shown else ""


def _drawn_since(dest: Path, stem: Path) -> bool:
    """Whether the report in ``dest`` drew its figures after the runs table ``stem`` was last written."""
    tables = [p for p in Path(stem).parent.glob(Path(stem).name + ".*")]
    figures = list(Path(dest).rglob("agreement_*.png"))
    return bool(tables and figures) and min(f.stat().st_mtime for f in figures) >= max(t.stat().st_mtime
                                                                                      for t in tables)


def show_further(found, figures, data_dir=None) -> None:
    """The cross-setup views of the further experiments (temperature, adversarial teacher), where their
    setups are collected, and otherwise which setups they need."""
    from ..data import load
    from ..report.views import TEMPERATURE_SETUPS, adversarial_view, temperature_view
    stems = {(name, prof): stem for name, prof, stem in found}
    shown = False
    for prof in sorted({p for _, p, _ in found}):
        present = {t: stems[(s, prof)] for t, s in TEMPERATURE_SETUPS.items() if (s, prof) in stems}
        if len(present) > 1:
            shown = True
            display(Markdown(f"### Temperature ({prof})"))
            view = temperature_view({t: read_table(stem) for t, stem in present.items()},
                                    Path(figures) / "temperature" / prof,
                                    {t: collected_analysis(stem.parent) for t, stem in present.items()})
            for table in view["tables"].values():
                display(style_means(table))
            for t, ticks in view["ticks"].items():
                display(Markdown(f"ticks at T = {t:g}"))
                show_ticks(ticks)
            show_png(view["figures"])
        if ("tinyshakespeare-adversarial", prof) in stems:
            shown = True
            display(Markdown(f'### Adversarial "tha" teacher ({prof})'))
            stem = stems[("tinyshakespeare-adversarial", prof)]
            text = load("tinyshakespeare", data_dir, block_size=8).extra["text"]
            view = adversarial_view(read_table(stem), read_table(stem.parent / "teachers"), text,
                                    Path(figures) / "tinyshakespeare-adversarial" / prof)
            for table in view["tables"].values():
                display(readable(table))
            display(readable(view["char_frequency"]))
            show_png(view["figures"])
    if not shown:
        display(Markdown(
            "Nothing to show here yet: the temperature view needs at least two of "
            f"{', '.join(f'`{s}`' for s in TEMPERATURE_SETUPS.values())} and the adversarial view needs "
            "`tinyshakespeare-adversarial`. Run them with `SUITE=experiments bash run_all.sh` (or `SUITE=full`)."))
