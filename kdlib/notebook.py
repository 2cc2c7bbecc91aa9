"""What the study notebooks show, so each of their cells stays a line or two: run a setup, then display its
teacher, copied errors, training curves and report. Every figure is also written under ``figures/``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

from . import setups
from .conditions import label
from .report import build_report, plot_curves, plot_examples, save_figure, stratified, style_deltas, style_means
from .store import figures_dir
from .study import collect, copied_errors, curves, run_setup


def run(setup: str, profile: str, out, data_dir=None, device: str = "cpu", launcher: str = "serial",
        workers: int = 2, pack=1, **options):
    """Run (or resume) ``setup`` at ``profile`` and collect it: returns (Setup, students, teachers)."""
    S = setups.get(setup, profile)
    display(Markdown(f"**{S.name}** at the `{profile}` profile: {S.description}. Paper: {S.paper_ref}."))
    run_setup(S, out, data_dir, device, launcher=launcher, workers=workers, pack=pack, **options)
    students, teachers = collect(S, out)
    return S, students, teachers


def show_png(paths) -> None:
    """Display the PNG of every saved figure in ``paths`` (PDF twins are skipped)."""
    for path in paths:
        if Path(path).suffix == ".png":
            display(Image(filename=str(path)))


def show_teachers(teachers: pd.DataFrame) -> None:
    cols = ["teacher_seed", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    display(teachers[cols].rename(columns=lambda c: c.replace("_", " ")).style.hide(axis="index")
            .format(precision=4).format("{:d}", subset=["teacher seed"]))


def show_curves(S, out, figures) -> None:
    show_png(save_figure(plot_curves(curves(S, out)), figures_dir(figures, S) / "train_curves"))


def show_copied_errors(S, out, figures, data_dir=None, device: str = "cpu", spectrogram: bool = False) -> dict:
    """Test examples whose teacher error the KD student (largest alpha) copies, spread over the true classes,
    with how many teacher errors each student copies; returns :func:`kdlib.study.copied_errors`' view."""
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


def show_report(students: pd.DataFrame, S, figures) -> dict:
    """Build the setup's report (tables, ticks, agreement deltas; :func:`kdlib.report.build_report`) and show it."""
    rep = build_report(students, S.name, figures_dir(figures, S))
    for (kind, seed), table in rep["means"].items():
        if kind.startswith("means"):
            display(Markdown(f"Mean ± 1 SEM, teacher seed {seed} ({kind.partition(' ')[2] or 'all students'}); "
                             f"best mean per metric in bold."))
            display(style_means(table))
    display(Markdown("Significance (✓ significant against both controls, one mark per teacher seed; Supported: "
                     "✓ supported, M marginal, ✗ not)."))
    display(rep["ticks"])
    display(Markdown("Δ agreement of KD against the best control (mean ± 1 SEM over student seeds)."))
    display(style_deltas(rep["deltas"]))
    show_png(rep["figures"])
    return rep


def show_text_samples(S, out, data_dir=None, prompt: str = "ROMEO:\n", length: int = 200) -> None:
    """Text sampled from the teacher and a KD student (largest alpha) from the same prompt and generator seed."""
    import torch
    from .runs import load_model, load_task, plan
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
    from .audit import audit
    from .store import setup_dir
    from .study import export_outputs
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
