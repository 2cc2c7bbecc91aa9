"""Extract the paper's reported results from its text into the CSVs of ``kdlib/paper/``.

Usage: ``python tools/extract_paper_tables.py [PAPER_TXT] [--out DIR]`` (defaults: the paper's text at
``../shared/paper/functional-kd.txt`` beside the repository, and ``kdlib/paper``). :mod:`kdlib.paper`
documents the CSVs and their columns.

The text is the paper's HTML flattened to lines: a table is its ``Table N:`` caption line, then its header
lines, then one line per row. Each kind of table has its own parser, and every table is listed below with the
setup it belongs to (decided by hand from its caption and the section it sits in), so a change in the text
fails loudly instead of shifting values. Every line of a table must parse completely; the only cells kept
without a value are the ones the text garbles (``inf, nan``) or leaves empty, as NaN with a note quoting
what was printed. Measured values are written as the paper prints them, digit for digit (``0.000061``,
``0.0910``, ``106.000``), after checking each is a number; alphas are written as floats (``0.900`` -> 0.9).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from kdlib.paper import COLUMNS  # the CSV schema is defined once, beside the loader (kdlib installed: pip install -e .)

REPO = Path(__file__).resolve().parents[1]

DEFAULT_PAPER = REPO.parent / "shared" / "paper" / "functional-kd.txt"
DEFAULT_OUT = REPO / "kdlib" / "paper"

# ------------------------------------------------------------------------------------------ tables and setups

# Mean ± 1 SEM tables: table -> setup, or {temperature: setup} where one table holds several temperatures.
MEANS_TABLES: dict[int, str | dict[int, str]] = {
    3: "svhn-resnet18", 31: "svhn-resnet18", 61: "svhn-resnet18", 62: "svhn-resnet18",  # 31: Appendix A, seed 0
    64: "svhn-vgg19", 65: "svhn-vgg19", 66: "svhn-vgg19",
    69: "svhn-vit", 70: "svhn-vit", 71: "svhn-vit",
    6: "tinyimagenet-resnet50", 32: "tinyimagenet-resnet50",  # 32: Appendix A, Table 6 plus VoI and OPD
    47: "tinyimagenet-resnet50", 48: "tinyimagenet-resnet50",
    8: "tinyimagenet-resnet50-randaug", 49: "tinyimagenet-resnet50-randaug", 50: "tinyimagenet-resnet50-randaug",
    # 33: Appendix B; its caption says "ResNet18" but its SIDDO/KD/RCD columns are Table 6's (ResNet50).
    33: "tinyimagenet-resnet50-label-smoothing",
    52: "tinyimagenet-vgg19", 53: "tinyimagenet-vgg19", 54: "tinyimagenet-vgg19",
    57: "tinyimagenet-vgg19-randaug", 58: "tinyimagenet-vgg19-randaug", 59: "tinyimagenet-vgg19-randaug",
    16: "tinyimagenet-resnet50-to-resnet18", 35: "tinyimagenet-resnet50-to-resnet18",
    36: "tinyimagenet-resnet50-to-resnet18",
    18: "imagenet-resnet50-to-resnet18",
    25: {1: "imagenet-resnet50-to-resnet18", 2: "imagenet-resnet50-to-resnet18-t2"},
    37: "imagenet-resnet50-to-resnet18-t2",  # Appendix C.2.1: the T = 2 run with its own SIDDO and RCD
    10: "speechcommands-vggish", 74: "speechcommands-vggish", 75: "speechcommands-vggish",
    77: "speechcommands-ast", 78: "speechcommands-ast", 79: "speechcommands-ast",
    12: "urbansound8k-vggish", 82: "urbansound8k-vggish", 83: "urbansound8k-vggish",
    85: "urbansound8k-ast", 86: "urbansound8k-ast", 87: "urbansound8k-ast",
    14: "tinyshakespeare-nanogpt", 89: "tinyshakespeare-nanogpt", 90: "tinyshakespeare-nanogpt",
    20: "tinyshakespeare-nanogpt-to-picogpt", 39: "tinyshakespeare-nanogpt-to-picogpt",
    40: "tinyshakespeare-nanogpt-to-picogpt",
    27: {1: "tinyshakespeare-nanogpt-to-picogpt", 2: "tinyshakespeare-nanogpt-to-picogpt-t2",
         4: "tinyshakespeare-nanogpt-to-picogpt-t4"},
    41: "tinyshakespeare-nanogpt-to-picogpt-t2", 42: "tinyshakespeare-nanogpt-to-picogpt-t2",
    43: "tinyshakespeare-nanogpt-to-picogpt-t2",
    44: "tinyshakespeare-nanogpt-to-picogpt-t4", 45: "tinyshakespeare-nanogpt-to-picogpt-t4",
    46: "tinyshakespeare-nanogpt-to-picogpt-t4",
    22: "tinyshakespeare-nanogpt-featuremap-block4", 23: "tinyshakespeare-nanogpt-featuremap-block5",
}
EXTENDED_METRIC_TABLES = (31, 32)  # Appendix A: two more metric rows


def _seeds(setup: str, n: int = 3) -> tuple[tuple[str, int, int | None], ...]:
    """Tick entries of one setup's teacher seeds 0..n-1, left to right, as (setup, teacher seed, block)."""
    return tuple((setup, seed, None) for seed in range(n))


# Significance tables: table -> the (setup, teacher seed, block) of each tick in a cell, left to right.
TICK_TABLES: dict[int, tuple[tuple[str, int, int | None], ...]] = {
    4: _seeds("svhn-resnet18"), 67: _seeds("svhn-vgg19"), 72: _seeds("svhn-vit"),
    7: _seeds("tinyimagenet-resnet50"), 9: _seeds("tinyimagenet-resnet50-randaug"),
    55: _seeds("tinyimagenet-vgg19"), 60: _seeds("tinyimagenet-vgg19-randaug"),
    17: _seeds("tinyimagenet-resnet50-to-resnet18"),
    19: _seeds("imagenet-resnet50-to-resnet18", 1),  # ImageNet: one (pretrained) teacher, Appendix C.2
    26: _seeds("imagenet-resnet50-to-resnet18-t2", 1),
    11: _seeds("speechcommands-vggish"), 80: _seeds("speechcommands-ast"),
    13: _seeds("urbansound8k-vggish"), 88: _seeds("urbansound8k-ast"),
    15: _seeds("tinyshakespeare-nanogpt"), 21: _seeds("tinyshakespeare-nanogpt-to-picogpt"),
    28: _seeds("tinyshakespeare-nanogpt-to-picogpt-t2"), 29: _seeds("tinyshakespeare-nanogpt-to-picogpt-t4"),
    # 24: each cell is (block 4, block 5) of the feature-map runs, whose one teacher is seed 0 (Tables 22-23).
    24: (("tinyshakespeare-nanogpt-featuremap-block4", 0, 4), ("tinyshakespeare-nanogpt-featuremap-block5", 0, 5)),
}

# Teacher tables: table -> setup, or {section line: setup} for a table with sections.
TEACHER_TABLES: dict[int, str | dict[str, str]] = {
    2: "svhn-resnet18", 63: "svhn-vgg19",
    68: "svhn-vit",  # generic caption; it sits in Appendix D.2.3 ViT (SVHN)
    5: {"Base": "tinyimagenet-resnet50", "RandAugment": "tinyimagenet-resnet50-randaug"},
    34: "tinyimagenet-resnet50-to-resnet18",  # Appendix C.1; the same numbers as Table 5's base teachers
    51: "tinyimagenet-vgg19",  # generic caption; Appendix D.1.3 VGG19, train loss 0.000286 as its text says
    56: "tinyimagenet-vgg19-randaug",  # generic caption; Appendix D.1.4 VGG19 + RandAugment, train loss ~0.27
    38: "tinyshakespeare-nanogpt-to-picogpt",  # Appendix C.3, the Nano-GPT teachers of the Pico-GPT students
    73: "speechcommands-vggish", 76: "speechcommands-ast", 81: "urbansound8k-vggish", 84: "urbansound8k-ast",
    92: "tinyshakespeare-adversarial",  # the adversarial teachers, evaluated on the clean text
}

TH_TABLES = (30, 93, 94)
TH_SETUP = "tinyshakespeare-adversarial"
CHAR_TABLE = 91
MODELS_TABLE = 95
MODEL_GROUPS = ("Self-distillation", "Standard distillation", "Scaling laws of transfer", "Temperature",
                "Feature map matching KD", "Adversarial")

SETUP_TEMPERATURE = {"imagenet-resnet50-to-resnet18-t2": 2, "tinyshakespeare-nanogpt-to-picogpt-t2": 2,
                     "tinyshakespeare-nanogpt-to-picogpt-t4": 4}  # every other setup distils at T = 1

# ------------------------------------------------------------------------------------------ cells and headers

NUMBER = r"\d+(?:\.\d+)?"
# "0.063±0.002\pm{0.002}", "0.157 ±\pm{} 0.001", "0.420 ± 0.001"; or a garbled "inf, nan".
CELL = re.compile(rf"(?P<mean>{NUMBER})\s*±\s*(?:\\pm\{{\}}\s*)?(?P<sem>{NUMBER})(?:\\pm\{{(?P<copy>[^}}]*)\}})?"
                  r"|(?P<garbled>(?:inf|nan)(?:,\s*(?:inf|nan))?)")
GROUP = re.compile(r"(?P<control>Control|Baseline|Basline)"
                   r"|(?P<rcd>Random Control Distillation|Random Knowledge Distillation|Rand Knowledge Distillation)"
                   r"|(?P<ls>Label Smoothing)|(?P<kd>Knowledge Distillation)(?: T = (?P<t>\d+))?")
ALPHA_COLUMN = re.compile(r"(?P<siddo>SIDDO)|(?:(?P<prefix>KD|Rand KD) )?(?P<alpha>0\.\d+)")
GROUP_PREFIX = {"kd": "KD", "rcd": "Rand KD"}
METRICS = {"Activation Distance": "activation_distance", "Rank Disagreement": "rank_disagreement",
           "Prediction Disagreement": "prediction_disagreement", "JS Divergence": "js_divergence",
           "Information Variation": "variation_of_information", "Variation of Information": "variation_of_information",
           "Procrustes Distance": "procrustes_distance", "Accuracy": "accuracy", "Loss": "loss"}
METRIC_ROW = re.compile(rf"(?P<label>{'|'.join(METRICS)})(?:\s*\(\\mathbf\{{\\(?:up|down)arrow\}}\))?\s+(?P<cells>.*)")
STANDARD_METRICS = ("activation_distance", "rank_disagreement", "prediction_disagreement", "js_divergence",
                    "accuracy", "loss")
EXTENDED_METRICS = STANDARD_METRICS[:4] + ("variation_of_information", "procrustes_distance") + STANDARD_METRICS[4:]
TICK_HEADER = "Activation Distance Rank Disagreement Prediction Disagreement JS Divergence Accuracy Loss"
TEACHER_HEADER = "Teacher Seed Train Loss Train Accuracy Test Loss Test Accuracy"
TEACHER_ROW = re.compile(rf"(?P<seed>\d) (?P<train_loss>{NUMBER}) (?P<train_accuracy>{NUMBER}) "
                         rf"(?P<test_loss>{NUMBER}) (?P<test_accuracy>{NUMBER})")


def scan(pattern: re.Pattern, text: str, what: str) -> list[re.Match]:
    """The matches of ``pattern`` that, separated by whitespace, make up all of ``text``; raise on anything else,
    so that nothing in a table line is silently skipped."""
    matches, pos, text = [], 0, text.strip()
    while pos < len(text):
        match = pattern.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"{what}: cannot parse {text[pos:]!r}")
        matches.append(match)
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return matches


def table_lines(lines: list[str], number: int, count: int) -> tuple[str, list[str]]:
    """The caption of Table ``number`` and the ``count`` lines after it."""
    starts = [i for i, line in enumerate(lines) if line.startswith(f"Table {number}:")]
    if len(starts) != 1:
        raise ValueError(f"Table {number}: {len(starts)} caption lines")
    start = starts[0]
    return lines[start], lines[start + 1:start + 1 + count]


def caption_seed(caption: str) -> int:
    """The one teacher seed a caption names ("Teacher Seed 1", "(teacher seed 0)")."""
    seeds = re.findall(r"teacher seed (\d)", caption, flags=re.IGNORECASE)
    if len(seeds) != 1:
        raise ValueError(f"no single teacher seed in {caption!r}")
    return int(seeds[0])


def cell_value(match: re.Match) -> tuple[str | None, str | None, str]:
    """(mean, sem, note) of a parsed cell, as printed: None and a note quoting the text where it is garbled."""
    printed = f'printed "{match.group(0)}"'
    if match["garbled"]:
        return None, None, printed
    if match["copy"] is not None and match["copy"] != match["sem"]:  # the \pm{...} copy disagrees
        return match["mean"], None, printed
    return match["mean"], match["sem"], ""


def header_columns(group_line: str, alpha_line: str, table: int) -> list[tuple[str, float, int | None]]:
    """(condition, alpha, temperature or None) of each column, from the group line ("Control Knowledge
    Distillation Random Control Distillation", "Knowledge Distillation T = 2", ...) and the alpha line
    ("SIDDO 0.1 0.5 0.9 ..." or "SIDDO KD 0.1 ... Rand KD 0.9"); checks the two lines agree."""
    groups = [(name, group["t"]) for group in scan(GROUP, group_line, f"Table {table} header")
              for name, value in group.groupdict().items() if value and name != "t"]
    alphas = scan(ALPHA_COLUMN, alpha_line, f"Table {table} alphas")
    if [name for name, _ in groups].count("control") != 1 or groups[0][0] != "control" or not alphas[0]["siddo"]:
        raise ValueError(f"Table {table}: the first column is not the SIDDO control")
    columns = [("siddo", float("nan"), None)]
    students = [(name, t) for name, t in groups[1:] for _ in range(3)]
    if [a["alpha"] and float(a["alpha"]) for a in alphas[1:]] != [0.1, 0.5, 0.9] * (len(groups) - 1):
        raise ValueError(f"Table {table}: alphas {alpha_line!r} under {len(groups) - 1} groups of 0.1, 0.5, 0.9")
    for (name, t), alpha in zip(students, alphas[1:]):
        if alpha["prefix"] and alpha["prefix"] != GROUP_PREFIX.get(name):
            raise ValueError(f"Table {table}: column {alpha.group(0)!r} under {name}")
        columns.append((name, float(alpha["alpha"]), int(t) if t else None))
    return columns


# ------------------------------------------------------------------------------------------ parsers

def means_table(lines: list[str], table: int) -> list[dict]:
    """Rows of a mean ± 1 SEM table: one per (column, metric)."""
    metrics = EXTENDED_METRICS if table in EXTENDED_METRIC_TABLES else STANDARD_METRICS
    caption, block = table_lines(lines, table, 2 + len(metrics) + 1)
    group_line, alpha_line, *metric_lines, after = block
    if not re.match(r"Metrics? ", group_line):
        raise ValueError(f"Table {table}: header {group_line!r}")
    columns = header_columns(group_line.split(" ", 1)[1], alpha_line, table)
    if METRIC_ROW.match(after):
        raise ValueError(f"Table {table}: more metric rows than {metrics}")
    seed, spec, rows = caption_seed(caption), MEANS_TABLES[table], []
    for metric, line in zip(metrics, metric_lines):
        row = METRIC_ROW.fullmatch(line)
        if row is None or METRICS[row["label"]] != metric:
            raise ValueError(f"Table {table}: expected a {metric} row, got {line!r}")
        cells = scan(CELL, row["cells"], f"Table {table} {metric}")
        if len(cells) != len(columns):
            raise ValueError(f"Table {table} {metric}: {len(cells)} cells for {len(columns)} columns")
        for (condition, alpha, t), cell in zip(columns, cells):
            setup, temperature = column_setup(spec, condition, t, table)
            mean, sem, note = cell_value(cell)
            rows.append(dict(table=table, setup=setup, teacher_seed=seed, condition=condition, alpha=alpha,
                             temperature=temperature, metric=metric, mean=mean, sem=sem, note=note))
    return rows


def column_setup(spec: str | dict[int, str], condition: str, t: int | None, table: int) -> tuple[str, int]:
    """(setup, temperature) of a column. A table of one setup takes the setup's temperature; a table of
    several temperatures (25, 27) names T over each KD group, and its SIDDO control is the T = 1 one."""
    if isinstance(spec, str):
        if t is not None:
            raise ValueError(f"Table {table}: a temperature in the header of a one-setup table")
        return spec, SETUP_TEMPERATURE.get(spec, 1)
    temperature = 1 if condition == "siddo" else t
    if temperature not in spec:
        raise ValueError(f"Table {table}: no setup for {condition} at T = {temperature}")
    return spec[temperature], temperature


def tick_table(lines: list[str], table: int) -> list[dict]:
    """Rows of a significance table: one per (alpha, metric, tick entry); an entry is a teacher seed, or a
    feature-map block in Table 24. A row printed without ticks gives NA ticks with a note."""
    entries = TICK_TABLES[table]
    caption, (header, *alpha_lines) = table_lines(lines, table, 4)
    check_tick_caption(caption, entries, table)
    if header != TICK_HEADER:
        raise ValueError(f"Table {table}: header {header!r}")
    rows = []
    for line, expected in zip(alpha_lines, ("0.1", "0.5", "0.9")):
        prefix = f"KD {expected}"
        if not (line == prefix or line.startswith(prefix + " ")):
            raise ValueError(f"Table {table}: expected a {prefix} row, got {line!r}")
        cells = line[len(prefix):].split()
        if not cells:
            cells, note = [[None] * len(entries)] * len(STANDARD_METRICS), f'printed "{line}" (no ticks)'
        elif len(cells) == len(STANDARD_METRICS) and all(len(c) == len(entries) and set(c) <= {"✓", "✗"}
                                                         for c in cells):
            cells, note = [[tick == "✓" for tick in cell] for cell in cells], ""
        else:
            raise ValueError(f"Table {table}: cannot read ticks of {line!r}")
        for metric, cell in zip(STANDARD_METRICS, cells):
            for (setup, seed, block), tick in zip(entries, cell):
                rows.append(dict(table=table, setup=setup, alpha=float(expected),
                                 temperature=SETUP_TEMPERATURE.get(setup, 1), block=block, metric=metric,
                                 teacher_seed=seed, tick=tick, note=note))
    return rows


def check_tick_caption(caption: str, entries: tuple, table: int) -> None:
    """The caption must say what the ticks of a cell are: three teacher seeds, two blocks, or (ImageNet) one."""
    says_seeds = re.search(r"seeds 0(?: to |-)2", caption) is not None
    says_blocks = "Block 4" in caption and "Block 5" in caption
    kind = "blocks" if entries[0][2] is not None else "seeds" if len(entries) == 3 else "single"
    if (kind == "seeds") != says_seeds or (kind == "blocks") != says_blocks:
        raise ValueError(f"Table {table}: caption {caption!r} does not describe {kind} ticks")


def teacher_table(lines: list[str], table: int) -> list[dict]:
    """Rows of a teacher performance table: one per teacher seed (per section in Table 5)."""
    spec = TEACHER_TABLES[table]
    sections = spec if isinstance(spec, dict) else {None: spec}
    count = 1 + 3 * len(sections) + (len(sections) if isinstance(spec, dict) else 0)
    _, (header, *body) = table_lines(lines, table, count)
    if header != TEACHER_HEADER:
        raise ValueError(f"Table {table}: header {header!r}")
    rows, setup = [], sections.get(None)
    for line in body:
        if line in sections:
            setup = sections[line]
            continue
        row = TEACHER_ROW.fullmatch(line)
        if row is None or setup is None:
            raise ValueError(f"Table {table}: cannot read {line!r}")
        values = {key: value for key, value in row.groupdict().items() if key != "seed"}
        rows.append(dict(table=table, setup=setup, teacher_seed=int(row["seed"]), **values, note=""))
    if [(r["setup"], r["teacher_seed"]) for r in rows] != [(s, seed) for s in sections.values() for seed in range(3)]:
        raise ValueError(f"Table {table}: not teacher seeds 0-2 per section")
    return rows


def th_table(lines: list[str], table: int) -> list[dict]:
    """Rows of an adversarial "th_" table: one per (word, model); the teacher's count has no SEM."""
    caption, (group_line, alpha_line, *word_lines) = table_lines(lines, table, 4)
    prefix = "Predicted Word Teacher "
    if not alpha_line.startswith(prefix):
        raise ValueError(f"Table {table}: header {alpha_line!r}")
    columns = header_columns(group_line, alpha_line[len(prefix):], table)
    seed, rows = caption_seed(caption), []
    for line, word in zip(word_lines, ("tha", "the")):
        row = re.fullmatch(rf"{word} (?P<teacher>\d+) (?P<cells>.*)", line)
        if row is None:
            raise ValueError(f"Table {table}: expected a {word!r} row, got {line!r}")
        cells = scan(CELL, row["cells"], f"Table {table} {word}")
        if len(cells) != len(columns):
            raise ValueError(f"Table {table} {word}: {len(cells)} cells for {len(columns)} columns")
        base = dict(table=table, setup=TH_SETUP, teacher_seed=seed, word=word)
        rows.append(dict(base, model="teacher", alpha=float("nan"), mean=row["teacher"], sem=None, note=""))
        for (condition, alpha, _), cell in zip(columns, cells):
            mean, sem, note = cell_value(cell)
            rows.append(dict(base, model=condition, alpha=alpha, mean=mean, sem=sem, note=note))
    return rows


def char_table(lines: list[str]) -> list[dict]:
    """Table 91's rows: one per character, "Space" written as " "."""
    _, (characters, frequencies) = table_lines(lines, CHAR_TABLE, 2)
    label, *chars = characters.split(" ")
    label2, *values = frequencies.split(" ")
    if ((label, label2) != ("Character", "Frequency") or len(chars) != len(values)
            or not all(re.fullmatch(NUMBER, value) for value in values)):
        raise ValueError(f"Table {CHAR_TABLE}: cannot read {characters!r} / {frequencies!r}")
    return [dict(table=CHAR_TABLE, character=" " if char == "Space" else char, frequency=value)
            for char, value in zip(chars, values)]


EXPERIMENT = re.compile(r"(?:(?:,|and)\s+)?(?P<label>.+?)(?::\s*|\s+(?=[\d,]+$))(?P<models>\d[\d,]*)(?=[\s,]|$)")


def models_table(lines: list[str]) -> list[dict]:
    """Table 95's rows: each group's printed count, each experiment inside it, and the study's total, which
    only Appendix G's text states ("... 4,189 models trained as shown in Table 95")."""
    _, block = table_lines(lines, MODELS_TABLE, len(lines))
    block = block[:block.index("References")]
    if block[:3] != ["Experimental", "Condition", " ".join(MODEL_GROUPS)] or block[3] != "Models Trained":
        raise ValueError(f"Table {MODELS_TABLE}: unexpected header {block[:4]}")
    groups: list[list[str]] = []  # [count, text lines...] per group: a line holding only a number opens one
    for line in filter(None, block[4:]):
        if re.fullmatch(r"\d[\d,]*", line):
            groups.append([line])
        else:
            groups[-1].append(line)
    if len(groups) != len(MODEL_GROUPS):
        raise ValueError(f"Table {MODELS_TABLE}: {len(groups)} groups of counts for {len(MODEL_GROUPS)} columns")
    rows = []
    for name, (count, *text) in zip(MODEL_GROUPS, groups):
        rows.append(dict(table=MODELS_TABLE, level="group", group=name, experiment="", models=count_of(count), note=""))
        body = re.sub(r"^\((.*)\)$", r"\1", " ".join(text)).strip()
        for match in scan(EXPERIMENT, body, f"Table {MODELS_TABLE} {name}"):
            rows.append(dict(table=MODELS_TABLE, level="experiment", group=name, experiment=match["label"].strip(),
                             models=count_of(match["models"]), note=""))
    total = re.search(r"(\d[\d,]*) models trained as shown in Table 95", "\n".join(lines))
    if total is None:
        raise ValueError("Appendix G: no total of models trained")
    rows.append(dict(table=MODELS_TABLE, level="total", group="", experiment="", models=count_of(total[1]),
                     note=f'stated in Appendix G: "{total[0]}"'))
    return rows


def count_of(printed: str) -> int:
    """An integer printed with thousands separators ("2,556")."""
    return int(printed.replace(",", ""))


# ------------------------------------------------------------------------------------------ assembling

PRINTED = ("mean", "sem", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "frequency")
SORT_KEYS = {
    "means": ["table", "setup", "teacher_seed", "condition", "alpha", "temperature", "metric"],
    "ticks": ["table", "setup", "block", "alpha", "metric", "teacher_seed"],
    "teachers": ["table", "setup", "teacher_seed"],
    "th_completions": ["table", "teacher_seed", "word", "model", "alpha"],
    "char_frequency": ["table", "character"],
    "models": ["table", "level", "group", "experiment"],
}


def tidy(rows: list[dict], kind: str) -> pd.DataFrame:
    """``rows`` as a frame with the CSV's columns, sorted by its key columns (which must be unique). Keys have
    the loader's dtypes; measured values stay the strings the paper prints, which the loader reads as floats."""
    dtypes = {col: "str" if col in PRINTED else dtype for col, dtype in COLUMNS[kind].items()}
    frame = pd.DataFrame(rows, columns=list(dtypes)).astype(dtypes)
    keys = SORT_KEYS[kind]
    if frame.duplicated(keys).any():
        raise ValueError(f"{kind}: duplicate rows for {keys}")
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def extract(text: str) -> dict[str, pd.DataFrame]:
    """Every CSV's frame (keyed by file stem, e.g. ``means``) from the paper's text, holding what the CSV
    will: read back through :func:`kdlib.paper.read_csv`, it is what the loader returns."""
    lines = [line.rstrip() for line in text.splitlines()]
    rows = {
        "means": [row for table in MEANS_TABLES for row in means_table(lines, table)],
        "ticks": [row for table in TICK_TABLES for row in tick_table(lines, table)],
        "teachers": [row for table in TEACHER_TABLES for row in teacher_table(lines, table)],
        "th_completions": [row for table in TH_TABLES for row in th_table(lines, table)],
        "char_frequency": char_table(lines),
        "models": models_table(lines),
    }
    return {kind: tidy(kind_rows, kind) for kind, kind_rows in rows.items()}


def write(frames: dict[str, pd.DataFrame], out: Path) -> None:
    """Each frame as ``out/<kind>.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    for kind, frame in frames.items():
        frame.to_csv(out / f"{kind}.csv", index=False, lineterminator="\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paper", nargs="?", type=Path, default=DEFAULT_PAPER, help="the paper's text")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the CSVs")
    args = parser.parse_args(argv)
    frames = extract(args.paper.read_text(encoding="utf-8"))
    write(frames, args.out)
    for kind, frame in frames.items():
        print(f"{args.out / kind}.csv: {len(frame)} rows")


if __name__ == "__main__":
    main()
