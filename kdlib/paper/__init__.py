"""The paper's reported results, machine-readable: to put beside our numbers and to check claims against.

Source: "A Functional Perspective on Knowledge Distillation in Neural Networks" (arXiv 2510.12615), read from
its text (``../shared/paper/functional-kd.txt`` beside the checkout) by ``tools/extract_paper_tables.py``,
which writes the CSVs in this folder. Regenerate with ``python tools/extract_paper_tables.py``; the test
``tests/test_paper_tables.py`` re-extracts and checks the committed CSVs are what the text gives. The CSVs
hold measured values digit for digit as printed (``0.000061``, ``0.0910``; most are rounded to 3 decimals),
which the functions here return as floats; ``table`` is always the paper's table number.

Files and columns (``setup``: a :mod:`kdlib.setups` name; ``teacher_seed``: 0-2; ``alpha``: the KD / RCD
weight, or label smoothing's epsilon, NaN for SIDDO and the teacher; ``note``: what the text printed where a
cell is garbled or missing, e.g. ``printed "inf, nan"``, with the value NaN, else empty):

- ``means.csv`` (:func:`means`): students' mean and ± 1 SEM over 10 student seeds. ``condition``: siddo, kd,
  rcd or ls (label smoothing, Table 33); ``temperature``: the distillation temperature of the setup (Tables 25
  and 27 put several in one table; their SIDDO column is the T = 1 control); ``metric``: activation_distance,
  rank_disagreement, prediction_disagreement, js_divergence, accuracy, loss, and in Tables 31-32
  variation_of_information ("Information Variation") and procrustes_distance. Some tables repeat others:
  select by ``table`` to avoid counting a value twice. Tables 31/32 are Tables 3/6 with two more metrics,
  Table 33's SIDDO/KD/RCD columns are Table 6's (its caption says ResNet18; the numbers are ResNet50's),
  Table 25 is Table 18's SIDDO and KD plus Table 37's KD (which differs from it in a few cells), and Table
  27 is the KD columns of Tables 20, 41 and 44 beside a SIDDO column equal to Table 40's (teacher seed 2,
  though the caption says seed 0).
- ``ticks.csv`` (:func:`ticks`): significance of KD over the controls (✓ = ``tick`` True), one row per
  (alpha, metric, teacher seed); ``block`` is the feature-map block (4 or 5) in Table 24, else empty. The text
  of Tables 19 and 26 (ImageNet, teacher seed 0 only) has no ticks: ``tick`` is empty there, with a note.
- ``teachers.csv`` (:func:`teachers`): train/test loss and accuracy of each teacher seed. Table 38 (Nano-GPT
  teachers) is presented for the Pico-GPT setup; the paper prints no other Nano-GPT teacher table. The
  ImageNet teacher is torchvision's pretrained ResNet50 (top-1 80.858, in the text, not in a table).
- ``th_completions.csv`` (:func:`th_completions`): Tables 30, 93, 94, the adversarial experiment: how many
  clean-text "th_" prompts each model completes to ``word`` "tha" or "the". ``model``: teacher (one count,
  no SEM), siddo, kd or rcd (mean ± 1 SEM over 10 students).
- ``char_frequency.csv`` (:func:`char_frequency`): Table 91, the top characters of TinyShakespeare; the
  paper's "Space" is written as the character " ".
- ``models.csv`` (:func:`models`): Table 95, models trained per experiment. ``level``: ``group`` (a column
  of the table with its printed count), ``experiment`` (a line inside a group), ``total`` (4,189, stated in
  Appendix G's text, which Table 95 does not print).

:data:`SETUP_TABLES` maps every registered setup the paper covers to the tables holding its results,
:data:`NOT_IN_PAPER` gives the reason for the others, :data:`UNMAPPED_TABLES` the extracted tables no setup
owns. This module imports only pandas, numpy and the standard library (no torch), so reports load it cheaply.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from ..conditions import label

DATA_DIR = Path(__file__).resolve().parent

# Column dtypes of each CSV, in column order; the extractor builds its frames with the same ones.
COLUMNS: dict[str, dict[str, str]] = {
    "means": {"table": "int64", "setup": "str", "teacher_seed": "int64", "condition": "str", "alpha": "float64",
              "temperature": "int64", "metric": "str", "mean": "float64", "sem": "float64", "note": "str"},
    "ticks": {"table": "int64", "setup": "str", "alpha": "float64", "temperature": "int64", "block": "Int64",
              "metric": "str", "teacher_seed": "int64", "tick": "boolean", "note": "str"},
    "teachers": {"table": "int64", "setup": "str", "teacher_seed": "int64", "train_loss": "float64",
                 "train_accuracy": "float64", "test_loss": "float64", "test_accuracy": "float64", "note": "str"},
    "th_completions": {"table": "int64", "setup": "str", "teacher_seed": "int64", "model": "str", "alpha": "float64",
                       "word": "str", "mean": "float64", "sem": "float64", "note": "str"},
    "char_frequency": {"table": "int64", "character": "str", "frequency": "float64"},
    "models": {"table": "int64", "level": "str", "group": "str", "experiment": "str", "models": "int64",
               "note": "str"},
}

SETUP_TABLES: dict[str, tuple[int, ...]] = {
    "imagenet-resnet50-to-resnet18": (18, 19, 25),
    "imagenet-resnet50-to-resnet18-t2": (25, 26, 37),
    "speechcommands-ast": (76, 77, 78, 79, 80),
    "speechcommands-vggish": (10, 11, 73, 74, 75),
    "svhn-resnet18": (2, 3, 4, 31, 61, 62),
    "svhn-vgg19": (63, 64, 65, 66, 67),
    "svhn-vit": (68, 69, 70, 71, 72),
    "tinyimagenet-resnet50": (5, 6, 7, 32, 47, 48),
    "tinyimagenet-resnet50-label-smoothing": (33,),
    "tinyimagenet-resnet50-randaug": (5, 8, 9, 49, 50),
    "tinyimagenet-resnet50-to-resnet18": (16, 17, 34, 35, 36),
    "tinyimagenet-vgg19": (51, 52, 53, 54, 55),
    "tinyimagenet-vgg19-randaug": (56, 57, 58, 59, 60),
    "tinyshakespeare-adversarial": (30, 91, 92, 93, 94),
    "tinyshakespeare-nanogpt": (14, 15, 89, 90),
    "tinyshakespeare-nanogpt-featuremap-block4": (22, 24),
    "tinyshakespeare-nanogpt-featuremap-block5": (23, 24),
    "tinyshakespeare-nanogpt-to-picogpt": (20, 21, 27, 38, 39, 40),
    "tinyshakespeare-nanogpt-to-picogpt-t2": (27, 28, 41, 42, 43),
    "tinyshakespeare-nanogpt-to-picogpt-t4": (27, 29, 44, 45, 46),
    "urbansound8k-ast": (84, 85, 86, 87, 88),
    "urbansound8k-vggish": (12, 13, 81, 82, 83),
}

NOT_IN_PAPER: dict[str, str] = {
    "cifar10-resnet18": "built into kdlib (offline CIFAR-10 subset); the paper has no CIFAR-10 experiment",
    "digits-resnet18": "built into kdlib (scikit-learn digits, offline); the paper has no digits experiment",
    "fsdd-vggish": "built into kdlib (Free Spoken Digit Dataset, offline); the paper has no FSDD experiment",
    "tinyshakespeare-width-scaling": "Section 4.2.3 reports the width sweep only as Figure 11, no table "
                                     "(Table 95 counts its 300 models)",
    "tinyshakespeare-width-scaling-three-alphas": "an extension of Section 4.2.3's width sweep (KD and RCD at "
                                                  "every alpha; the paper's grid is alpha 0.9)",
}

#: Setups whose teacher is another setup's (the same architecture, data, recipe and seeds, so kdlib trains it
#: once): the paper prints its train/test performance under that setup (Table 38: the Nano-GPT teacher).
SHARED_TEACHERS: dict[str, str] = {
    name: "tinyshakespeare-nanogpt-to-picogpt"
    for name in ("tinyshakespeare-nanogpt", "tinyshakespeare-nanogpt-featuremap-block4",
                 "tinyshakespeare-nanogpt-featuremap-block5", "tinyshakespeare-nanogpt-to-picogpt-t2",
                 "tinyshakespeare-nanogpt-to-picogpt-t4")
}

UNMAPPED_TABLES: dict[int, str] = {
    95: "models trained per experiment group across the whole study (Appendix G); no single setup owns it",
}


def tables_for(setup: str) -> tuple[int, ...]:
    """The paper tables holding ``setup``'s results; () for a registered setup the paper does not cover."""
    _check_setup(setup)
    return SETUP_TABLES.get(setup, ())


def read_csv(path: str | Path, kind: str) -> pd.DataFrame:
    """One of the CSVs (``kind``: a key of :data:`COLUMNS`) with its dtypes: empty numbers are NaN / NA,
    empty strings stay ""."""
    dtypes = COLUMNS[kind]
    missing = {col: [""] for col, dtype in dtypes.items() if dtype != "str"}
    frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=missing)
    if list(frame.columns) != list(dtypes):
        raise ValueError(f"{path}: columns {list(frame.columns)}, expected {list(dtypes)}")
    return frame


def means(setup: str | None = None) -> pd.DataFrame:
    """Students' mean ± 1 SEM per (table, setup, teacher seed, condition, alpha, temperature, metric)."""
    return _rows("means", setup)


def ticks(setup: str | None = None) -> pd.DataFrame:
    """The significance tables: one tick per (table, setup, alpha, block, metric, teacher seed)."""
    return _rows("ticks", setup)


def teachers(setup: str | None = None) -> pd.DataFrame:
    """Teacher train/test loss and accuracy per (table, setup, teacher seed)."""
    return _rows("teachers", setup)


def th_completions() -> pd.DataFrame:
    """Tables 30, 93, 94: "tha" / "the" completion counts of the adversarial teacher and its students."""
    return _rows("th_completions")


def char_frequency() -> pd.DataFrame:
    """Table 91: character frequencies of TinyShakespeare."""
    return _rows("char_frequency")


def models() -> pd.DataFrame:
    """Table 95: models trained per experiment group and experiment, plus the study's total."""
    return _rows("models")


def means_for(setup: str, temperature: float = 1.0) -> pd.DataFrame:
    """The paper's mean +- SEM rows of ``setup`` at ``temperature``, one table per teacher seed (the most
    complete where several repeat a seed, e.g. Table 31 over Table 3), with a ``column`` label as kdlib's
    tables name it ("SIDDO", "KD 0.5")."""
    rows = means(setup)
    rows = rows[np.isclose(rows["temperature"], temperature)]
    if rows.empty:
        return rows.assign(column=pd.Series(dtype=str))
    size = rows.groupby(["teacher_seed", "table"]).size().rename("size").reset_index()
    size = size.sort_values(["teacher_seed", "size", "table"], ascending=[True, False, True])
    rows = rows.merge(size.drop_duplicates("teacher_seed")[["teacher_seed", "table"]], on=["teacher_seed", "table"])
    return rows.assign(column=[label(c, None if pd.isna(a) else a) for c, a in zip(rows["condition"], rows["alpha"])])


def ticks_for(setup: str, temperature: float = 1.0, block: int | None = None) -> pd.DataFrame:
    """The paper's ticks of ``setup`` at ``temperature`` (and feature-map ``block``), printed ticks only."""
    rows = ticks(setup)
    rows = rows[np.isclose(rows["temperature"], temperature) & rows["tick"].notna()]
    return rows if block is None else rows[rows["block"] == block]


def teachers_for(setup: str) -> pd.DataFrame:
    """The paper's teacher performance for ``setup``'s teacher (shared teachers: :data:`SHARED_TEACHERS`)."""
    return teachers(SHARED_TEACHERS.get(setup, setup))


@functools.lru_cache(maxsize=None)
def _cached(kind: str) -> pd.DataFrame:
    return read_csv(DATA_DIR / f"{kind}.csv", kind)


def _rows(kind: str, setup: str | None = None) -> pd.DataFrame:
    """A copy of the ``kind`` CSV, restricted to ``setup``'s rows when given (callers may modify it)."""
    frame = _cached(kind)
    if setup is not None:
        _check_setup(setup)
        frame = frame[frame["setup"] == setup].reset_index(drop=True)
    return frame.copy()


def _check_setup(setup: str) -> None:
    if setup not in SETUP_TABLES and setup not in NOT_IN_PAPER:
        raise KeyError(f"unknown setup {setup!r}; the paper's are {sorted(SETUP_TABLES)}, "
                       f"not in the paper: {sorted(NOT_IN_PAPER)}")
