"""Runs that survive preemption: a run or pack stopped mid-way and resumed from its checkpoint gives the same bits as
one never stopped (weights, BatchNorm statistics, loss curve, results), whatever its data source; SIGKILL loses at
most the steps since the last checkpoint; SIGTERM writes one and exits."""
import copy
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from kdlib.data.sources import ExampleData, WindowData
from kdlib.engine.checkpoint import Checkpoint
from kdlib.engine.objectives import Objective
from kdlib.engine.recipe import Recipe
from kdlib.engine.together import train_together
from kdlib.engine.train import init_model, train
from kdlib.models.gpt import GPT, GPTConfig

REPO = Path(__file__).resolve().parents[1]
DROPOUT_GPT = GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.2)


class Killed(Exception):
    """Stands in for the process dying right after a checkpoint."""


class KilledAfter(Checkpoint):
    """A checkpoint written at every step, whose process 'dies' after the one of step ``step``."""

    def __init__(self, path, step):
        super().__init__(path, every=1e-9)
        self.step = step

    def save(self, state):
        super().save(state)
        if state["step"] == self.step:
            raise Killed


def noisy(x, generator):
    """An augmentation drawing from the run's generator, and from the global RNG (as some torchvision ones do)."""
    return x + 0.1 * torch.randn(x.shape, generator=generator) + 0.01 * torch.randn(x.shape)


class Replayed:
    """A data source without positions (like the ImageNet folder): a resumed run replays its batches."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def batches(self, batch_size, steps, generator):
        return self.data.batches(batch_size, steps, generator)


def conv_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 5))


def images(n=37):
    g = torch.Generator().manual_seed(0)
    return ExampleData(torch.randn(n, 3, 6, 6, generator=g), torch.randint(5, (n,), generator=g), augment=noisy)


def text():
    return WindowData(torch.randint(11, (600,), generator=torch.Generator().manual_seed(0)), 16)


def assert_same_bits(a: nn.Module, b: nn.Module):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


CASES = {  # model, data, objective, recipe: augmented images over several epochs (a last short batch), text windows
    "images": (conv_net, images, Objective("ls", alpha=0.1),
               Recipe("sgd", lr=0.1, momentum=0.9, batch_size=8, steps=13, grad_clip=1.0, schedule="cosine")),
    "text": (lambda: GPT(DROPOUT_GPT), text, Objective("kd", alpha=0.5, temperature=2.0),
             Recipe("adamw", lr=1e-2, batch_size=4, steps=9)),
    "replayed": (conv_net, lambda: Replayed(images()), Objective("ce"), Recipe("adam", lr=1e-2, batch_size=8, steps=9)),
}


@pytest.mark.parametrize("case", CASES)
def test_a_run_resumed_from_its_checkpoint_gives_the_same_bits(case, tmp_path):
    make, data, objective, recipe = CASES[case]
    teacher = init_model(make, 7).eval() if objective.needs_teacher else None
    whole = init_model(make, 0)
    log = train(whole, data(), objective, recipe, 3, teacher=teacher, last_epoch=True)
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(Killed):
        train(init_model(make, 0), data(), objective, recipe, 3, teacher=teacher, checkpoint=KilledAfter(path, 5),
              last_epoch=True)
    resumed = init_model(make, 0)  # a new process: the initial model, then the checkpoint
    again = train(resumed, data(), objective, recipe, 3, teacher=teacher, checkpoint=Checkpoint(path, None),
                  last_epoch=True)
    assert_same_bits(whole, resumed)
    assert (again.steps, again.losses, again.last_epoch) == (log.steps, log.losses, log.last_epoch)
    assert again.notes == ["resumed from a checkpoint after step 5"]


def test_a_pack_resumed_from_its_checkpoint_gives_the_same_bits(tmp_path):
    """Each member's own data order, augmentation stream (global RNG included) and dropout come back."""
    objectives = [Objective("ce"), Objective("rcd", alpha=0.5), Objective("ls", alpha=0.2)]
    recipe = Recipe("sgd", lr=0.1, momentum=0.9, batch_size=8, steps=11, grad_clip=1.0)
    start = init_model(conv_net, 0)
    whole = [copy.deepcopy(start) for _ in objectives]
    logs = train_together(whole, images(), objectives, recipe, [10, 11, 12], log_every=2)
    path = tmp_path / "pack.pt"
    with pytest.raises(Killed):
        train_together([copy.deepcopy(start) for _ in objectives], images(), objectives, recipe, [10, 11, 12],
                       log_every=2, checkpoint=KilledAfter(path, 6))
    resumed = [copy.deepcopy(start) for _ in objectives]
    again = train_together(resumed, images(), objectives, recipe, [10, 11, 12], log_every=2,
                           checkpoint=Checkpoint(path, None))
    for a, b, log, log_again in zip(whole, resumed, logs, again):
        assert_same_bits(a, b)
        assert (log_again.steps, log_again.losses) == (log.steps, log.losses)


def test_a_checkpoint_is_written_at_its_interval_and_read_without_code(tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 7))  # seconds: 7 per step
    monkeypatch.setattr("kdlib.engine.checkpoint.time.monotonic", lambda: next(clock))
    saved = []
    checkpoint = Checkpoint(tmp_path / "c.pt", every=20)
    monkeypatch.setattr(checkpoint, "save", lambda state: saved.append(state["step"]) or Checkpoint.save(checkpoint,
                                                                                                          state))
    train(init_model(conv_net, 0), images(), Objective("ce"), Recipe("sgd", lr=0.1, batch_size=8, steps=12), 1,
          checkpoint=checkpoint)
    assert saved == [3, 6, 9]  # every third step (21 s), never after the last: the result is written then
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["step"] == 9 and not list(tmp_path.glob(".c.pt.*"))  # atomic: no temporary file left


# ----------------------------------------------------------------------------- real processes: SIGKILL and SIGTERM

SCRIPT = """
import sys, time
from kdlib import setups
from kdlib.engine import checkpoint
from kdlib.runs.run import run_one, run_pack
from kdlib.runs.spec import plan
from kdlib.runs.workspace import Workspace

out, data, mode, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
save = checkpoint.Checkpoint.save
checkpoint.Checkpoint.save = lambda self, state: (save(self, state), time.sleep(pause))  # slow enough to kill
setup = setups.get("tinyshakespeare-nanogpt", "smoke")
specs = plan(setup)
students = [s for s in specs if s.role == "student"][:3]
ws = Workspace.resolve(out, data, checkpoint_every=1e-9)
if mode == "teacher":
    run_one(specs[0], ws)
elif mode == "one":
    run_one(students[1], ws, teacher=specs[0])
else:
    run_pack(students, specs[0], ws)
"""


def start(tmp_path, out, data_dir, mode, pause):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(out), str(data_dir), mode, str(pause)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def wait_for_step(process, pattern_dir: Path, pattern: str, step: int):
    """Wait until a checkpoint of at least ``step`` steps exists (the process still running)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        for path in pattern_dir.glob(pattern):
            try:
                if torch.load(path, weights_only=True)["step"] >= step:
                    return path
            except (OSError, RuntimeError, EOFError):
                pass  # replaced while being read
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def results(out: Path, specs) -> dict:
    from kdlib.store import read_result, run_dir
    found = {}
    for spec in specs:
        r = read_result(out, spec)
        weights = torch.load(run_dir(out, spec) / "model.pt", weights_only=True)
        found[spec.run_id] = (r["metrics"], r["train_curve"], {k: v.tolist() for k, v in weights.items()})
    return found


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["one", "pack"])
def test_a_run_and_a_pack_killed_halfway_resume_to_the_same_bits(mode, tmp_path, data_dir):
    from kdlib import setups
    from kdlib.runs.spec import plan
    specs = plan(setups.get("tinyshakespeare-nanogpt", "smoke"))
    students = [s for s in specs if s.role == "student"][:3]
    trained = students if mode == "pack" else students[1:2]
    base = tmp_path / "base"
    assert start(tmp_path, base, data_dir, "teacher", 0).wait() == 0
    whole, killed = shutil.copytree(base, tmp_path / "whole"), shutil.copytree(base, tmp_path / "killed")
    assert start(tmp_path, whole, data_dir, mode, 0).wait() == 0
    process = start(tmp_path, killed, data_dir, mode, 1.0)
    wait_for_step(process, killed / "runs", "*/*checkpoint.pt", 2)  # halfway through 4 steps
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not any((killed / "runs").glob("*/result.json")) or all(
        not (killed / "runs" / s.run_id / "result.json").exists() for s in trained)
    resumed = start(tmp_path, killed, data_dir, mode, 0)
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert results(killed, trained) == results(whole, trained)
    assert not list((killed / "runs").glob("*/*checkpoint.pt"))  # removed with the result written


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_then_the_run_resumes(tmp_path, data_dir):
    from kdlib import setups
    from kdlib.runs.spec import plan
    from kdlib.store import run_dir
    specs = plan(setups.get("tinyshakespeare-nanogpt", "smoke"))
    student = [s for s in specs if s.role == "student"][1]
    base = tmp_path / "base"
    assert start(tmp_path, base, data_dir, "teacher", 0).wait() == 0
    whole, stopped = shutil.copytree(base, tmp_path / "whole"), shutil.copytree(base, tmp_path / "stopped")
    assert start(tmp_path, whole, data_dir, "one", 0).wait() == 0
    process = start(tmp_path, stopped, data_dir, "one", 1.0)
    wait_for_step(process, run_dir(stopped, student), "checkpoint.pt", 1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err  # exited as SIGTERM asks, after writing its checkpoint
    state = torch.load(run_dir(stopped, student) / "checkpoint.pt", weights_only=True)
    assert 1 <= state["step"] < 4
    assert not (run_dir(stopped, student) / "result.json").exists()
    assert not (run_dir(stopped, student) / "claim").exists()  # released: a requeued job takes it at once
    assert start(tmp_path, stopped, data_dir, "one", 0).wait() == 0
    assert results(stopped, [student]) == results(whole, [student])
