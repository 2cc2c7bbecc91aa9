"""Every slower road is visible: a compiled step run eagerly (the recompile limit included), a pack trained one by
one, a failed pack-size probe. Each prints one ``kdlib fallback (kind): ...`` line and lands in the run's result."""
import json

import pytest
import torch

from kdlib import setups
from kdlib.engine import train as train_mod
from kdlib.engine.fallback import fallback, kinds
from kdlib.engine.train import Forward
from kdlib.runs import autopack
from kdlib.runs import run as runs_mod
from kdlib.runs.setup import run_setup
from kdlib.runs.spec import plan
from kdlib.store import read_result


def test_a_fallback_line_is_printed_flushed_and_recorded_once(capsys):
    record = []
    line = fallback("pack", "a pack of 3 trains one by one (RuntimeError: x)", record)
    fallback("pack", "a pack of 3 trains one by one (RuntimeError: x)", record)
    assert line == "kdlib fallback (pack): a pack of 3 trains one by one (RuntimeError: x)" and record == [line]
    assert capsys.readouterr().err.count(line) == 2  # said each time it happens, recorded once
    assert kinds([line, "kdlib fallback (compile): y", "a note"]) == ["compile", "pack"] and kinds(None) == []
    with pytest.raises(ValueError, match="fallback kind 'other' is not allowed: use one of"):
        fallback("other", "why")


def test_past_the_recompile_limit_a_compiled_function_runs_eagerly_and_says_so(monkeypatch, capsys):
    """dynamo's own behaviour at its limit is a silent eager run; kdlib sets the limit and makes hitting it loud."""
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", torch._dynamo.config.recompile_limit)
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit",
                        torch._dynamo.config.fail_on_recompile_limit_hit)
    monkeypatch.setattr(train_mod, "RECOMPILE_LIMIT", 1)
    torch._dynamo.reset()

    def double(x):
        return x * 2 + 1

    fallbacks = []
    forward = Forward(double, True, fallbacks)
    assert torch.equal(forward(torch.ones(3)), torch.full((3,), 3.0)) and not fallbacks
    assert torch.equal(forward(torch.ones(2, 5)), torch.full((2, 5), 3.0))  # a second shape: past a limit of 1
    assert len(fallbacks) == 1 and "torch.compile failed" in fallbacks[0] and "trained eagerly" in fallbacks[0]
    assert "kdlib fallback (compile)" in capsys.readouterr().err
    assert forward.fn is forward.eager
    torch._dynamo.reset()


def test_the_default_limit_is_set_deliberately_when_compiling():
    train_mod.compiled(lambda x: x)
    assert torch._dynamo.config.recompile_limit == train_mod.RECOMPILE_LIMIT > 8
    assert torch._dynamo.config.fail_on_recompile_limit_hit


def test_a_pack_that_fails_says_so_and_its_members_record_the_line(tmp_path, data_dir, monkeypatch, capsys):
    setup = setups.get("tinyshakespeare-nanogpt", "smoke")

    def broken_pack(*args, **kwargs):
        raise RuntimeError("LSE is not correctly aligned (strideH)")

    monkeypatch.setattr(runs_mod, "train_together", broken_pack)
    run_setup(setup, tmp_path, data_dir, progress=False, pack=7)
    students = [read_result(tmp_path, s) for s in plan(setup) if s.role == "student"]
    err = capsys.readouterr().err
    assert err.count("kdlib fallback (pack): a pack of 7 trains one by one (RuntimeError: LSE") == 2  # 14 students
    assert all(kinds(r["fallbacks"]) == ["pack"] for r in students)
    teacher = read_result(tmp_path, plan(setup)[0])
    assert teacher.get("fallbacks") is None  # nothing slower happened to it (None is not stored)


def test_a_failed_probe_says_so_and_the_students_trained_after_it_record_it(tmp_path, data_dir, monkeypatch, capsys):
    setup = setups.get("tinyshakespeare-nanogpt", "smoke")

    def measure(size):
        if size == 4:
            raise RuntimeError("CUBLAS_STATUS_ALLOC_FAILED")
        return 0.1 * size ** 0.5

    real = autopack.pack_size
    monkeypatch.setattr("kdlib.runs.setup.pack_size", lambda *a, **k: real(*a, **{**k, "measure": measure}))
    run_setup(setup, tmp_path, data_dir, progress=False, pack="auto")
    line = "kdlib fallback (probe): a pack of 4 failed (RuntimeError: CUBLAS_STATUS_ALLOC_FAILED); packs of 2"
    assert line in capsys.readouterr().err
    students = [read_result(tmp_path, s) for s in plan(setup) if s.role == "student"]
    assert all(r["fallbacks"] == [line] for r in students) and all(len(r["pack"]) == 2 for r in students)
    memo = json.loads(next(tmp_path.rglob(autopack.MEMO)).read_text())
    assert memo["cpu"]["fallback"] == "a pack of 4 failed (RuntimeError: CUBLAS_STATUS_ALLOC_FAILED); packs of 2"
    fallbacks = []
    assert real(setup, tmp_path, data_dir, "cpu", "auto", measure=measure, fallbacks=fallbacks) == 2
    assert fallbacks == [line]  # remembered, it is said and recorded again


def test_the_probe_measures_the_setups_own_mix_and_teacher_path(data_dir, monkeypatch):
    """3 of every 7 members read the teacher at the paper's grid, at every pack size; a fixed-example setup's students
    read a logit cache, a random-window one's a live teacher (as their runs do)."""
    seen = []
    monkeypatch.setattr(autopack, "train_together", lambda models, data, objectives, recipe, seeds, **kw: seen.append(
        (objectives, kw["teacher"], kw["teacher_cache"])))
    for name, live in (("tinyshakespeare-nanogpt", True), ("cifar10-resnet18", False)):
        setup = setups.get(name, "smoke")
        task = runs_mod.load_task(plan(setup)[0], data_dir)
        seen.clear()
        autopack.measure_pack(setup, task, "cpu", warmup=1, steps=1)(7)
        objectives, teacher, cache = seen[0]
        assert sum(o.needs_teacher for o in objectives) == 3 and len({o for o in objectives}) == 7
        assert (teacher is not None) == live and (cache is not None) == (not live)
        seen.clear()
        autopack.measure_pack(setup, task, "cpu", warmup=1, steps=1)(2)
        assert [o.kind for o in seen[0][0]] == ["ce", "kd"]  # plan order: SIDDO, then KD and RCD at each alpha
