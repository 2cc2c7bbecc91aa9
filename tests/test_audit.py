import json
import re

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import mannwhitneyu, wilcoxon
from statsmodels.stats.multitest import multipletests

from kdlib.__main__ import main, parse_controls
from kdlib.audit import AGREEMENT, DELTA_METRICS, audit, load_outputs
from kdlib.metrics import FUNCTIONAL_METRICS, METRICS, compare, lower_is_better

pytestmark = pytest.mark.kernels  # numeric tolerances: CI runs them on a second kernel path too

K = 10
FILES = ["agreement_deltas.pdf", "agreement_deltas.png", "copied_errors.csv", "copied_errors.pdf",
         "copied_errors.png", "report.json", "report.md"]


def planted_task(n=1500, seed=0):
    """Labels and a teacher that confuses class 3 -> 5 on 60% of class 3 (plus scattered random errors)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(K, size=n)
    teacher = noisy(y, rng)
    confused = (y == 3) & (rng.random(n) < 0.6)
    teacher[confused, 5] = teacher[confused].max(1) + 2.0
    return teacher, y, confused, rng


def noisy(y, rng):
    z = rng.normal(size=(len(y), K))
    z[np.arange(len(y)), y] += 2.5
    return z


def model(task, copy):
    """A noisy classifier that, on the teacher's 3 -> 5 confusions, copies the teacher with probability ``copy``."""
    teacher, y, confused, rng = task
    z = noisy(y, rng)
    c = confused & (rng.random(len(y)) < copy)
    z[c] = teacher[c] + rng.normal(0, 0.3, (c.sum(), K))
    return z


def tensors(*arrays):
    return [torch.as_tensor(a) for a in arrays]


def test_planted_copied_errors_are_detected(tmp_path):
    task = planted_task()
    teacher, y = task[0], task[1]
    student, control = model(task, copy=1.0), model(task, copy=0.0)
    r = audit(teacher, student, y, controls={"siddo": control}, out=tmp_path, n_boot=200)
    v = r["verdict"]
    assert v["transfer_supported"] and v["improved_metrics"] == list(FUNCTIONAL_METRICS)
    assert v["negative_asymmetry"] and v["negative_asymmetry_significant"] and v["negative_asymmetric_transfer"]
    assert r["uncertainty"]["resampling_unit"] == "test example" and r["uncertainty"]["n_units"] == 1500
    # the table, against a count made with numpy
    pt, ps, pc = teacher.argmax(1), student.argmax(1), control.argmax(1)
    errors = (y == 3) & (pt == 5)
    table = pd.read_csv(tmp_path / "copied_errors.csv")
    top = table.iloc[0]
    assert (top["true_label"], top["teacher_label"]) == (3, 5)
    assert top["teacher_errors"] == errors.sum() and top["student_copies"] == (errors & (ps == 5)).sum()
    assert top["control_rate"] == pytest.approx((errors & (pc == 5)).sum() / errors.sum())
    assert top["student_rate"] > 0.9 > 0.1 > top["control_rate"]
    assert r["copied_errors"][0]["true_label"] == 3 and r["copied_errors"][0]["teacher_label"] == 5
    # outputs: exactly these files (no temporary leftovers), strict JSON equal to the return value, vector PDFs
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES
    assert json.loads((tmp_path / "report.json").read_text(), parse_constant=pytest.fail) == r
    for stem in ("agreement_deltas", "copied_errors"):
        pdf = (tmp_path / f"{stem}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and b"/Subtype /Image" not in pdf
        assert (tmp_path / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
    md = (tmp_path / "report.md").read_text()
    assert "Transfer supported: **yes**" in md and "Negative asymmetric transfer (Section 3.2): **yes**" in md
    assert "resampling unit: test example" in md and "| 3 | 5 |" in md


def test_same_process_is_not_flagged():
    task = planted_task(seed=1)
    teacher, y = task[0], task[1]
    student, control = model(task, copy=0.5), model(task, copy=0.5)  # i.i.d. draws of one process
    r = audit(teacher, student, y, controls={"siddo": control}, n_boot=200)
    v = r["verdict"]
    assert not v["transfer_supported"] and not v["negative_asymmetry_significant"]
    assert not v["negative_asymmetric_transfer"] and "Transfer is not supported" in v["text"]
    top = r["copied_errors"][0]  # the teacher's systematic error is copied, but no more than by the control
    assert (top["true_label"], top["teacher_label"]) == (3, 5) and abs(top["excess_rate"]) < 0.15


def test_point_estimates_are_differences_of_compare():
    task = planted_task(n=400, seed=2)
    teacher, y = task[0], task[1]
    s, a, b1, b2 = model(task, 1.0), model(task, 0.0), model(task, 0.0), model(task, 0.9)
    r = audit(teacher, [s], y, controls={"a": a, "b": [b1, b2]}, n_boot=20)
    ref = {k: compare(*tensors(teacher, m, y)) for k, m in dict(s=s, a=a, b1=b1, b2=b2).items()}
    for metric in METRICS:
        assert r["models"]["student"][0][metric] == pytest.approx(ref["s"][metric])
        assert r["means"]["b"][metric] == pytest.approx((ref["b1"][metric] + ref["b2"][metric]) / 2)
    for metric in DELTA_METRICS:
        assert r["deltas"]["a"][metric]["delta"] == pytest.approx(ref["s"][metric] - ref["a"][metric])
        b = (ref["b1"][metric] + ref["b2"][metric]) / 2
        assert r["deltas"]["b"][metric]["delta"] == pytest.approx(ref["s"][metric] - b)
    for q in AGREEMENT:
        d = ref["s"][q] - ref["a"][q]
        assert r["deltas"]["a"][f"{q}_normalised"]["delta"] == pytest.approx(d / (1 - ref["a"][q]))
    assert r["deltas"]["a"]["asymmetry"]["delta"] == pytest.approx(
        ref["s"]["incorrect_agreement"] - ref["a"]["incorrect_agreement"]
        - ref["s"]["correct_agreement"] + ref["a"]["correct_agreement"])
    # b2 copies most of the teacher's errors, so control b is the best control for incorrect agreement
    assert r["agreement"]["delta_incorrect"]["control"] == "b"
    teacher_acc = (teacher.argmax(1) == y).mean()
    assert r["teacher"]["accuracy"] == pytest.approx(teacher_acc)
    assert r["teacher"]["errors"] == (teacher.argmax(1) != y).sum()


def hand_bootstrap(teacher, student, control, y, n_boot, seed, metrics):
    """Deltas on each replicate recomputed with kdlib.metrics.compare on resampled first-axis units."""
    rng = np.random.default_rng(seed)
    T, S, C, Y = tensors(teacher, student, control, y)
    reps = {m: [] for m in metrics}
    for _ in range(n_boot):
        idx = torch.as_tensor(rng.integers(0, len(y), size=len(y)))
        rs, rc = compare(T[idx], S[idx], Y[idx]), compare(T[idx], C[idx], Y[idx])
        for m in metrics:
            reps[m].append(rs[m] - rc[m])
    return {m: np.nanpercentile(v, [2.5, 97.5]) for m, v in reps.items()}


def test_bootstrap_interval_matches_a_hand_resample():
    rng = np.random.default_rng(3)
    teacher, student, control = rng.normal(size=(3, 12, 3)) * 2
    y = rng.integers(3, size=12)
    r = audit(teacher, student, y, controls={"c": control}, n_boot=25, seed=7)
    metrics = list(FUNCTIONAL_METRICS) + ["accuracy", "loss", *AGREEMENT]
    for m, (lo, hi) in hand_bootstrap(teacher, student, control, y, 25, 7, metrics).items():
        assert (r["deltas"]["c"][m]["ci_low"], r["deltas"]["c"][m]["ci_high"]) == pytest.approx((lo, hi))
        better = -1 if lower_is_better(m) else 1
        assert r["deltas"]["c"][m]["significant"] == bool(lo > 0 if better > 0 else hi < 0)


def test_sequences_resample_whole_sequences():
    rng = np.random.default_rng(4)
    teacher, student, control = rng.normal(size=(3, 6, 5, 4)) * 2  # [N, L, K]
    y = rng.integers(4, size=(6, 5))
    r = audit(teacher, student, y, controls={"c": control}, n_boot=20, seed=1)
    assert r["uncertainty"]["resampling_unit"] == "sequence" and r["uncertainty"]["n_units"] == 6
    assert r["inputs"]["n_tokens"] == 30
    metrics = ["activation_distance", "prediction_disagreement", "incorrect_agreement"]
    for m, (lo, hi) in hand_bootstrap(teacher, student, control, y, 20, 1, metrics).items():
        assert (r["deltas"]["c"][m]["ci_low"], r["deltas"]["c"][m]["ci_high"]) == pytest.approx((lo, hi))


def test_several_seeds_use_wilcoxon_or_mann_whitney_with_bh(tmp_path):
    task = planted_task(n=300, seed=5)
    teacher, y = task[0], task[1]
    students = [model(task, 1.0) for _ in range(6)]
    controls = {"siddo": [model(task, 0.0) for _ in range(6)], "ls": [model(task, 0.0) for _ in range(5)]}
    r = audit(teacher, students, y, controls=controls, out=tmp_path)
    assert r["uncertainty"]["method"] == "seeds"
    assert r["deltas"]["siddo"]["test"].startswith("paired") and r["deltas"]["ls"]["test"].endswith("Mann-Whitney U")
    results = {id(z): compare(*tensors(teacher, z, y)) for z in students + sum(controls.values(), [])}
    value = lambda models, m: np.array([results[id(z)][m] for z in models])
    s = {m: value(students, m) for m in DELTA_METRICS}
    raw = []
    for c, models in controls.items():
        for m in FUNCTIONAL_METRICS:
            k, side = value(models, m), "less" if lower_is_better(m) else "greater"
            if c == "siddo":
                p = wilcoxon(s[m] - k, alternative=side).pvalue
            else:
                p = mannwhitneyu(s[m], k, alternative=side).pvalue
            raw.append(p)
            assert r["deltas"][c][m]["p"] == pytest.approx(p)
            assert r["deltas"][c][m]["delta"] == pytest.approx(s[m].mean() - k.mean())
    adjusted = multipletests(raw, method="fdr_bh")[1]
    got = [r["deltas"][c][m]["p_adj"] for c in controls for m in FUNCTIONAL_METRICS]
    np.testing.assert_allclose(got, adjusted)
    k = value(controls["siddo"], "incorrect_agreement")
    assert r["deltas"]["siddo"]["incorrect_agreement"]["p_adj"] == pytest.approx(  # uncorrected
        wilcoxon(s["incorrect_agreement"] - k, alternative="greater").pvalue)
    assert r["deltas"]["siddo"]["incorrect_agreement"]["sem"] == pytest.approx(
        np.std(s["incorrect_agreement"] - k, ddof=1) / np.sqrt(6))
    assert r["uncertainty"]["min_attainable_p"] == {"siddo": 0.5 ** 6, "ls": 1 / 462}
    assert r["verdict"]["transfer_supported"] and r["verdict"]["negative_asymmetric_transfer"]
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES


def write_inputs(root, teacher, student, control, y, suffix=None):
    paths = {}
    for name, x in dict(teacher=teacher, student=student, control=control, labels=y).items():
        path = root / f"{name}{(suffix or {}).get(name, '.npy')}"
        if path.suffix == ".npy":
            np.save(path, x)
        else:
            path.write_text("not a supported format")
        paths[name] = str(path)
    return paths


def _bad(case, teacher, student, control, y):
    student, control, y = student.copy(), control.copy(), y.copy()
    if case == "n":
        return teacher, student[:-10], control, y
    if case == "k":
        return teacher, student, control[:, :-1], y
    if case == "range":
        y[7] = K
        return teacher, student, control, y
    if case == "nan":
        student[4, 2] = np.nan
        return teacher, student, control, y
    if case == "labels_n":
        return teacher, student, control, y[:-1]
    if case == "float_labels":
        return teacher, student, control, y + 0.5
    return teacher, student, control, y


@pytest.mark.parametrize("case, pattern", [
    ("n", r"student file {student} has N=290 examples but teacher file {teacher} has N=300"),
    ("k", r"control control file {control} has K=9 classes but teacher file {teacher} has K=10"),
    ("range", r"labels file {labels}: label 10 \(at index 7\) is out of range \[0, 9\] for the K=10 classes"),
    ("nan", r"student file {student}: logits contain NaN \(first at example 4\)"),
    ("labels_n", r"labels file {labels} has shape \(299,\) but teacher file {teacher} has logits of shape "
                 r"\(300, 10\): expected labels of shape \(300,\)"),
    ("float_labels", r"labels file {labels}: labels must be integer class indices"),
    ("suffix", r"teacher file {teacher}: unknown file type '.txt'; allowed are .npy, .npz, .pt, .csv"),
])
def test_bad_input_names_the_file_and_the_problem(tmp_path, case, pattern):
    task = planted_task(n=300)
    arrays = _bad(case, task[0], model(task, 1.0), model(task, 0.0), task[1])
    p = write_inputs(tmp_path, *arrays, suffix={"teacher": ".txt"} if case == "suffix" else None)
    with pytest.raises(ValueError, match=pattern.format(**{k: re.escape(v) for k, v in p.items()})):
        audit(p["teacher"], [p["student"]], p["labels"], controls=[p["control"]], n_boot=10)


def test_every_file_format_round_trips(tmp_path):
    rng = np.random.default_rng(6)
    z, y = rng.normal(size=(7, 4)).astype(np.float32), rng.integers(4, size=7)
    seq, seq_y = rng.normal(size=(3, 5, 4)), rng.integers(4, size=(3, 5))
    np.save(tmp_path / "z.npy", z)
    np.savez(tmp_path / "single.npz", z)
    np.savez(tmp_path / "both.npz", logits=z, labels=y)
    torch.save(torch.from_numpy(z), tmp_path / "z.pt")
    torch.save({"logits": torch.from_numpy(z), "labels": torch.from_numpy(y)}, tmp_path / "both.pt")
    pd.DataFrame(z).to_csv(tmp_path / "pandas.csv", index=False)  # header row 0,1,2,3
    pd.DataFrame(z, columns=list("abcd")).to_csv(tmp_path / "named.csv", index=False)
    np.savetxt(tmp_path / "plain.csv", z, delimiter=",")
    pd.DataFrame({"label": y}).to_csv(tmp_path / "labels.csv", index=False)
    np.savetxt(tmp_path / "labels_plain.csv", y, fmt="%d")
    for name in ("z.npy", "single.npz", "both.npz", "z.pt", "both.pt", "pandas.csv", "named.csv", "plain.csv"):
        np.testing.assert_allclose(load_outputs(tmp_path / name, "logits").numpy(), z, rtol=1e-6, err_msg=name)
    for name in ("both.npz", "both.pt", "labels.csv", "labels_plain.csv"):
        np.testing.assert_array_equal(load_outputs(tmp_path / name, "labels").numpy(), y, err_msg=name)
    np.save(tmp_path / "seq.npy", seq)
    torch.save({"logits": torch.from_numpy(seq), "labels": torch.from_numpy(seq_y)}, tmp_path / "seq.pt")
    np.testing.assert_array_equal(load_outputs(tmp_path / "seq.npy", "logits").numpy(), seq)
    np.testing.assert_array_equal(load_outputs(tmp_path / "seq.pt", "labels").numpy(), seq_y)
    # one file holding everything works end to end
    r = audit(tmp_path / "both.pt", [tmp_path / "plain.csv"], tmp_path / "both.npz", n_boot=5)
    assert r["models"]["student"][0]["prediction_agreement"] == 1.0
    np.savez(tmp_path / "many.npz", a=z, b=z)
    with pytest.raises(ValueError, match=r"many.npz holds several entries \['a', 'b'\]: name one 'logits'"):
        load_outputs(tmp_path / "many.npz", "logits")
    pd.Series(y).to_csv(tmp_path / "series.csv", index=False)  # header '0' cannot be told from a label 0
    with pytest.raises(ValueError, match=r"series.csv has shape \(8,\).*if it is a header such as pandas' default '0'"):
        audit(tmp_path / "z.npy", [tmp_path / "z.npy"], tmp_path / "series.csv")
    pd.DataFrame(seq_y).to_csv(tmp_path / "seq_labels.csv", index=False)
    with pytest.raises(ValueError, match=r"seq_labels.csv has 5 columns.*must be saved as .npy, .npz or .pt"):
        load_outputs(tmp_path / "seq_labels.csv", "labels")


def test_without_control_and_without_teacher_errors(tmp_path):
    rng = np.random.default_rng(8)
    y = rng.integers(K, size=50)
    teacher = np.eye(K)[y] * 5.0  # always right: incorrect agreement is undefined
    r = audit(teacher, noisy(y, rng), y, out=tmp_path, n_boot=10)
    assert r["verdict"]["transfer_supported"] is None and "needs a control" in r["verdict"]["text"]
    assert r["means"]["student"]["incorrect_agreement"] is None and r["copied_errors"] == []
    text = (tmp_path / "report.json").read_text()
    assert '"incorrect_agreement": null' in text and "NaN" not in text
    assert "The teacher makes no errors" in (tmp_path / "report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES


def test_cli_main_end_to_end(tmp_path, capsys):
    task = planted_task(n=500)
    p = write_inputs(tmp_path, task[0], model(task, 1.0), model(task, 0.0), task[1])
    (tmp_path / "classes.txt").write_text("\n".join(f"class{k}" for k in range(K)) + "\n")
    out = tmp_path / "report"
    argv = ["audit", "--teacher", p["teacher"], "--student", p["student"], "--control", f"siddo={p['control']}",
            "--labels", p["labels"], "--out", str(out), "--bootstrap", "50",
            "--class-names", str(tmp_path / "classes.txt")]
    assert main(argv) == 0
    assert "negative asymmetric transfer" in capsys.readouterr().out
    r = json.loads((out / "report.json").read_text())
    assert r["inputs"]["controls"] == {"siddo": [f"control siddo file {p['control']}"]}
    assert r["copied_errors"][0]["true_name"] == "class3" and r["copied_errors"][0]["teacher_name"] == "class5"
    assert r["uncertainty"]["n_boot"] == 50 and r["verdict"]["negative_asymmetric_transfer"]
    missing = str(tmp_path / "missing.csv")
    assert main(argv[:argv.index("--labels") + 1] + [missing] + argv[argv.index("--labels") + 2:]) == 2
    assert f"labels file {missing} does not exist" in capsys.readouterr().err


def test_parse_controls_groups_seeds_by_name():
    assert parse_controls(["siddo=a.npy", "ls=c.npy", "siddo=b.npy", "runs/plain.pt", "x/y=z.npy"]) == {
        "siddo": ["a.npy", "b.npy"], "ls": ["c.npy"], "plain": ["runs/plain.pt"], "y=z": ["x/y=z.npy"]}


def test_notebook_is_commit_ready_and_runs(tmp_path):
    nb = nbformat.read("notebooks/audit.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    scope = {}
    exec(params[0].source, scope)
    assert {"teacher", "students", "controls", "labels", "out"} <= set(scope)
    task = planted_task(n=300)
    p = write_inputs(tmp_path, task[0], model(task, 1.0), model(task, 0.0), task[1])
    scope.update(teacher=p["teacher"], students=[p["student"]], controls={"siddo": [p["control"]]},
                 labels=p["labels"], out=str(tmp_path / "nb"), n_boot=20)  # as papermill injects them
    for cell in code[code.index(params[0]) + 1:]:
        exec(cell.source, scope)
    assert scope["report"]["verdict"]["negative_asymmetric_transfer"]
    assert sorted(p.name for p in (tmp_path / "nb").iterdir()) == FILES
