"""One registry helper (kdlib.registry): lazy "module:name" entries, one "did you mean" error, and ``register`` working
alike for architectures, datasets, setups, launchers and probes; a launcher's own options reach the CLI."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdlib import data, models, setups
from kdlib.__main__ import _launcher_options, main, parser
from kdlib.analysis.collect import collect
from kdlib.engine import probes
from kdlib.engine.recipe import Recipe
from kdlib.registry import Registry, resolve
from kdlib.runs import launchers
from kdlib.runs.launchers.serial import launch as serial_launch
from kdlib.runs.setup import run_setup
from kdlib.setups.base import Model, Setup, UnknownSetup

REPO = Path(__file__).resolve().parents[1]


def test_a_lazy_entry_is_imported_on_first_use_only():
    r = Registry("widget")
    r.register("decoder", "json.decoder:JSONDecoder")
    r.register("missing", "kdlib_no_such_module:thing")
    assert r.entry("decoder") == "json.decoder:JSONDecoder" and "missing" in r  # registered, nothing imported
    import json.decoder
    assert r["decoder"] is json.decoder.JSONDecoder and r.entry("decoder") is json.decoder.JSONDecoder
    with pytest.raises(ValueError, match=r"^widget 'missing': cannot import 'kdlib_no_such_module:thing' "
                                         r"\(ModuleNotFoundError: No module named 'kdlib_no_such_module'\)$"):
        r["missing"]  # one line naming the entry and what failed
    with pytest.raises(ValueError, match="is not an import path: write it as 'module:name'"):
        resolve("json.decoder.JSONDecoder")


def test_register_as_call_and_decorator_and_twice_is_an_error():
    r = Registry("widget")

    @r.register("a", colour="red")
    def a():
        return 1
    r.register("b", a)
    assert r["a"] is a and r["b"] is a and r.meta("a") == {"colour": "red"} and r.names() == ["a", "b"]
    r.register("a", a, colour="red")  # the same entry again: fine (a module imported twice)

    def a():  # a notebook cell run again: the same function by module and name
        return 1
    r.register("a", a)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        r.register("a", lambda: 2)
    r.register("lazy", "json.decoder:JSONDecoder")
    r["lazy"]
    r.register("lazy", "json.decoder:JSONDecoder")  # the same path again, after first use
    with pytest.raises(ValueError, match="widget 'lazy' is registered twice"):
        r.register("lazy", "json.decoder:JSONDecodeError")
    r.unregister("b")
    assert "b" not in r and r.names() == ["a", "lazy"]


@pytest.mark.parametrize("call, message", [
    (lambda: models.build("resnt18", 10), "unknown architecture 'resnt18': did you mean 'resnet18'"),
    (lambda: data.load("digit"), "unknown dataset 'digit': did you mean 'digits'"),
    (lambda: setups.get("tinyshakespeare-nanogp", "smoke"), "unknown setup 'tinyshakespeare-nanogp': did you mean "
                                                             "'tinyshakespeare-nanogpt'"),
    (lambda: launchers.get("seral"), "unknown launcher 'seral': did you mean 'serial'"),
    (lambda: probes.run_probes(["th_completon"], None, None, "cpu", 1), "unknown probe 'th_completon': did you mean "
                                                                        "'th_completion'"),
])
def test_every_registry_says_the_same_did_you_mean(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_registries_import_no_torch_and_a_family_only_when_built():
    code = ("import sys\nfrom kdlib import data, models, setups\nfrom kdlib.runs import launchers\n"
            "assert 'torch' not in sys.modules, 'torch'\n"
            "models.build('gpt', 11, block_size=8, n_layer=1, n_head=1, n_embd=8)\n"
            "assert 'kdlib.models.gpt' in sys.modules and 'kdlib.models.vision' not in sys.modules\n"
            "assert 'torchvision' not in sys.modules, 'torchvision'\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stderr


class TinyMLP(torch.nn.Module):
    def __init__(self, num_classes: int, hidden: int = 16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


def _my_setup(profile: str) -> Setup:
    recipe = Recipe("sgd", lr=0.1, batch_size=32, steps=4)
    return Setup(name="my-digits", modality="vision", description="a user's own setup", dataset="my-digits-data",
                 teacher=Model("my-mlp", {"hidden": 16}), teacher_recipe=recipe, student_recipe=recipe,
                 teacher_seeds=(0,), student_seeds=(10, 11), alphas=(0.5,), dataset_kwargs={"train_per_class": 10})


@pytest.fixture
def mine():
    """A user's architecture, dataset (a lazy loader path), setup and launcher, each registered the one way."""
    calls = []

    def inline(jobs, ws, workers=1, progress=True, desc="runs", note="none"):
        calls.append(note)
        serial_launch(jobs, ws, progress=False)
    models.register("my-mlp", TinyMLP)
    data.register("my-digits-data", data.Source((), "scikit-learn's digits", built_in=True,
                                                loader="kdlib.data.vision:load_digits"))
    setups.register("my-digits", _my_setup)
    launchers.register("inline", inline, help="in this process, noting", options=(
        launchers.Option("note", "--inline-note", "a word the launcher records", env="INLINE_NOTE"),))
    yield calls
    models.ARCHITECTURES.unregister("my-mlp")
    data.SOURCES.unregister("my-digits-data")
    setups.SETUPS.unregister("my-digits")
    launchers.LAUNCHERS.unregister("inline")


def test_a_users_own_architecture_dataset_setup_and_launcher_run_a_study(mine, tmp_path, capsys):
    setup = setups.get("my-digits", "smoke")
    assert "my-digits" in setups.names() and isinstance(models.build("my-mlp", 10), TinyMLP)
    args = parser().parse_args(["run", "my-digits", "--profile", "smoke", "--launcher", "inline",
                                "--inline-note", "hello"])
    assert _launcher_options(args) == {"note": "hello"}
    run_setup(setup, tmp_path, launcher="inline", note="hello")
    students, teachers = collect(setup, tmp_path)
    assert mine == ["hello", "hello"] and len(teachers) == 1 and len(students) == 2 * 3
    assert main(["launchers", "--env"]) == 0
    assert "INLINE_NOTE --inline-note" in capsys.readouterr().out.splitlines()


def test_a_dataset_registers_a_source_not_a_bare_loader():
    with pytest.raises(TypeError, match="dataset 'mine': register a Source, not <function"):
        data.register("mine", lambda root: None)
    assert "mine" not in data.SOURCES


def test_unknown_setups_stay_user_errors():
    with pytest.raises(UnknownSetup, match="`python -m kdlib list` shows all"):
        setups.get("nope", "smoke")
