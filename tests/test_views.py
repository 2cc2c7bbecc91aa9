"""What a reader sees in a notebook: mean +- SEM cells without a spread that is not there, tables with human column
names and no row numbers, a legend for the tick marks, and figures whose labels never collide. The files written
under figures/ keep their bytes (test_artefacts.py, test_golden.py)."""
import itertools
import io
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from test_artefacts import synthetic_runs

from kdlib import report, setups
from kdlib.analysis import analyse
from kdlib.analysis.evidence import calibrate
from kdlib.analysis.stats import Rule
from kdlib.report import tables, views
from kdlib.report.tables import format_mean_sem, human, readable, tick_legend, tick_table

NANOGPT = "tinyshakespeare-nanogpt"


def test_a_mean_without_spread_has_no_plus_minus():
    assert format_mean_sem(0.5, 0.0123) == "0.500 ± 0.012"
    assert format_mean_sem(0.5, 0.0004) == "0.500 ± <0.001"
    for sem in (0.0, None, float("nan")):
        assert format_mean_sem(0.5, sem) == "0.500"
    assert format_mean_sem(0.5, 0.0, keep_zero=True) == "0.500 ± 0.000"  # the written tables' cells


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A report beside the paper of synthetic runs whose SIDDO accuracy has no spread, with its teachers."""
    runs = synthetic_runs((0, 1, 2))
    runs.loc[runs["condition"] == "siddo", "accuracy"] = 0.5
    teachers = pd.DataFrame([{"teacher_seed": s, "train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 1.2,
                              "test_accuracy": 0.4} for s in (0, 1)])
    dest = tmp_path_factory.mktemp("report")
    analysis = analyse(runs)
    rep = report.build_report(runs, NANOGPT, dest, setup=setups.get(NANOGPT, "smoke"), teachers=teachers, draw=False,
                              analysis=analysis)
    return rep, dest, analysis


def test_written_tables_keep_a_zero_sem_and_shown_ones_drop_it(built, tmp_path):
    rep, dest, _ = built
    written = pd.read_csv(dest / "means_teacher0.csv", index_col=0)
    assert written.loc["Accuracy (↑)", "SIDDO"] == "0.500 ± 0.000"
    shown = tables.style_means(rep["means"][("means", 0)]).to_html()
    assert ">0.500<" in shown and "0.500 ± 0.000" not in shown
    beside = pd.read_csv(dest / "vs_paper_teacher0.csv", header=[0, 1], index_col=0)
    assert beside.loc["Accuracy (↑)", ("SIDDO", "ours")] == "0.500 ± 0.000"
    wide = rep["paper"]["wide"][0]
    assert wide.loc["Accuracy (↑)", ("SIDDO", "ours")] == "0.500"
    assert wide.loc["Accuracy (↑)", ("SIDDO", "paper")].endswith("± 0.000")  # the paper reports 0.000: kept
    adversarial = synthetic_runs((0,)).assign(tha_count=3, the_count=1)
    view = views.adversarial_view(adversarial, pd.DataFrame([{"teacher_seed": 0, "tha_count": 7, "the_count": 2}]),
                                  None, tmp_path)
    assert pd.read_csv(tmp_path / "th_completions_teacher0.csv", index_col=0).loc['"tha"', "SIDDO"] == "3.000 ± 0.000"
    assert view["tables"][0].loc['"tha"', "SIDDO"] == "3.000"


@pytest.mark.parametrize("name, said", [
    ("teacher_seed", "teacher seed"), ("p_adj_siddo", "p adjusted vs SIDDO"), ("p_rcd", "p vs RCD"),
    ("kd_mean", "KD mean"), ("delta_correct_sem", "Δ correct SEM"), ("alpha", "α"),
    ("train_loss_paper", "train loss (paper)"), ("Δ correct / headroom", "Δ correct / headroom"),
    ("SIDDO", "SIDDO"), ("verdict", "verdict")])
def test_human_names(name, said):
    assert human(name) == said


def _headers(html: str) -> list[str]:
    return re.findall(r'class="col_heading[^"]*" >([^<]*)</th>', html)


def test_every_displayed_table_reads_as_words_and_numbers_no_row(built):
    rep, _, analysis = built
    p = rep["paper"]
    numbered = {"overview": tables.overview([(NANOGPT, "smoke", analysis)]), "teachers": p["teachers"],
                "tests": rep["tests"], "deltas": rep["deltas"][rep["deltas"]["alpha"] > 0.2],
                "char frequency": views.char_frequency("to be or not to be")}
    labelled = {"ticks": rep["ticks"], "ticks beside the paper": p["ticks"], "beside the paper": p["wide"][0]}
    styled = {"means": tables.style_means(rep["means"][("means", 0)]), "deltas": tables.style_deltas(rep["deltas"])}
    for name, html in ([(n, readable(t).to_html()) for n, t in {**numbered, **labelled}.items()]
                       + [(n, s.to_html()) for n, s in styled.items()]):
        headers = _headers(html)
        assert headers and not any("_" in h for h in headers), (name, headers)
        assert ("row_heading" in html) == (name in labelled or name == "means"), name  # row labels kept, numbers not
    teachers = readable(p["teachers"]).to_html()
    assert ">38<" in teachers and ">1<" in teachers and ">1.2000<" in teachers and ">–<" in teachers
    assert "38.0" not in teachers and "1.0000<" not in teachers  # integer-valued columns without decimals
    assert "column" not in _headers(readable(p["wide"][0]).to_html())  # the pivot's level name is not a header


def test_the_tick_legend_names_every_mark_a_tick_table_can_emit(built):
    _, _, analysis = built
    tests = analysis["tests"].drop(columns="variant")
    tests["supported"] = tests["teacher_seed"] < 2  # seeds 0 and 1 supported, 0 marginal: every verdict mark
    tests["marginal"] = tests["teacher_seed"] == 0
    tests["tick"] = tests["teacher_seed"] == 1
    tests["verdict_stability"] = tests["teacher_seed"].map({0: 0.5, 1: 0.95, 2: np.nan})  # fragile, firm, none
    ticks = tick_table(tests)
    emitted = {c for cell in ticks.to_numpy().ravel() for c in cell if not (c.isdigit() or c in ". ")}
    marks = {tables.TICK, tables.CROSS, tables.MARGINAL_MARK, tables.FRAGILE_MARK, tables.MISSING_MARK}
    assert emitted == marks
    legend = tick_legend()
    for mark in marks:
        assert re.search(rf"(^|\s|\(){re.escape(mark)}:?\s", legend), mark
    assert "Wilcoxon signed-rank" in legend and "Benjamini-Hochberg" in legend and "q = 0.05" in legend
    assert "q = 0.1" in tick_legend(Rule(alpha_level=0.1)) and "Supported" in legend and "Stability" in legend
    assert "at least half" in tick_legend(Rule(majority="half")) and "more than half" in legend


def _texts(fig, renderer) -> list[tuple[str, object]]:
    """Every visible text of ``fig`` with its window extent: the suptitle and figure texts, legends (one box
    each), and per axes its titles, axis labels, tick labels inside the view and texts."""
    artists = [t for t in fig.texts] + list(fig.legends)
    for ax in fig.axes:
        artists += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        artists += [ax.get_legend()] if ax.get_legend() else []
        for axis, at in ((ax.xaxis, 0), (ax.yaxis, 1)):
            low, high = sorted(axis.get_view_interval())
            artists += [t for t in axis.get_ticklabels() if low <= t.get_position()[at] <= high]
    shown = [a for a in artists if a.get_visible() and (not hasattr(a, "get_text") or a.get_text())]
    return [(a.get_text() if hasattr(a, "get_text") else "legend", a.get_window_extent(renderer)) for a in shown]


def collisions(fig) -> list[tuple[str, str]]:
    """Pairs of visible texts whose extents overlap (by more than half a pixel) once the figure is drawn on the
    Agg canvas; the figure is then saved as a PNG with a tight bounding box, as every figure is."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    texts = _texts(fig, canvas.get_renderer())
    png = io.BytesIO()
    fig.savefig(png, format="png", bbox_inches="tight")
    assert png.getvalue().startswith(b"\x89PNG")
    return [(a, b) for (a, x), (b, y) in itertools.combinations(texts, 2)
            if x.x0 < y.x1 - 0.5 and y.x0 < x.x1 - 0.5 and x.y0 < y.y1 - 0.5 and y.y0 < x.y1 - 0.5]


@pytest.fixture(scope="module")
def drawn_inputs(tmp_path_factory) -> dict:
    """What each plot function draws, small and synthetic (the shapes its callers pass)."""
    runs = synthetic_runs((0, 1, 2))
    deltas = report.agreement_deltas(runs)
    curves = pd.DataFrame([{"teacher_seed": t, "condition": c, "alpha": a, "step": s, "loss": 2 - s / 100}
                           for t in (0, 1) for c, a in (("teacher", np.nan), ("siddo", np.nan), ("kd", 0.5),
                                                        ("rcd", 0.9), ("ls", 0.1)) for s in range(1, 101)])
    widths = pd.concat([synthetic_runs((0, 1), seed=i).assign(variant=f"{w}%") for i, w in enumerate((10, 100))])
    dest = tmp_path_factory.mktemp("drawn")
    return {"deltas": deltas, "one seed": deltas[deltas["teacher_seed"] == 0], "curves": curves,
            "beside": report.paper_beside(runs, analyse(runs)["tests"], setups.get(NANOGPT, "smoke"), None, dest,
                                          draw=False)["means"],
            "variants": report.build_report(widths, "tinyshakespeare-width-scaling", dest, draw=False)["deltas"],
            "calibration": calibrate(synthetic_runs((0,), student_seeds=range(10, 16)), draws=20,
                                     effects=(0.0, 0.1, 0.2), seeds=(5, 10), power_draws=10)}


EXPLORER_TITLE = "cifar10-resnet18 (smoke), teacher seed 0"  # what the explorer passes for one teacher seed
FIGURES = {
    "deltas": lambda d: report.plot_agreement_deltas(d["deltas"], "svhn-resnet18"),
    "deltas normalised": lambda d: report.plot_agreement_deltas(d["deltas"], "svhn-resnet18", normalised=True),
    "deltas, one seed": lambda d: report.plot_agreement_deltas(d["one seed"], EXPLORER_TITLE),
    "deltas normalised, one seed": lambda d: report.plot_agreement_deltas(d["one seed"], EXPLORER_TITLE, True),
    "deltas normalised, untitled": lambda d: report.plot_agreement_deltas(d["one seed"], "", True),
    "vs paper": lambda d: report.plot_vs_paper(d["beside"], NANOGPT),
    "vs paper, one seed": lambda d: report.plot_vs_paper({0: d["beside"][0]}, NANOGPT),
    "curves": lambda d: report.plot_curves(d["curves"], "cifar10-resnet18"),
    "curves, one seed": lambda d: report.plot_curves(d["curves"][d["curves"]["teacher_seed"] == 0], EXPLORER_TITLE),
    "scaling": lambda d: report.plot_scaling(d["variants"], ["10%", "100%"], "tinyshakespeare-width-scaling"),
    "scaling, one seed": lambda d: report.plot_scaling(d["variants"][d["variants"]["teacher_seed"] == 0],
                                                       ["10%", "100%"], EXPLORER_TITLE),
    "power": lambda d: report.plot_power(d["calibration"], "svhn-resnet18 (smoke): the verdict rule's calibration"),
}


@pytest.mark.parametrize("name", FIGURES)
def test_no_two_texts_of_a_figure_overlap(name, drawn_inputs):
    assert collisions(FIGURES[name](drawn_inputs)) == []


def test_an_overlap_would_be_caught():
    fig = report.new_figure(3, 2)
    ax = fig.subplots()
    ax.set_title("a title")
    ax.text(0.5, 1.02, "a text under the title", transform=ax.transAxes, ha="center")
    assert collisions(fig) == [("a title", "a text under the title")]


def test_a_title_is_said_once():
    deltas = report.agreement_deltas(synthetic_runs((0, 1)))
    title = "cifar10-resnet18 (smoke), teacher seed 0"
    for fig in (report.plot_agreement_deltas(deltas[deltas["teacher_seed"] == 0], title, normalised=True),
                report.plot_curves(pd.DataFrame({"teacher_seed": 0, "condition": "kd", "alpha": 0.5, "step": [1, 2],
                                                 "loss": [2.0, 1.0]}), title)):
        texts = [fig._suptitle.get_text()] + [ax.get_title() for ax in fig.axes]
        assert " ".join(texts).count("teacher seed 0") == 1, texts
    seeds = report.plot_agreement_deltas(deltas, "svhn-resnet18")
    assert [ax.get_title() for ax in seeds.axes] == ["teacher seed 0", "teacher seed 1"]
    assert seeds._suptitle.get_text() == "svhn-resnet18"


def test_training_curves_say_what_each_condition_minimises():
    curves = pd.DataFrame([{"teacher_seed": 0, "condition": c, "alpha": a, "step": s, "loss": 1.0 / s}
                           for c, a in (("teacher", np.nan), ("siddo", np.nan), ("kd", 0.5), ("rcd", 0.5))
                           for s in (1, 2)])
    fig = report.plot_curves(curves)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["KD 0.5: Eq. 1", "RCD 0.5: Eq. 1, uniform teacher", "SIDDO: CE", "Teacher: CE"]
    assert "scales differ" in fig.axes[0].get_ylabel()
    note = " ".join(fig._supxlabel.get_text().split())
    assert "(1−α)·CE + α·T²·KL(teacher ‖ student)" in note and "uniform teacher" in note
