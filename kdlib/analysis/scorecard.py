"""Does a run reproduce the paper, claim by claim? The paper's tables (:mod:`kdlib.paper`) beside our runs.

A claim is one statement a paper table makes that our runs can test, keyed by setup, teacher seed, alpha (and
metric or control where it has one):

- ``tick``: KD at alpha is significant against both controls on a metric (the tick tables, e.g. Table 15);
- ``verdict``: transfer at alpha is supported, marginal or not (the paper's ticks give "supported": a strict
  majority of the four functional metrics ticked; its means give "marginal": a mean functional improvement
  over the better control below 0.01, the rule of :mod:`kdlib.analysis.stats`);
- ``direction``: KD's mean is better than a control's (SIDDO, RCD at the same alpha) on a metric (the mean
  +- SEM tables);
- ``asymmetry``: where the paper's verdict is "supported" (not marginal), delta incorrect agreement exceeds
  delta correct agreement: the paper's central finding (Section 1: "when functional transfer is supported and
  not marginal, the resulting teacher-student alignment is often asymmetric"); its figures give no numbers;
- ``best_accuracy``: which condition reaches the best mean accuracy;
- ``teacher_regime``: the teacher's train loss regime: near zero (< 0.01, memorised), low (< 0.5) or high.

Each claim is ``agree``, ``disagree`` or ``not run`` (our runs lack that setup, teacher seed or condition: never
counted as passed or failed). At the ``paper`` profile every mean also gets its relative difference from the
paper's; at ``cpu`` and ``smoke`` the comparison is labelled as a different scale.

A count of agreements alone measures the paper's base rate (it mostly finds that KD wins), so beside ours every
count shows what a predictor that never looks at our runs gets on the same claims (``baseline``, the
``kd-always-wins`` predictor: every tick, every direction and the asymmetry true, every verdict "supported", the
best accuracy at KD alpha 0.5, every teacher "high"), Cohen's kappa between the paper and ours (chance-corrected
within each claim kind, over ticks, verdicts, directions and asymmetry), and how many of the claims where the paper
finds *no* effect (a missing tick, "not supported", KD no better than a control), which that predictor gets wrong,
we reproduce. A fact counts once (``counted``): a functional metric's tick stands for its KD-vs-control directions,
and a teacher shared by several setups has its regime counted for the first; a setup whose KD students did not run
adds no claim. Beside each of our verdicts stands its ``stability`` (:mod:`kdlib.analysis.evidence`; the headline
counts the fragile ones), and beside the paper's mean improvement (``paper_improvement``) the improvement our seeds
could have detected (``mde80``, per tick and per verdict), so a verdict of no transfer reads "no transfer larger
than this".
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paper, setups
from . import stats
from ..conditions import label
from ..metrics import FUNCTIONAL_METRICS, lower_is_better
from . import analyse, collected_analysis, options
from ..store import read_table, setup_dir, write_csv, write_text
from .collect import collect
from ..runs import provenance
from ..runs.spec import teacher_spec
from .evidence import FRAGILE

COLUMNS = ["setup", "profile", "readings", "claim", "teacher_seed", "alpha", "metric", "control", "paper", "ours",
           "status", "source", "relative_difference", "baseline", "counted", "stability", "paper_improvement",
           "mde80"]
#: The claim kinds Cohen's kappa is computed over (categorical claims whose values both sides can take).
KAPPA_CLAIMS = ("tick", "verdict", "direction", "asymmetry")
BASELINE = "kd-always-wins"
#: Where the paper's asymmetry value comes from: its text, not a table (its figures give no numbers).
ASYMMETRY_SOURCE = ("Section 1, a general statement (\"when functional transfer is supported and not marginal, the "
                    "resulting teacher-student alignment is often asymmetric\"): the paper's value is true wherever "
                    "its verdict is supported; its figures give no per-setup numbers")


def baseline(claim: str, alpha=None):
    """What the ``kd-always-wins`` predictor answers for a claim of kind ``claim``: KD beats every control on every
    metric, every verdict is supported, the asymmetry is negative, KD 0.5 has the best accuracy, the teacher's loss
    regime is high (NaN for measured means, which it does not predict)."""
    return {"tick": True, "verdict": "supported", "direction": True, "asymmetry": True,
            "best_accuracy": label("kd", 0.5), "teacher_regime": "high"}.get(claim, math.nan)


def no_effect(claim: str, paper_value) -> bool:
    """A claim where the paper finds no effect: a missing tick, a "not supported" verdict, KD no better than a
    control."""
    return (claim in ("tick", "direction") and paper_value is False) or (claim == "verdict"
                                                                          and paper_value == "not supported")


def cohen_kappa(a, b, strata=None) -> float:
    """Cohen's kappa of two raters' categorical values over the same items (NaN where chance agreement is 1). With
    ``strata`` (e.g. the claim kind of each item), chance agreement is computed within each stratum and weighted by
    its share of the items, so that values of different kinds (True, "supported") never count as agreement beyond
    chance for being of one kind."""
    a, b = [str(v) for v in a], [str(v) for v in b]
    if not a:
        return math.nan
    strata = [0] * len(a) if strata is None else list(strata)
    observed = float(np.mean([x == y for x, y in zip(a, b)]))
    chance = 0.0
    for s in set(strata):
        x = [v for v, t in zip(a, strata) if t == s]
        y = [v for v, t in zip(b, strata) if t == s]
        chance += len(x) / len(a) * sum((x.count(c) / len(x)) * (y.count(c) / len(y)) for c in set(x) | set(y))
    return math.nan if chance >= 1 - 1e-12 else (observed - chance) / (1 - chance)


def headline(claims: pd.DataFrame) -> dict:
    """The counted, tested claims' figures: ``n``, ``ours`` (agree), ``baseline`` (the kd-always-wins predictor's
    agreements with the paper on the same claims), ``kappa`` (paper vs ours over :data:`KAPPA_CLAIMS`),
    ``no_effect`` and ``no_effect_ours`` (claims where the paper finds no effect, and how many of them we
    reproduce), ``verdicts`` and ``fragile`` (our compared verdicts, and those below :data:`FRAGILE` stability),
    per claim kind under ``kinds``."""
    def figures(c: pd.DataFrame) -> dict:
        kappa_rows = c[c["claim"].isin(KAPPA_CLAIMS)]
        none = c[np.array([no_effect(k, p) for k, p in zip(c["claim"], c["paper"])], dtype=bool)]
        judged = c[c["claim"] == "verdict"]
        return {"n": len(c), "ours": int((c["status"] == "agree").sum()),
                "verdicts": len(judged), "fragile": int((judged["stability"].astype(float) < FRAGILE).sum()),
                "baseline": int(sum(_same(b, p) for b, p in zip(c["baseline"], c["paper"]))),
                "kappa": (cohen_kappa(kappa_rows["paper"], kappa_rows["ours"], kappa_rows["claim"]) if len(kappa_rows)
                          else math.nan),
                "no_effect": len(none), "no_effect_ours": int((none["status"] == "agree").sum())}
    tested = claims[claims["status"].isin(["agree", "disagree"]) & claims["counted"].astype(bool)]
    out = figures(tested)
    out["kinds"] = {kind: figures(c) for kind, c in tested.groupby("claim", sort=False)}
    return out


def _same(a, b) -> bool:
    return str(a) == str(b)


def headline_text(h: dict) -> str:
    """``k of n claims reproduced (kd-always-wins, which ignores our runs: b of n; Cohen's kappa, paper vs ours:
    x); of the m claims where the paper finds no effect, j reproduced``."""
    kappa = "n/a" if math.isnan(h["kappa"]) else f"{h['kappa']:.2f}"
    return (f"{h['ours']} of {h['n']} claims reproduced ({BASELINE}, which ignores our runs: {h['baseline']} of "
            f"{h['n']}; Cohen's kappa, paper vs ours: {kappa}); of the {h['no_effect']} claims where the paper finds "
            f"no effect, {h['no_effect_ours']} reproduced; {h['fragile']} of our {h['verdicts']} compared verdicts "
            f"fragile (stability below {FRAGILE:g})")


def regime(train_loss: float) -> str:
    """The teacher's train-loss regime (the paper ties transfer to it: Section 4.1.1)."""
    if math.isnan(train_loss):
        return "unknown"
    return "near zero" if train_loss < 0.01 else "low" if train_loss < 0.5 else "high"


def paper_means(setup) -> pd.DataFrame:
    return paper.means_for(setup.name, setup.temperature)


def paper_ticks(setup) -> pd.DataFrame:
    block = int(setup.feature_layer.rsplit(".", 1)[-1]) if setup.feature_layer else None
    return paper.ticks_for(setup.name, setup.temperature, block)


def _means(table: pd.DataFrame | None) -> dict:
    """(column, metric) -> mean of a mean +- SEM table (empty for None)."""
    if table is None:
        return {}
    return {(c, m): float(v) for c, m, v in zip(table["column"], table["metric"], table["mean"])}


def _better(kd: float, control: float, metric: str) -> bool | None:
    if math.isnan(kd) or math.isnan(control):
        return None
    return bool(kd < control) if lower_is_better(metric) else bool(kd > control)


def _improvement(means: dict, alpha: float) -> float:
    """Mean over the functional metrics of KD's gain over the better control (the ``marginal`` rule of
    :mod:`kdlib.analysis.stats`)."""
    gains = []
    for m in FUNCTIONAL_METRICS:
        kd, siddo, rcd = (means.get((c, m), math.nan) for c in (label("kd", alpha), "SIDDO", label("rcd", alpha)))
        best = min(siddo, rcd) if lower_is_better(m) else max(siddo, rcd)
        gains.append((best - kd) * (1 if lower_is_better(m) else -1))
    return float(np.mean(gains))


def setup_claims(setup, students: pd.DataFrame | None, teachers: pd.DataFrame | None,
                 analysis: dict | None = None) -> list[dict]:
    """Every claim of ``setup``'s paper tables with our value (None: not run) and whether they agree; ``analysis``:
    the runs' stored analysis (:mod:`kdlib.analysis`; computed from ``students`` when not given)."""
    claims = []
    if students is not None and not (students["condition"] == "kd").any():
        students = None  # only controls finished (shared with another setup): nothing to test yet
    if students is not None and analysis is None:
        analysis = analyse(students, **options(setup))
    ours_tests = analysis["tests"] if students is not None else None
    ours_verdicts = analysis["verdicts"] if students is not None else None  # verdicts and the deltas beside them
    our_seeds = set(students["teacher_seed"]) if students is not None else set()
    p_means, p_ticks = paper_means(setup), paper_ticks(setup)

    where = {"setup": setup.label, "profile": setup.profile, "readings": readings_text(setup)}

    def add(claim, seed, alpha, metric, control, paper_value, ours, source, rel=math.nan, stability=math.nan,
            paper_improvement=math.nan, mde80=math.nan):
        status = "not run" if ours is None else ("agree" if ours == paper_value else "disagree")
        claims.append({**where, "claim": claim, "teacher_seed": seed, "alpha": alpha, "metric": metric,
                       "control": control, "paper": paper_value, "ours": ours, "status": status, "source": source,
                       "relative_difference": rel, "baseline": baseline(claim), "counted": True,
                       "stability": stability, "paper_improvement": paper_improvement, "mde80": mde80})

    def our_test(seed, alpha, metric, column: str, default=None):
        if ours_tests is None or seed not in our_seeds or column not in ours_tests:
            return default
        row = ours_tests[(ours_tests["teacher_seed"] == seed) & np.isclose(ours_tests["alpha"], alpha)
                         & (ours_tests["metric"] == metric)]
        return row[column].iloc[0] if len(row) else default

    for _, t in p_ticks.iterrows():
        where_ = (int(t["teacher_seed"]), float(t["alpha"]), t["metric"])
        tick = our_test(*where_, "tick")
        add("tick", *where_, "SIDDO and RCD", bool(t["tick"]), None if tick is None else bool(tick),
            f"Table {t['table']}", mde80=float(our_test(*where_, "mde80", math.nan)))
    for seed, table in p_means.groupby("teacher_seed"):
        seed = int(seed)
        source = f"Table {int(table['table'].iloc[0])}"
        ours_table = (analysis["means"][analysis["means"]["teacher_seed"] == seed]
                      if students is not None and seed in our_seeds else None)
        theirs, ours_means = _means(table), _means(ours_table)
        for alpha in sorted(table["alpha"].dropna().unique()):
            ticks = p_ticks[(p_ticks["teacher_seed"] == seed) & np.isclose(p_ticks["alpha"], alpha)
                            & p_ticks["metric"].isin(FUNCTIONAL_METRICS)]
            if len(ticks) == len(FUNCTIONAL_METRICS) and {"SIDDO", label("rcd", alpha)} <= set(table["column"]):
                verdict = stats.verdict(int(ticks["tick"].sum()), len(FUNCTIONAL_METRICS), _improvement(theirs, alpha),
                                        setup.marginal_threshold, setup.majority)  # the paper's, under our rule
                mine = None if ours_table is None else ours_verdicts[
                    (ours_verdicts["teacher_seed"] == seed) & np.isclose(ours_verdicts["alpha"], alpha)]
                ours = mine["verdict"].iloc[0] if mine is not None and len(mine) else None
                steady = lambda col: (float(mine[col].iloc[0]) if mine is not None and len(mine) and col in mine
                                      else math.nan)
                add("verdict", seed, alpha, "", "", verdict, ours, f"Table {ticks['table'].iloc[0]}, {source}",
                    stability=steady("verdict_stability"), paper_improvement=_improvement(theirs, alpha),
                    mde80=steady("mde80"))
                if verdict == "supported":
                    ours = (bool(mine["negative_asymmetry"].iloc[0])
                            if mine is not None and len(mine) and "negative_asymmetry" in mine else None)
                    add("asymmetry", seed, alpha, "", "best control", True, ours, ASYMMETRY_SOURCE,
                        stability=steady("asymmetry_stability"))
            for metric in dict.fromkeys(table["metric"]):
                for control in ("SIDDO", label("rcd", alpha)):
                    paper_value = _better(theirs.get((label("kd", alpha), metric), math.nan),
                                          theirs.get((control, metric), math.nan), metric)
                    if paper_value is None:
                        continue
                    ours = None if ours_table is None else _better(
                        ours_means.get((label("kd", alpha), metric), math.nan),
                        ours_means.get((control, metric), math.nan), metric)
                    add("direction", seed, alpha, metric, control, paper_value, ours, source)
        accuracy = table[table["metric"] == "accuracy"]
        if len(accuracy):
            best = accuracy.loc[accuracy["mean"].idxmax(), "column"]
            ours = None
            if ours_table is not None:
                acc = ours_table[ours_table["metric"] == "accuracy"]
                ours = acc.loc[acc["mean"].idxmax(), "column"] if len(acc) else None
            add("best_accuracy", seed, math.nan, "accuracy", "", best, ours, source)
        if setup.profile == "paper" and ours_table is not None:
            for _, r in table.iterrows():
                mine = ours_means.get((r["column"], r["metric"]), math.nan)
                rel = (mine - r["mean"]) / abs(r["mean"]) if r["mean"] and not math.isnan(mine) else math.nan
                claims.append({**where, "claim": "mean", "teacher_seed": seed, "alpha": r["alpha"],
                               "metric": r["metric"], "control": r["column"], "paper": r["mean"], "ours": mine,
                               "status": "measured", "source": source, "relative_difference": rel,
                               "baseline": math.nan, "counted": False})
    for _, t in paper.teachers_for(setup.name).iterrows():
        seed = int(t["teacher_seed"])
        ours = None
        if students is not None and teachers is not None and seed in set(teachers["teacher_seed"]):
            ours = regime(float(teachers.set_index("teacher_seed").loc[seed, "train_loss"]))
        add("teacher_regime", seed, math.nan, "train_loss", "", regime(float(t["train_loss"])), ours,
            f"Table {t['table']}")
    ticked = {(c["teacher_seed"], c["alpha"], c["metric"]) for c in claims if c["claim"] == "tick"}
    for c in claims:  # a functional metric's tick stands for its KD-vs-control directions
        if c["claim"] == "direction" and (c["teacher_seed"], c["alpha"], c["metric"]) in ticked:
            c["counted"] = False
    return claims


def readings_text(setup) -> str:
    """The readings a setup's runs use, as ``id=choice, ...``."""
    return ", ".join(f"{r}={c}" for r, c in setup.readings)


def collected_labels(out, profile: str) -> dict[str, list[str]]:
    """Setup name -> the labels (one per set of readings, :attr:`kdlib.setups.Setup.label`) collected at ``profile``."""
    found: dict[str, set[str]] = {}
    for table in Path(out).glob(f"*/{profile}/runs.*"):
        label_ = table.parent.parent.name
        if label_.split("+")[0] in setups.names():
            found.setdefault(label_.split("+")[0], set()).add(label_)
    return {name: sorted(labels) for name, labels in found.items()}


def scorecard(names: list[str] | None, profile: str, out, level: int = 3) -> dict:
    """The claims of every named setup (default: every setup in the paper or collected under ``out`` at
    ``profile``; a label, ``name+id=choice``, names one set of readings), under every set of readings collected for
    it (the headline counts one per setup, its default readings where collected; the others are compared), a "k of
    n reproduced" line per setup that ran and overall, one line naming the setups not run, and a Markdown summary
    whose headings start at ``level`` (a notebook shows it under its own; :func:`write_scorecard` makes the file's
    first heading its title); where a setup was run under several readings, which agrees with more claims."""
    collected = collected_labels(out, profile)
    names = names or sorted(set(paper.SETUP_TABLES) | set(collected))
    rows, lines, compared, idle, made = [], [], [], {}, []
    regimes_counted: set[str] = set()  # teachers whose regime is counted already (shared by several setups)
    for name in names:
        labels = [name] if "+" in name else collected.get(name) or [setups.get(name, profile).label]
        name = name.split("+")[0]
        headline_label = name if name in labels else labels[0]  # other readings are compared, not counted again
        outcomes = []
        for label_ in labels:
            setup = setups.get(label_, profile)
            students, teachers, analysis = _runs_of(setup, out)
            if students is not None and (setup_dir(out, setup) / provenance.FILE).exists():
                made.append(f"- {label_}: " + provenance.describe(
                    json.loads((setup_dir(out, setup) / provenance.FILE).read_text())))
            claims = setup_claims(setup, students, teachers, analysis) if name in paper.SETUP_TABLES else []
            own = headline(pd.DataFrame(claims, columns=COLUMNS))  # this label's figures, for its line
            for c in claims:
                c["counted"] = c["counted"] and label_ == headline_label
            for c in claims:
                if c["claim"] == "teacher_regime" and c["status"] != "not run" and c["counted"]:
                    teacher = teacher_spec(setup, c["teacher_seed"]).run_id
                    c["counted"] = teacher not in regimes_counted
                    regimes_counted.add(teacher)
            rows += claims
            h = own
            not_run = sum(c["status"] == "not run" for c in claims)
            rel = [abs(c["relative_difference"]) for c in claims if c["claim"] == "mean"
                   and not math.isnan(c["relative_difference"])]
            outcomes.append((label_, h, float(np.mean(rel)) if rel else math.nan))
            if name not in paper.SETUP_TABLES and students is not None:
                lines.append(f"| {label_} | {readings_text(setup)} | not in the paper "
                             f"({paper.NOT_IN_PAPER.get(name, '')}) | | | | |")
            elif not_run < len(claims):  # ran: a claim of it is tested (or measured)
                lines.append(f"| {label_} | {readings_text(setup)} | {h['ours']} of {h['n']} | {h['baseline']} of "
                             f"{h['n']} | {h['no_effect_ours']} of {h['no_effect']} | {not_run} | "
                             f"{_disagreements(claims)} |")
            else:
                idle[label_] = len(claims)
        ran = [o for o in outcomes if o[1]["n"]]
        if len(ran) > 1:
            compared.append(_compare_readings(name, ran))
    table = pd.DataFrame(rows, columns=COLUMNS)
    overall = headline(table)
    scale = ("" if profile == "paper" else f" (the {profile} profile: a different scale from the paper's, "
                                           f"so differences are expected)")
    not_run = int((table["status"] == "not run").sum())
    idle_claims = sum(idle.values())
    where = [f"{idle_claims} of the {len(idle)} setups with no runs"] if idle else []
    if not_run > idle_claims:
        where.append(f"{not_run - idle_claims} of teacher seeds or conditions the setups that ran lack")
    summary = f"{headline_text(overall)}; {not_run} claims not run here{': ' if where else ''}{', '.join(where)}{scale}"
    kinds = [f"| {kind} | {f['n']} | {f['ours']} | {f['baseline']} | "
             f"{'n/a' if math.isnan(f['kappa']) else format(f['kappa'], '.2f')} | "
             f"{f['no_effect_ours']} of {f['no_effect']} |" for kind, f in overall["kinds"].items()]
    markdown = [f"{'#' * level} Reproduction scorecard: {profile} profile", "", summary + ".", "",
                f"Each count beside what `{BASELINE}`, a predictor that never looks at our runs, gets on the same "
                "claims; kappa is Cohen's, paper vs ours (chance-corrected); a fact counts once.", ""]
    if kinds:
        markdown += [f"| claim | counted | ours agree | {BASELINE} agrees | kappa | no effect in the paper: ours |",
                     "|---|---|---|---|---|---|", *kinds, ""]
    if lines:
        markdown += [f"| setup | readings | reproduced | {BASELINE} | no effect reproduced | claims not run | "
                     "disagreements (claim: paper / ours) |", "|---|---|---|---|---|---|---|", *lines, ""]
    if idle:
        markdown += [f"Not run here: {len(idle)} setups ({idle_claims} claims of the paper): "
                     f"{', '.join(idle)}; run one with `python -m kdlib study SETUP --profile {profile}`.", ""]
    if compared:
        markdown += [f"{'#' * (level + 1)} Readings compared", "", "Where a setup ran under several readings of the "
                     "paper (`kdlib/setups/readings.py`), which agrees with more of its claims:", "", *compared, ""]
    if made:
        markdown += [f"{'#' * (level + 1)} What made the runs", "", *made, ""]
    markdown += ["Claims: tick, verdict, direction (KD vs each control per metric), asymmetry, best accuracy and "
                 "teacher regime, as described in `kdlib/analysis/scorecard.py`; every claim is a row of "
                 "`scorecard.csv`.", ""]
    return {"claims": table, "summary": summary, "markdown": "\n".join(markdown), "compared": compared}


def _runs_of(setup, out) -> tuple:
    """(students, teachers, analysis) of a setup: its collected tables and stored analysis, or, where it is not
    collected, the runs finished in the store (e.g. a teacher another setup shares); (None, None, None) if none."""
    folder = setup_dir(out, setup)
    if list(folder.glob("runs.*")):
        students, teachers = read_table(folder / "runs"), read_table(folder / "teachers")
        analysis = collected_analysis(folder) if len(students) else None
    else:
        students, teachers = collect(setup, out, write=False)
        analysis = None
    if students.empty:
        return None, None, None
    return students, teachers, analysis


def _compare_readings(name: str, outcomes: list[tuple[str, dict, float]]) -> str:
    """One line: each label's agreeing claims beside the baseline's, its kappa and its no-effect claims (and, at
    the paper profile, the mean relative difference of the means), and which reading agrees with more."""
    best = max(outcomes, key=lambda o: (o[1]["ours"] / o[1]["n"], -o[2] if not math.isnan(o[2]) else 0.0))
    parts = [f"`{label_}` {headline_text(h)}" + ("" if math.isnan(rel) else f" (mean relative difference {rel:.3f})")
             for label_, h, rel in outcomes]
    return f"- {name}: " + "; ".join(parts) + f". More agree under `{best[0]}`."


def _disagreements(claims: list[dict], most: int = 4) -> str:
    out = []
    for c in claims:
        if c["status"] == "disagree":
            where = ", ".join(str(v) for v in (f"seed {c['teacher_seed']}",
                                                "" if pd.isna(c["alpha"]) else f"α {c['alpha']:g}",
                                                c["metric"], c["control"]) if v)
            out.append(f"{c['claim']} ({where}): {c['paper']} / {c['ours']}")
    more = len(out) - most
    return "; ".join(out[:most]) + (f"; and {more} more" if more > 0 else "")


def write_scorecard(card: dict, out) -> list[Path]:
    """``out/scorecard.csv`` (every claim; its ``profile`` column says which run) and ``out/scorecard.md`` (its
    headings raised so that the first is the file's level-1 title)."""
    paths = [Path(out) / "scorecard.csv", Path(out) / "scorecard.md"]
    write_csv(card["claims"], paths[0])
    levels = [len(h) for h in re.findall(r"^(#+) ", card["markdown"], flags=re.M)]
    lift = min(levels, default=1) - 1
    write_text(paths[1], re.sub(r"^(#+) ", lambda h: "#" * (len(h[1]) - lift) + " ", card["markdown"], flags=re.M))
    return paths
