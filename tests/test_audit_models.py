"""kdlib.audit on models and at any vocabulary: ``logits`` (classifiers, causal language models of any length,
padding), ``audit_models`` (the report their saved logits give), and kdlib.metrics streaming at GPT-2's K with
sparse pair counts and Procrustes over examples, giving the dense computation's numbers at small K."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.special import softmax
from torch.utils.data import DataLoader, TensorDataset

from kdlib import metrics
from kdlib.audit import audit, audit_models, logits
from kdlib.metrics import Comparison, compare, descending_order
from kdlib.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.kernels  # numeric tolerances: CI runs them on a second kernel path too

V = 11  # the tiny GPTs' vocabulary


def task(N, K, seed, shape=()):
    """Teacher logits, a student that is the teacher plus noise, and labels the teacher gets right 70% of the time."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(N, *shape, K, generator=g) * 2
    m = t + torch.randn(N, *shape, K, generator=g) * 1.5
    y = torch.where(torch.rand(N, *shape, generator=g) < 0.7, t.argmax(-1), torch.randint(K, (N, *shape), generator=g))
    return t, m, y


def dense_reference(t, m, y) -> dict:
    """VI from a dense joint histogram, Procrustes as scipy's orthogonal Procrustes fit, dense error tables."""
    t, m, y = t.double().numpy(), m.double().numpy(), y.numpy()
    K = t.shape[1]
    pt, pm = t.argmax(1), m.argmax(1)
    table = lambda a, b: np.histogram2d(a, b, bins=K, range=[[0, K], [0, K]])[0]

    def entropy(counts):
        p = counts[counts > 0] / counts.sum()
        return -(p * np.log(p)).sum()
    joint = table(pt, pm)
    A, B = softmax(t, 1), softmax(m, 1)
    A, B = A - A.mean(0), B - B.mean(0)
    A, B = A / np.linalg.norm(A), B / np.linalg.norm(B)
    rotation, _ = scipy.linalg.orthogonal_procrustes(A, B)
    wrong, copied = pt != y, (pt != y) & (pm == pt)
    return {"variation_of_information": 2 * entropy(joint) - entropy(joint.sum(1)) - entropy(joint.sum(0)),
            "procrustes_distance": np.linalg.norm(A @ rotation - B) ** 2, "joint": joint,
            "teacher_errors": table(y[wrong], pt[wrong]), "copied_errors": table(y[copied], pt[copied])}


@pytest.mark.parametrize("K", [7, 300])
def test_streamed_sparse_metrics_equal_the_dense_computation(K, monkeypatch):
    t, m, y = task(400, K, seed=K)
    ref, one_shot = dense_reference(t, m, y), compare(t, m, y)
    monkeypatch.setattr(metrics, "CHUNK_VALUES", 5 * K)  # 5 tokens per pass inside update
    c = Comparison()
    for a, b in ((0, 13), (13, 14), (14, 250), (250, 400)):
        c.update(t[a:b], m[a:b], y[a:b])
    streamed = c.result()
    for name in ("variation_of_information", "procrustes_distance"):
        assert streamed[name] == pytest.approx(ref[name], abs=1e-12), name
    for name in ("joint", "teacher_errors", "copied_errors"):
        np.testing.assert_array_equal(getattr(c, name).dense().numpy(), ref[name], err_msg=name)
    assert c.teacher_errors.sum() == ref["teacher_errors"].sum() > 0 and c.copied_errors.sum() > 0
    for name, value in one_shot.items():
        assert streamed[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_procrustes_over_examples_equals_class_space_or_is_skipped_with_a_note(monkeypatch, tmp_path):
    K, N = 300, 120
    t, m, y = task(N, K, seed=1)
    class_space = compare(t, m, y)["procrustes_distance"]
    assert class_space == pytest.approx(dense_reference(t, m, y)["procrustes_distance"], abs=1e-12)
    monkeypatch.setattr(metrics, "PROCRUSTES_BUDGET", 2 * N * K)  # K * K no longer fits, N * K does
    c = Comparison().update(t, m, y)
    assert c.cross is None and c.result()["procrustes_distance"] == pytest.approx(class_space, abs=1e-12)
    assert c.notes == {}
    monkeypatch.setattr(metrics, "PROCRUSTES_BUDGET", 2 * 100 * K)  # the first 60 tokens fit, 120 do not
    c = Comparison().update(t[:60], m[:60], y[:60])
    assert c.rows is not None
    c.update(t[60:], m[60:], y[60:])
    assert np.isnan(c.result()["procrustes_distance"]) and c.notes["procrustes_distance"].startswith(
        f"procrustes_distance skipped: K={K} classes and N={N} tokens do not fit its memory budget")
    assert np.isfinite([v for k, v in c.result().items() if k != "procrustes_distance"]).all()
    r = audit(t, m, y, out=tmp_path, n_boot=5)
    assert r["notes"] == [c.notes["procrustes_distance"]] and r["means"]["student"]["procrustes_distance"] is None
    assert "## Notes" in (tmp_path / "report.md").read_text() and "K=300 classes" in (tmp_path / "report.md").read_text()


def test_descending_order_is_torchs_stable_argsort():
    g = torch.Generator().manual_seed(0)
    cases = [torch.randint(-3, 4, (6, 1000), generator=g).double(),  # ties everywhere, 0.0 and -0.0 below
             torch.randn(6, 50257, generator=g).float().double(),
             (torch.randn(6, 7, generator=g) * 1e-42).float().double(),  # subnormal float32 values
             torch.randn(6, 7, generator=g).double()]  # not float32 values: torch's argsort
    cases[0][:, ::7] = -0.0
    for z in cases:
        assert torch.equal(descending_order(z), torch.argsort(z, dim=-1, descending=True, stable=True))


def test_ignore_index_drops_padding_exactly_as_removing_it_by_hand():
    t, m, y = task(30, 6, seed=2, shape=(8,))
    pad = torch.rand(y.shape, generator=torch.Generator().manual_seed(3)) < 0.3
    pad[4] = True  # one sequence is all padding
    keep = ~pad
    padded, removed = compare(t, m, y.masked_fill(pad, -100)), compare(t[keep], m[keep], y[keep])
    np.testing.assert_array_equal(list(padded.values()), list(removed.values()))
    assert compare(t, m, y.masked_fill(pad, -1), ignore_index=-1) == padded
    with pytest.raises(ValueError, match=r"labels: label -100 \(at index \(\d+, \d+\)\) is out of range \[0, 5\]"):
        compare(t, m, y.masked_fill(pad, -100), ignore_index=None)
    # the audit: padded examples leave the metrics, the copied errors and the bootstrap as if they were never there
    t2, m2, c2 = t[:, 0], m[:, 0], t[:, 0] + torch.randn(30, 6, generator=torch.Generator().manual_seed(4))
    y2, keep2 = y[:, 0], keep[:, 0]
    a = audit(t2, m2, y2.masked_fill(~keep2, -100), controls={"c": c2}, n_boot=50)
    b = audit(t2[keep2], m2[keep2], y2[keep2], controls={"c": c2[keep2]}, n_boot=50)
    assert a["inputs"]["n_tokens"] == b["inputs"]["n_tokens"] == int(keep2.sum()) < 30
    assert {k: v for k, v in a.items() if k != "inputs"} == {k: v for k, v in b.items() if k != "inputs"}


# ----------------------------------------------------------------------------------------------------------------
# models over a loader


def gpt(seed, vocab=V):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=8, dropout=0.0))


def near(model, seed, scale=0.002):
    """A copy of ``model`` with noise on its weights: a student that behaves much like it."""
    other = gpt(seed, model.config.vocab_size)
    with torch.no_grad():
        for mine, theirs in zip(other.parameters(), model.parameters()):
            mine.copy_(theirs + scale * torch.randn_like(theirs))
    return other


def sequences(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(V, (int(length),), generator=g) for length in torch.randint(1, 12, (n,), generator=g)]


def pad(batch, labels=False):
    """Hugging Face style: right-padded input_ids, attention_mask, optionally labels with -100 at the padding."""
    ids = torch.zeros(len(batch), max(map(len, batch)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(batch):
        ids[row, :len(seq)], mask[row, :len(seq)] = seq, 1
    return {"input_ids": ids, "attention_mask": mask, **({"labels": ids.masked_fill(mask == 0, -100)} if labels else {})}


def by_hand(model, seqs):
    """Each sequence alone through the model: position t's logits against token t + 1."""
    with torch.no_grad():
        rows = [model(s[None])[0, :-1] for s in seqs]
    return torch.cat(rows), torch.cat([s[1:] for s in seqs])


class HFStyle(torch.nn.Module):
    """A Hugging Face style causal LM: keyword inputs, an output with .logits."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.masks = inner, 0

    def forward(self, input_ids, attention_mask=None):
        self.masks += attention_mask is not None
        return SimpleNamespace(logits=self.inner(input_ids))


def aligned(batch):
    """kdlib's own text data: (x, y) with y[t] the token after x[t]; -100 where there is none."""
    out = pad(batch)
    y = torch.full_like(out["input_ids"], -100)
    y[:, :-1] = out["input_ids"][:, 1:].masked_fill(out["attention_mask"][:, 1:] == 0, -100)
    return out["input_ids"], y


def test_logits_of_a_causal_lm_are_shifted_and_unpadded_at_any_length():
    model, seqs = gpt(0), sequences()
    want, want_y = by_hand(model, seqs)
    model.train()
    hf = HFStyle(model)
    for loader in (DataLoader(seqs, batch_size=3, collate_fn=pad),  # attention_mask, model(input_ids)
                   DataLoader(seqs, batch_size=4, collate_fn=lambda b: pad(b, labels=True)),  # HF labels: shifted
                   DataLoader(seqs, batch_size=3, collate_fn=aligned)):  # (x, y) already aligned: as they are
        for m in (model, hf):
            got, got_y = logits(m, loader)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            assert torch.equal(got_y, want_y) and got.dtype == torch.float32
    assert hf.masks == 7 and model.training  # the mask reached the HF-style model; the mode is restored
    equal = torch.stack([s[:6] for s in seqs if len(s) >= 6])  # x alone (a TensorDataset's one-item batches)
    got, got_y = logits(model, DataLoader(TensorDataset(equal), batch_size=2))
    torch.testing.assert_close(got, by_hand(model, equal)[0], rtol=1e-5, atol=1e-5)
    got, got_y = logits(model, DataLoader(TensorDataset(equal), batch_size=2), causal_lm=False)  # unshifted
    assert got.shape == (equal.numel(), V) and torch.equal(got_y, equal.reshape(-1))


def test_logits_of_a_classifier_are_plain_logits():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(10, 4), torch.tensor([0, 1, 2, -100, 1, 0, 2, 2, -100, 1])
    got, got_y = logits(model, DataLoader(TensorDataset(x, y), batch_size=4))
    keep = y != -100
    assert torch.equal(got, model(x).detach()[keep]) and torch.equal(got_y, y[keep])
    ids, mask = torch.randint(5, (4, 6)), torch.ones(4, 6)  # Hugging Face style sequence classification
    bag = lambda input_ids: torch.nn.functional.one_hot(input_ids, 5).float().mean(1)[:, :3]
    got, got_y = logits(bag, [{"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, -100, 1])}])
    assert torch.equal(got, bag(ids)[[0, 1, 3]]) and torch.equal(got_y, torch.tensor([0, 2, 1]))


def saved_logits(models, loader):
    """What a user saves: each model's [N, L, V] logits over the padded sequences, labels [N, L] (-100: none)."""
    outs, labels = [[] for _ in models], []
    with torch.no_grad():
        for batch in loader:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            for out, model in zip(outs, models):
                out.append(model(ids))
            y = torch.full_like(ids, -100)
            y[:, :-1] = ids[:, 1:].masked_fill((mask[:, 1:] == 0) | (mask[:, :-1] == 0), -100)
            labels.append(y)
    L = max(y.shape[1] for y in labels)
    widen = lambda z, value: torch.nn.functional.pad(z, (0, 0, 0, L - z.shape[1]) if z.dim() == 3 else
                                                     (0, L - z.shape[1]), value=value)
    return [torch.cat([widen(z, 0.0) for z in out]).numpy() for out in outs], torch.cat([widen(y, -100) for y in labels])


def assert_same_report(a: dict, b: dict, path=""):
    """Equal up to float64 rounding (the two paths sum tokens in different batches); model names may differ."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            if k not in ("inputs", "name"):
                assert_same_report(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, z) in enumerate(zip(a, b)):
            assert_same_report(x, z, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


@pytest.mark.parametrize("seeds", [2, 1])  # several seeds (Wilcoxon) / one model each (bootstrap over sequences)
def test_audit_models_gives_the_report_of_its_saved_logits(seeds, tmp_path):
    teacher = gpt(0)
    students = [near(teacher, 10 + i) for i in range(seeds)]
    controls = [gpt(20 + i) for i in range(seeds)]
    loader = DataLoader(sequences(24, seed=1), batch_size=5, collate_fn=pad)
    r = audit_models(teacher, students, loader, controls={"no_kd": controls}, out=tmp_path, n_boot=200)
    (t, *rest), y = saved_logits([teacher, *students, *controls], loader)
    saved = audit(t, rest[:seeds], y, controls={"no_kd": rest[seeds:]}, n_boot=200)
    assert_same_report(r, saved)
    n_tokens = sum(max(len(s) - 1, 0) for s in sequences(24, seed=1))
    assert r["inputs"]["n_tokens"] == saved["inputs"]["n_tokens"] == n_tokens
    assert r["inputs"]["n_examples"] == 24 and r["inputs"]["logits_shape"] == [n_tokens, V]
    assert r["inputs"]["students"] == {1: ["student model (GPT)"],
                                       2: ["student model 1 (GPT)", "student model 2 (GPT)"]}[seeds]
    if seeds == 1:  # the near-copy of the teacher is far more teacher-like than the control
        assert r["uncertainty"]["resampling_unit"] == "sequence" and r["verdict"]["transfer_supported"]
        assert r["uncertainty"]["n_units"] == sum(len(s) > 1 for s in sequences(24, seed=1))
    assert json.loads((tmp_path / "report.json").read_text()) == r


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("case, match", [
    ("labels length", r"labels \(in-memory\) has shape \(29,\) but teacher \(in-memory\) has logits of shape \(30, 5\): "
                      r"expected labels of shape \(30,\)"),
    ("vocabulary", r"student model \(GPT\) gives logits of shape \(3, \d+, 13\) but teacher model \(GPT\) gives "
                   r"\(3, \d+, 11\) on the same batch: every model must give logits over the same K classes"),
    ("label range", r"labels: label 11 \(at index \d+\) is out of range \[0, 10\] for the K=11 classes of teacher"),
    ("no input_ids", r"a dict batch needs 'input_ids' \(and optionally 'labels', 'attention_mask'\); got keys \['ids'\]"),
    ("three items", r"a loader batch is a list of 3 items: allowed are \(x, y\), x alone, or a dict with 'input_ids'"),
    ("no labels", r"the batch has no labels: a classifier \(logits of shape \(4, 3\)\) needs \(x, y\) batches"),
    ("output", r"model returned a dict: a model must return logits \[B, K\] or \[B, L, V\]"),
    ("causal_lm", r"causal_lm='yes' is not allowed: use None \(decide from the batch\), True or False"),
    ("ignore_index", r"ignore_index='pad' is not allowed: use an integer label \(e.g. -100\) or None"),
])
def test_bad_input_is_one_line_naming_the_value(case, match):
    loader = DataLoader(sequences(6), batch_size=3, collate_fn=pad)
    torch.manual_seed(0)
    calls = {
        "labels length": lambda: audit(*task(30, 5, 0)[:2], task(30, 5, 0)[2][:-1]),
        "vocabulary": lambda: audit_models(gpt(0), gpt(1, vocab=13), loader),
        "label range": lambda: audit_models(gpt(0), gpt(1), [(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 11, 2]]))]),
        "no input_ids": lambda: logits(gpt(0), [{"ids": torch.zeros(2, 3, dtype=torch.long)}]),
        "three items": lambda: logits(gpt(0), [[torch.zeros(2, 3, dtype=torch.long)] * 3]),
        "no labels": lambda: logits(torch.nn.Linear(2, 3), DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=4)),
        "output": lambda: logits(lambda x: {"x": x}, [torch.zeros(2, 3)]),
        "causal_lm": lambda: logits(gpt(0), loader, causal_lm="yes"),
        "ignore_index": lambda: audit_models(gpt(0), gpt(1), loader, ignore_index="pad"),
    }
    with pytest.raises(ValueError, match=match) as error:
        calls[case]()
    one_line(error)


# ----------------------------------------------------------------------------------------------------------------
# GPT-2's vocabulary


BIG = textwrap.dedent("""
    import json, resource, sys, tempfile, time
    import torch
    from torch.utils.data import DataLoader
    from kdlib.audit import audit_models
    from kdlib.models.gpt import GPT, GPTConfig

    K = 50257
    def gpt(seed):
        torch.manual_seed(seed)
        return GPT(GPTConfig(vocab_size=K, block_size=512, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    teacher, student = gpt(0), gpt(1)
    with torch.no_grad():
        for mine, theirs in zip(student.parameters(), teacher.parameters()):
            mine.copy_(theirs + 0.005 * torch.randn_like(theirs))
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(K, (251 + (9 if i % 2 else -9),), generator=g) for i in range(80)]  # 20,000 targets
    def pad(batch):
        ids = torch.zeros(len(batch), max(map(len, batch)), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)], mask[row, :len(seq)] = seq, 1
        return {"input_ids": ids, "attention_mask": mask}
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        r = audit_models(teacher, student, DataLoader(seqs, batch_size=4, collate_fn=pad), out=out)
        files = sorted(p.name for p in __import__("pathlib").Path(out).iterdir())
    print(json.dumps({"peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
                      "seconds": time.time() - start, "report": r, "files": files}))
""")


@pytest.mark.slow
def test_an_audit_at_gpt2s_vocabulary_streams_within_4_gb():
    """A GPT-style teacher and student with K = 50,257 over 20,000 tokens: the full audit in one process whose
    peak memory stays under 4 GB (a dense K x K float64 table alone would take 20 GB; the two models' logits over
    the test set, 8 GB)."""
    done = subprocess.run([sys.executable, "-c", BIG], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\naudit at K=50,257 over 20,000 tokens: peak {got['peak_gb']:.2f} GB, {got['seconds']:.0f} s")
    r = got["report"]
    assert got["peak_gb"] <= 4.0
    assert r["inputs"]["n_tokens"] == 20000 and r["inputs"]["num_classes"] == 50257
    assert r["notes"] == ["procrustes_distance skipped: K=50257 classes and N=20000 tokens do not fit its memory "
                          "budget (K*K or 2*N*K <= 16,777,216 float64 values); every other metric is exact"]
    student = r["models"]["student"][0]
    assert student["procrustes_distance"] is None
    assert all(student[m] is not None for m in ("activation_distance", "rank_disagreement", "js_divergence",
                                                "variation_of_information", "loss", "prediction_agreement"))
    assert r["teacher"]["errors"] == 20000 - round(r["teacher"]["accuracy"] * 20000)
    assert "copied_errors.csv" in got["files"] and "report.md" in got["files"]


# ----------------------------------------------------------------------------------------------------------------
# the README's example: keep EXAMPLE identical to the python block of README.md's "## Audit your own distillation"


EXAMPLE = '''\
import torch
from torch.utils.data import DataLoader
from kdlib.audit import audit_models
from kdlib.models.gpt import GPT, GPTConfig

V = 512  # the vocabulary; GPT-2's 50,257 works the same way, only slower


def gpt(seed):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.0))


teacher, control = gpt(0), gpt(1)  # control: the student's architecture trained without the teacher
student = gpt(2)  # stands in for a distilled student: the teacher's weights plus a little noise
with torch.no_grad():
    for mine, theirs in zip(student.parameters(), teacher.parameters()):
        mine.copy_(theirs + 0.002 * torch.randn_like(theirs))

g = torch.Generator().manual_seed(0)
sequences = [torch.randint(V, (int(n),), generator=g) for n in torch.randint(8, 64, (96,), generator=g)]


def pad(batch):  # right-pad to the longest sequence; attention_mask marks the real tokens
    ids = torch.zeros(len(batch), max(map(len, batch)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(batch):
        ids[row, :len(seq)], mask[row, :len(seq)] = seq, 1
    return {"input_ids": ids, "attention_mask": mask}


loader = DataLoader(sequences, batch_size=16, collate_fn=pad)
report = audit_models(teacher, student, loader, controls={"no_kd": control}, out="audit_report")
print(report["verdict"]["text"])
'''


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    section = Path(__file__).parents[1].joinpath("README.md").read_text().split("## Audit your own distillation")[-1]
    block = re.search(r"```python\n(.*?)```", section.split("\n## ")[0], re.S)
    if block:  # once README.md carries the example, it is this one
        assert block.group(1) == EXAMPLE
    monkeypatch.chdir(tmp_path)
    exec(compile(EXAMPLE, "README example", "exec"), {"__name__": "__main__"})
    assert "Transfer is supported" in capsys.readouterr().out
    report = json.loads((tmp_path / "audit_report" / "report.json").read_text())
    assert report["uncertainty"]["resampling_unit"] == "sequence" and report["inputs"]["n_examples"] == 96


def test_the_command_line_audit_leaves_out_the_padding_label_it_is_given(tmp_path, capsys):
    """``kdlib audit --ignore-index``: a label value other than -100 can mark padding."""
    import numpy as np
    from kdlib.__main__ import main
    g = np.random.default_rng(0)
    t, s, c = (g.normal(size=(40, 5)).astype(np.float32) for _ in range(3))
    y = g.integers(0, 5, 40)
    padded = y.copy()
    padded[30:] = 7  # padding rows, whose logits are noise
    for name, value in {"t": t, "s": s, "c": c, "y": y, "p": padded}.items():
        np.save(tmp_path / f"{name}.npy", value)
    args = lambda labels, out, *more: ["audit", "--teacher", str(tmp_path / "t.npy"), "--student",
                                       str(tmp_path / "s.npy"), "--control", f"no_kd={tmp_path / 'c.npy'}",
                                       "--labels", str(tmp_path / labels), "--out", str(tmp_path / out),
                                       "--bootstrap", "50", *more]
    for name in ("t", "s", "c"):
        np.save(tmp_path / f"{name}30.npy", np.load(tmp_path / f"{name}.npy")[:30])
    np.save(tmp_path / "y30.npy", y[:30])
    assert main(args("p.npy", "padded", "--ignore-index", "7")) == 0
    assert main(["audit", "--teacher", str(tmp_path / "t30.npy"), "--student", str(tmp_path / "s30.npy"),
                 "--control", f"no_kd={tmp_path / 'c30.npy'}", "--labels", str(tmp_path / "y30.npy"), "--out",
                 str(tmp_path / "cut"), "--bootstrap", "50"]) == 0
    import json
    padded_report, cut_report = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("padded", "cut"))
    def flat(tree, prefix=""):
        if isinstance(tree, dict):
            return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}/").items()}
        if isinstance(tree, list):
            return {k: v for i, value in enumerate(tree) for k, v in flat(value, f"{prefix}{i}/").items()}
        return {prefix: tree}
    for key in ("teacher", "models"):
        padded_flat, cut_flat = flat(padded_report[key]), flat(cut_report[key])
        assert padded_flat.keys() == cut_flat.keys()
        for name, value in cut_flat.items():
            if name.endswith("/name/"):
                continue  # the files' names
            assert padded_flat[name] == (pytest.approx(value, rel=1e-12, nan_ok=True) if isinstance(value, float)
                                         else value), name
    assert main(args("p.npy", "refused")) == 2  # 7 is not a class of 5 logits when it is not padding
