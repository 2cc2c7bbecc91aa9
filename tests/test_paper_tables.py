"""kdlib.paper: the paper's reported results, extracted by tools/extract_paper_tables.py from the paper's text."""
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import kdlib.paper as paper
from kdlib import setups

REPO = Path(__file__).resolve().parents[1]
PAPER_TEXT = Path(__file__).resolve().parents[1].parent / "shared" / "paper" / "functional-kd.txt"

MEANS_TABLES = (3, 6, 8, 10, 12, 14, 16, 18, 20, 22, 23, 25, 27, 31, 32, 33, 35, 36, 37, *range(39, 51), 52, 53,
                54, 57, 58, 59, 61, 62, 64, 65, 66, 69, 70, 71, 74, 75, 77, 78, 79, 82, 83, 85, 86, 87, 89, 90)
TICK_TABLES = (4, 7, 9, 11, 13, 15, 17, 19, 21, 24, 26, 28, 29, 55, 60, 67, 72, 80, 88)
TEACHER_TABLES = (2, 5, 34, 38, 51, 56, 63, 68, 73, 76, 81, 84, 92)
TH_TABLES = (30, 93, 94)
CHAR_TABLE, MODELS_TABLE = 91, 95


def expected_means_rows() -> int:
    """7 columns (SIDDO, KD and RCD at 3 alphas) x 6 metrics; Tables 31-32 have 8 metrics; Table 27 (KD at
    three temperatures) and Table 33 (with label smoothing) have 10 columns."""
    columns = {27: 10, 33: 10}
    metrics = {31: 8, 32: 8}
    return sum(columns.get(t, 7) * metrics.get(t, 6) for t in MEANS_TABLES)


def expected_tick_rows() -> int:
    """3 alphas x 6 metrics x ticks per cell: 3 teacher seeds, 1 for ImageNet (19, 26), 2 blocks in Table 24."""
    per_cell = {19: 1, 26: 1, 24: 2}
    return sum(3 * 6 * per_cell.get(t, 3) for t in TICK_TABLES)


def load_tool():
    spec = importlib.util.spec_from_file_location("extract_paper_tables", REPO / "tools" / "extract_paper_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one(frame: pd.DataFrame, **where) -> pd.Series:
    """The single row of ``frame`` matching ``where`` (alpha=None selects NaN alphas)."""
    mask = pd.Series(True, index=frame.index)
    for column, value in where.items():
        mask &= frame[column].isna() if value is None else frame[column] == value
    rows = frame[mask]
    assert len(rows) == 1, f"{len(rows)} rows for {where}"
    return rows.iloc[0]


# ------------------------------------------------------------------------------------------ hand-checked values

def test_table_14_activation_distance():
    m = paper.means("tinyshakespeare-nanogpt")
    siddo = one(m, table=14, teacher_seed=0, condition="siddo", alpha=None, metric="activation_distance")
    kd = one(m, table=14, teacher_seed=0, condition="kd", alpha=0.9, metric="activation_distance")
    assert (siddo["mean"], siddo["sem"], kd["mean"], kd["sem"]) == (0.196, 0.0, 0.144, 0.0)
    assert siddo["temperature"] == 1 and siddo["note"] == ""


TABLE_15 = """\
KD 0.1 ✓✓✓ ✓✓✓ ✓✓✓ ✓✓✓ ✗✗✗ ✗✗✗
KD 0.5 ✓✓✓ ✓✓✓ ✓✓✓ ✓✓✓ ✓✓✓ ✓✓✓
KD 0.9 ✓✓✓ ✓✓✓ ✓✓✓ ✓✓✓ ✓✓✓ ✗✓✓
"""
TICK_METRICS = ("activation_distance", "rank_disagreement", "prediction_disagreement", "js_divergence",
                "accuracy", "loss")


def test_table_15_ticks():
    expected = {}
    for line in TABLE_15.splitlines():
        _, alpha, *cells = line.split()
        for metric, cell in zip(TICK_METRICS, cells):
            for seed, tick in enumerate(cell):
                expected[(float(alpha), metric, seed)] = tick == "✓"
    t = paper.ticks("tinyshakespeare-nanogpt")
    t = t[t.table == 15]
    got = {(r.alpha, r.metric, r.teacher_seed): bool(r.tick) for r in t.itertuples()}
    assert got == expected
    assert (t.temperature == 1).all() and t.block.isna().all() and (t.note == "").all()


def test_teacher_tables():
    t = paper.teachers()
    assert one(t, table=38, teacher_seed=0)["test_accuracy"] == 0.573366
    assert one(t, table=38, teacher_seed=0)["setup"] == "tinyshakespeare-nanogpt-to-picogpt"
    seed1 = one(t, table=2, teacher_seed=1)
    assert (seed1["setup"], seed1["train_loss"], seed1["test_accuracy"]) == ("svhn-resnet18", 0.000061, 0.952251)
    randaug = one(t, table=5, setup="tinyimagenet-resnet50-randaug", teacher_seed=2)
    assert (randaug["train_loss"], randaug["test_accuracy"]) == (0.667570, 0.641100)
    assert one(t, table=5, setup="tinyimagenet-resnet50", teacher_seed=0)["test_loss"] == 2.070590
    assert one(t, table=56, teacher_seed=0)["setup"] == "tinyimagenet-vgg19-randaug"


def test_table_3_brace_layout():
    m = paper.means("svhn-resnet18")
    siddo = one(m, table=3, condition="siddo", metric="activation_distance")
    rcd = one(m, table=3, condition="rcd", alpha=0.9, metric="loss")
    assert (siddo["mean"], siddo["sem"], rcd["mean"], rcd["sem"]) == (0.063, 0.002, 1.698, 0.001)


def test_table_37_rand_kd_layout_at_temperature_2():
    m = paper.means()
    m = m[m.table == 37]
    assert set(m.setup) == {"imagenet-resnet50-to-resnet18-t2"} and set(m.temperature) == {2}
    rcd = one(m, condition="rcd", alpha=0.9, metric="loss")
    kd = one(m, condition="kd", alpha=0.1, metric="activation_distance")
    assert (rcd["mean"], rcd["sem"], kd["mean"], kd["sem"]) == (3.022, 0.014, 0.310, 0.001)


def test_table_33_label_smoothing():
    m = paper.means("tinyimagenet-resnet50-label-smoothing")
    assert set(m.table) == {33} and sorted(set(m.condition)) == ["kd", "ls", "rcd", "siddo"]
    assert one(m, condition="ls", alpha=0.1, metric="accuracy")[["mean", "sem"]].tolist() == [0.608, 0.0]
    assert one(m, condition="ls", alpha=0.9, metric="loss")[["mean", "sem"]].tolist() == [3.612, 0.002]


def test_table_24_blocks():
    t = paper.ticks()
    t = t[t.table == 24]
    assert set(zip(t.block, t.setup)) == {(4, "tinyshakespeare-nanogpt-featuremap-block4"),
                                         (5, "tinyshakespeare-nanogpt-featuremap-block5")}
    assert set(t.teacher_seed) == {0}
    ad = t[(t.alpha == 0.1) & (t.metric == "activation_distance")].sort_values("block")
    accuracy = t[(t.alpha == 0.5) & (t.metric == "accuracy")].sort_values("block")
    assert ad.tick.tolist() == [False, True] and accuracy.tick.tolist() == [False, True]


def test_table_27_temperatures():
    m = paper.means()
    m = m[m.table == 27]
    by_setup = {setup: sorted(set(rows.temperature)) for setup, rows in m.groupby("setup")}
    assert by_setup == {"tinyshakespeare-nanogpt-to-picogpt": [1], "tinyshakespeare-nanogpt-to-picogpt-t2": [2],
                        "tinyshakespeare-nanogpt-to-picogpt-t4": [4]}
    assert set(m[m.condition == "siddo"].temperature) == {1}
    t4 = one(m, condition="kd", alpha=0.9, temperature=4, metric="loss")
    assert (t4["setup"], t4["mean"], t4["sem"]) == ("tinyshakespeare-nanogpt-to-picogpt-t4", 1.663, 0.002)
    assert one(m, condition="kd", alpha=0.5, temperature=2, metric="rank_disagreement")["mean"] == 0.896
    assert one(m, condition="siddo", metric="loss")[["mean", "sem"]].tolist() == [1.475, 0.001]


def test_table_25_temperatures():
    m = paper.means()
    m = m[m.table == 25]
    assert set(m[m.temperature == 1].setup) == {"imagenet-resnet50-to-resnet18"}
    assert set(m[m.temperature == 2].setup) == {"imagenet-resnet50-to-resnet18-t2"}
    assert one(m, condition="kd", alpha=0.9, temperature=2, metric="js_divergence")["mean"] == 0.081


def test_extended_metrics_table_31():
    m = paper.means("svhn-resnet18")
    m = m[m.table == 31]
    assert one(m, condition="siddo", metric="variation_of_information")[["mean", "sem"]].tolist() == [0.550, 0.051]
    assert one(m, condition="rcd", alpha=0.9, metric="procrustes_distance")["mean"] == 0.311


def test_garbled_cells_are_nan_with_a_note():
    m = paper.means()
    noted = m[m.note != ""]
    assert sorted(zip(noted.table, noted.teacher_seed, noted.condition, noted.alpha.fillna(-1))) == [
        (12, 0, "kd", 0.1), (12, 0, "siddo", -1), (82, 1, "kd", 0.1), (82, 1, "kd", 0.5), (82, 1, "kd", 0.9),
        (82, 1, "siddo", -1)]
    assert set(noted.metric) == {"js_divergence"} and set(noted.note) == {'printed "inf, nan"'}
    assert noted["mean"].isna().all() and noted["sem"].isna().all()
    assert m[m.note == ""][["mean", "sem"]].notna().all().all()


def test_imagenet_tick_tables_print_no_ticks():
    t = paper.ticks()
    empty = t[t.table.isin([19, 26])]
    assert len(empty) == 36 and empty.tick.isna().all() and set(empty.teacher_seed) == {0}
    assert set(empty.note) == {f'printed "KD {alpha}" (no ticks)' for alpha in (0.1, 0.5, 0.9)}
    assert t[~t.table.isin([19, 26])].tick.notna().all()


def test_th_completions():
    th = paper.th_completions()
    assert one(th, table=30, model="teacher", word="tha")[["mean", "teacher_seed"]].tolist() == [454, 0]
    assert math.isnan(one(th, table=30, model="teacher", word="tha")["sem"])
    assert one(th, table=30, model="kd", alpha=0.9, word="tha")[["mean", "sem"]].tolist() == [436.2, 7.984]
    assert one(th, table=94, model="rcd", alpha=0.9, word="the")[["mean", "sem", "teacher_seed"]].tolist() == [
        836.7, 17.1954, 2]
    assert set(th.setup) == {"tinyshakespeare-adversarial"} and th[th.model == "siddo"].alpha.isna().all()


def test_char_frequency_and_models():
    chars = paper.char_frequency()
    assert one(chars, character=" ")["frequency"] == 0.1523 and one(chars, character="e")["frequency"] == 0.0848
    assert len(chars) == 9
    m = paper.models()
    total = one(m, level="total")["models"]
    groups = m[m.level == "group"].set_index("group").models
    experiments = m[m.level == "experiment"].groupby("group").models.sum()
    assert total == 4189 == groups.sum() and experiments.equals(groups.sort_index())
    assert one(m, level="experiment", experiment="TinyShakespeare NanoGPT-PicoGPT")["models"] == 210


def test_values_are_written_as_printed():
    teachers = (paper.DATA_DIR / "teachers.csv").read_text(encoding="utf-8")
    means = (paper.DATA_DIR / "means.csv").read_text(encoding="utf-8")
    assert "2,svhn-resnet18,1,0.000061,0.999973,0.331054,0.952251," in teachers
    assert "69,svhn-vit,0,siddo,,1,js_divergence,0.0910,0.001," in means


# ------------------------------------------------------------------------------------------ coverage and counts

def test_row_counts_and_tables():
    counts = {"means": expected_means_rows(), "ticks": expected_tick_rows(),
              "teachers": 3 * len(TEACHER_TABLES) + 3, "th_completions": len(TH_TABLES) * 2 * 8,
              "char_frequency": 9, "models": 6 + 13 + 1}
    assert counts == {"means": 2458, "ticks": 936, "teachers": 42, "th_completions": 48, "char_frequency": 9,
                      "models": 20}
    listed = {"means": MEANS_TABLES, "ticks": TICK_TABLES, "teachers": TEACHER_TABLES, "th_completions": TH_TABLES,
              "char_frequency": (CHAR_TABLE,), "models": (MODELS_TABLE,)}
    for kind, tables in listed.items():
        frame = getattr(paper, kind)()
        assert len(frame) == counts[kind], kind
        assert set(frame.table) == set(tables), kind
        assert list(frame.columns) == list(paper.COLUMNS[kind]), kind


def test_seeds_conditions_and_metrics():
    m = paper.means()
    assert set(m.condition) == {"siddo", "kd", "rcd", "ls"} and set(m.teacher_seed) == {0, 1, 2}
    assert m[m.condition == "siddo"].alpha.isna().all() and set(m.alpha.dropna()) == {0.1, 0.5, 0.9}
    assert set(m.metric) == set(TICK_METRICS) | {"variation_of_information", "procrustes_distance"}
    assert set(m[m.metric.isin(["variation_of_information", "procrustes_distance"])].table) == {31, 32}
    temperature = m.setup.map(lambda s: 4 if s.endswith("-t4") else 2 if s.endswith("-t2") else 1)
    assert (m.temperature == temperature).all()


# ------------------------------------------------------------------------------------------ setup mapping

def tables_in_rows() -> dict[str, set[int]]:
    """Tables whose rows name each setup, over every CSV with a setup column."""
    owned: dict[str, set[int]] = {}
    for frame in (paper.means(), paper.ticks(), paper.teachers(), paper.th_completions()):
        for setup, table in set(zip(frame.setup, frame.table)):
            owned.setdefault(setup, set()).add(int(table))
    return owned


def all_tables() -> set[int]:
    return {int(t) for kind in paper.COLUMNS for t in getattr(paper, kind)().table}


def test_every_registered_setup_is_mapped():
    names = set(setups.names())
    assert not set(paper.SETUP_TABLES) & set(paper.NOT_IN_PAPER)
    assert set(paper.SETUP_TABLES) | set(paper.NOT_IN_PAPER) == names
    assert all(paper.SETUP_TABLES[name] for name in paper.SETUP_TABLES)
    assert {"cifar10-resnet18", "digits-resnet18", "fsdd-vggish"} <= set(paper.NOT_IN_PAPER)


def test_every_table_is_owned_and_exists():
    tables = all_tables()
    owned = {t for ts in paper.SETUP_TABLES.values() for t in ts}
    assert owned | set(paper.UNMAPPED_TABLES) == tables
    assert not owned & set(paper.UNMAPPED_TABLES)


def test_setup_tables_match_the_rows():
    """SETUP_TABLES lists exactly the tables whose rows name the setup (Table 91, which has no setup column,
    belongs to the adversarial setup)."""
    rows = tables_in_rows()
    rows["tinyshakespeare-adversarial"].add(CHAR_TABLE)
    assert {setup: set(tables) for setup, tables in paper.SETUP_TABLES.items()} == rows


def test_loader_filters_and_copies():
    assert set(paper.means("svhn-vit").table) == {69, 70, 71}
    assert paper.tables_for("svhn-vit") == (68, 69, 70, 71, 72)
    assert paper.tables_for("cifar10-resnet18") == () and paper.means("cifar10-resnet18").empty
    with pytest.raises(KeyError):
        paper.means("no-such-setup")
    frame = paper.means()
    frame.loc[:, "mean"] = -1.0
    assert (paper.means()["mean"] != -1.0).any()


# ------------------------------------------------------------------------------------------ extraction

@pytest.mark.skipif(not PAPER_TEXT.exists(), reason=f"paper text not found at {PAPER_TEXT}")
def test_committed_csvs_are_what_the_paper_gives(tmp_path):
    tool = load_tool()
    tool.main([str(PAPER_TEXT), "--out", str(tmp_path)])
    for kind in paper.COLUMNS:
        fresh, committed = tmp_path / f"{kind}.csv", paper.DATA_DIR / f"{kind}.csv"
        pd.testing.assert_frame_equal(paper.read_csv(fresh, kind), paper.read_csv(committed, kind))
        assert fresh.read_bytes() == committed.read_bytes(), kind
    assert set(tool.extract(PAPER_TEXT.read_text(encoding="utf-8"))) == set(paper.COLUMNS)


@pytest.mark.skipif(not PAPER_TEXT.exists(), reason=f"paper text not found at {PAPER_TEXT}")
def test_unreadable_cells_fail_loudly():
    tool = load_tool()
    text = PAPER_TEXT.read_text(encoding="utf-8")
    cell = r"0.144±0.000\pm{0.000}"
    assert text.count(cell) == 1
    with pytest.raises(ValueError, match="Table 14"):
        tool.extract(text.replace(cell, "0.144 0.000"))
    with pytest.raises(ValueError, match="Table 15"):
        tool.extract(text.replace("KD 0.9 ✓✓✓ ✓✓✓ ✓✓✓ ✓✓✓ ✓✓✓ ✗✓✓", "KD 0.9 ✓✓✓ ✓✓✓ ✓✓✓ ✓✓✓ ✓✓✓"))


def test_loader_does_not_import_torch():
    code = "import kdlib.paper, sys; kdlib.paper.means(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
