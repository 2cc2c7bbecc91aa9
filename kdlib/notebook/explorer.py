"""An interactive explorer of every collected setup (``nb.explore(out)``, the end of ``summary.ipynb``).

ipywidgets controls choose the setup, profile, reading (the setup's label: the default readings or another
collected set), teacher seed, alpha and view; every change redraws from the stored analysis
(:mod:`kdlib.analysis`), the runs' stored train curves and the paper's tables, so nothing is trained or tested
again. :meth:`Explorer.render` is the drawing as a pure function of the controls' values (a MIME bundle), and the
output widget holds what it returns, in the kernel and in the browser alike. The cell's output also carries the view
as it was drawn, as plain HTML (:meth:`Explorer.bundle`): what GitHub, nbconvert's HTML and any page without the
widgets show instead of a line of text.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import ipywidgets as widgets
import pandas as pd

from .. import paper, setups
from ..analysis import collected_analysis, options, part, variants
from ..report.figures import plot_agreement_deltas, plot_curves, plot_scaling, plot_vs_paper, styled
from ..report import find_collected
from ..report.tables import format_mean_sem, readable, style_deltas, style_means, tick_legend, tick_table

VIEWS = ("means", "ticks", "agreement deltas", "agreement deltas (normalised)", "paper beside ours",
         "training curves")


class Explorer:
    """The controls, the output, and how one redraws the other."""

    def __init__(self, out):
        self.out = Path(out)
        self.found = {(label_, prof): stem for label_, prof, stem in find_collected(out)}
        names = sorted({label_.split("+")[0] for label_, _ in self.found})
        pick = lambda options: dict(options=options, value=options[0] if options else None)
        self.controls = {
            "setup": widgets.Dropdown(description="setup", **pick(names)),
            "profile": widgets.Dropdown(description="profile"),
            "reading": widgets.Dropdown(description="reading"),
            "teacher_seed": widgets.Dropdown(description="teacher seed"),
            "alpha": widgets.Dropdown(description="α"),
            "view": widgets.Dropdown(description="view", **pick(list(VIEWS))),
        }
        self.output = widgets.Output()
        self._hold = False
        for name, control in self.controls.items():
            control.observe(lambda change, name=name: None if self._hold else self._changed(name), names="value")
        self._changed("setup")
        c = self.controls
        self.box = widgets.VBox([widgets.HBox([c["setup"], c["profile"], c["reading"]]),
                                 widgets.HBox([c["teacher_seed"], c["alpha"], c["view"]]), self.output])

    def bundle(self) -> dict:
        """The widget's MIME bundle with a static fallback: the current view as HTML, for renderers that cannot
        show the live widget (GitHub, nbconvert, a notebook not trusted), and one plain line saying how to get it."""
        view, state = self.render(self.state()), self.state()
        if "text/html" in view:
            body = view["text/html"]
        elif "image/png" in view:
            body = f"<img src='data:image/png;base64,{view['image/png']}'/>"
        else:
            body = f"<p>{html.escape(view['text/plain'])}</p>"
        shown = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in state.items())
        return {**self.box._repr_mimebundle_(),
                "text/plain": "The explorer: run this cell with a kernel to show its controls.",
                "text/html": f"<p><i>The explorer as drawn ({html.escape(shown)}); run this cell with a kernel to "
                             f"use its controls.</i></p>{body}"}

    def state(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def _changed(self, name: str) -> None:
        """Narrow the dependent controls' options (setup -> profile -> reading -> seed, alpha), then redraw."""
        c, s = self.controls, self.state()
        self._hold = True  # options narrowed here neither narrow again nor redraw
        try:
            if name == "setup":
                profiles = sorted({p for label_, p in self.found if label_.split("+")[0] == s["setup"]})
                _set(c["profile"], profiles)
            if name in ("setup", "profile"):
                labels = sorted(label_ for label_, p in self.found
                                if label_.split("+")[0] == c["setup"].value and p == c["profile"].value)
                _set(c["reading"], [(_reading_text(label_), label_) for label_ in labels])
            if name in ("setup", "profile", "reading") and c["reading"].value:
                verdicts = self.analysis()["verdicts"]
                _set(c["teacher_seed"], sorted(int(t) for t in verdicts["teacher_seed"].unique()) if len(verdicts)
                     else [])
                _set(c["alpha"], sorted(float(a) for a in verdicts["alpha"].unique()) if len(verdicts) else [])
        finally:
            self._hold = False
        self.redraw()

    def analysis(self) -> dict:
        return collected_analysis(self.found[(self.controls["reading"].value, self.controls["profile"].value)].parent)

    def redraw(self) -> None:
        self.output.outputs = ({"output_type": "display_data", "data": self.render(self.state()), "metadata": {}},)

    def render(self, state: dict) -> dict:
        """The MIME bundle (HTML, or PNG for figures) of the view the controls choose."""
        if not state["reading"]:
            return _text("Nothing collected yet: run `bash run_all.sh` or `python -m kdlib run SETUP`.")
        analysis, seed, alpha, view = self.analysis(), state["teacher_seed"], state["alpha"], state["view"]
        title = f"{state['reading']} ({state['profile']}), teacher seed {seed}"
        names = variants(analysis["verdicts"])
        if view == "means":  # a setup with student variants (widths): one column group per variant
            means = analysis["means"][analysis["means"]["teacher_seed"] == seed].drop(columns=["teacher_seed"])
            keep = means["alpha"].isna() | (means["alpha"].astype(float) - alpha).abs().lt(1e-9)
            means = means[keep]
            if names != [None]:
                means = means.assign(column=means["variant"].astype(str) + " " + means["column"])
            return _html(style_means(means.drop(columns="variant").reset_index(drop=True)), title + f", α {alpha:g}")
        if view == "ticks":
            tests = analysis["tests"][analysis["tests"]["teacher_seed"] == seed]
            ticks = [tick_table(part(tests, v)).rename(index=lambda i: i if v is None else f"{i} [{v}]")
                     for v in names]
            setup = setups.get(state["reading"], state["profile"])
            bundle = _html(readable(pd.concat(ticks)), title)
            bundle["text/html"] += f"<p>{html.escape(tick_legend(options(setup)['rule']))}</p>"
            return bundle
        if view.startswith("agreement deltas"):
            deltas = analysis["deltas"][analysis["deltas"]["teacher_seed"] == seed]
            if names != [None]:  # Figure 11 style: the deltas across student variants
                return _png(plot_scaling(deltas, names, title))
            deltas = deltas.drop(columns="variant")
            if view.endswith("(normalised)"):
                return _png(plot_agreement_deltas(deltas, title, normalised=True))
            chosen = deltas[(deltas["alpha"] - alpha).abs() < 1e-9]
            return _both(style_deltas(chosen), plot_agreement_deltas(deltas, title), title + f", α {alpha:g}")
        if view == "paper beside ours":
            return self._paper(analysis, state, seed)
        return self._curves(state, seed, title)

    def _paper(self, analysis: dict, state: dict, seed) -> dict:
        setup = setups.get(state["reading"], state["profile"])
        theirs = paper.means_for(setup.name, setup.temperature) if setup.name in paper.SETUP_TABLES else pd.DataFrame()
        if theirs.empty or seed not in set(theirs["teacher_seed"]):
            return _text(f"The paper reports no table for {setup.name}, teacher seed {seed}.")
        ours = analysis["means"][analysis["means"]["teacher_seed"] == seed]
        both = ours.merge(theirs[theirs["teacher_seed"] == seed][["metric", "column", "mean", "sem"]],
                          on=["metric", "column"], suffixes=("", "_paper"))
        table = pd.DataFrame({"metric": both["metric"], "condition": both["column"],
                              "ours": [format_mean_sem(m, s) for m, s in zip(both["mean"], both["sem"])],
                              "paper": [format_mean_sem(m, s, keep_zero=True)  # the paper's 0.000: rounded, not none
                                        for m, s in zip(both["mean_paper"], both["sem_paper"])]})
        return _both(readable(table), plot_vs_paper({seed: both}, setup.label),
                     f"{setup.label}: ours beside the paper's")

    def _curves(self, state: dict, seed, title: str) -> dict:
        from ..analysis.collect import curves  # reads the runs' stored results; nothing is trained
        table = curves(setups.get(state["reading"], state["profile"]), self.out)
        table = table[table["teacher_seed"] == seed] if len(table) else table
        if table.empty:
            return _text(f"No training curves stored for {title}.")
        return _png(plot_curves(table, title))


def _set(control: widgets.Dropdown, options: list) -> None:
    value = control.value
    control.options = options
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    control.value = value if value in values else (values[0] if values else None)


def _reading_text(label_: str) -> str:
    return "default readings" if "+" not in label_ else ", ".join(label_.split("+")[1:])


def _text(message: str) -> dict:
    return {"text/plain": message, "text/markdown": message}


def _html(table, title: str) -> dict:
    return {"text/html": f"<p><b>{title}</b></p>{table.to_html()}", "text/plain": f"{title}\n{_plain(table)}"}


def _plain(table) -> str:
    """A table (a DataFrame or its Styler) as text."""
    return getattr(table, "data", table).to_string()


@styled
def _figure_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _png(fig) -> dict:
    return {"image/png": _figure_png(fig), "text/plain": "<figure>"}


def _both(table, fig, title: str) -> dict:
    return {"text/html": f"<p><b>{title}</b></p>{table.to_html()}<img src='data:image/png;base64,{_figure_png(fig)}'/>",
            "text/plain": f"{title}\n{_plain(table)}"}


def explore(out) -> Explorer:
    """Show the explorer of everything collected under ``out``; returns it (its ``controls`` can be set)."""
    from IPython.display import display
    explorer = Explorer(out)
    display(explorer.bundle(), raw=True)
    return explorer
