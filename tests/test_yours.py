"""Your own study without a fork: the README's example as written (a setup named by import path through every
launcher: tests/test_launchers.py), plugins' entry points, a teacher from a checkpoint file, and one line for every kind of bad input."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdlib import setups
from kdlib.__main__ import main
from kdlib.registry import Registry
from kdlib.runs.spec import plan
from kdlib.store import read_result

REPO = Path(__file__).resolve().parents[1]


def readme_blocks(section: str) -> list[tuple[str, str]]:
    """The fenced blocks (language, text) of a README section."""
    text = (REPO / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", body, re.S)


@pytest.mark.slow
def test_the_readmes_example_runs_as_written(tmp_path):
    """A torchvision student against a checkpointed teacher on an ImageFolder, two local workers, then reported and
    tested like a built-in setup."""
    blocks = readme_blocks("Your own study")
    (python, code), (toml, config), (bash, commands) = blocks
    assert (python, toml, bash) == ("python", "toml", "bash")
    (tmp_path / "make_example.py").write_text(code)
    (tmp_path / "my-kd.toml").write_text(config)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    said = []
    for command in commands.strip().splitlines():
        command = command.split("  #")[0].strip()
        run = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert run.returncode == 0, (command, run.stderr[-3000:])
        said.append(run.stdout)
    assert "my-kd (smoke): 6 student runs and 1 teacher collected" in said[1]
    assert re.search(r"my-kd, KD 0\.5, teacher seed 0: transfer", said[2]), said[2]
    print(said[1] + said[2])  # the closing note's example output
    results = [read_result(tmp_path / "results", s) for s in plan(setups.get(str(tmp_path / "my-kd.toml"), "smoke"))]
    assert all(r["status"] == "ok" for r in results) and {len(r.get("pack") or []) for r in results} == {0}
    teacher = results[0]
    loaded = torch.load(tmp_path / "results" / "runs" / teacher.run_id / "model.pt", weights_only=True)
    given = torch.load(tmp_path / "teacher.pt", weights_only=True)
    assert all(torch.equal(loaded[k], given[k]) for k in given)  # used as loaded
    assert teacher["spec"]["weights_sha256"] and teacher["spec"]["recipe"] is None


def test_plugins_register_through_entry_points(tmp_path, monkeypatch):
    """An installed package's entry points (groups kdlib.setups, kdlib.models, kdlib.data) are found when a name is
    first missing; the built-in names stay as they were."""
    package = tmp_path / "site"
    (package / "kdplugin").mkdir(parents=True)
    (package / "kdplugin" / "__init__.py").write_text("def net(num_classes):\n    import torch\n"
                                                      "    return torch.nn.Linear(3, num_classes)\n")
    info = package / "kdplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[kdlib.models]\nplugnet = kdplugin:net\n")
    monkeypatch.syspath_prepend(str(package))
    registry = Registry("architecture", group="kdlib.models")
    registry.register("gpt", "kdlib.models.gpt:gpt")
    assert registry["plugnet"](4).out_features == 4 and registry.meta("plugnet") == {"plugin": "kdplugin:net"}
    with pytest.raises(ValueError, match="unknown architecture 'plugnt': did you mean 'plugnet'"):
        registry["plugnt"]


def test_architectures_and_datasets_named_by_import_path_need_no_registration(tmp_path):
    from kdlib import data, models
    assert models.build("torchvision:resnet18", 7).fc.out_features == 7
    assert "torchvision:resnet18" in models.ARCHITECTURES and "torchvision:resnet18" not in list(models.ARCHITECTURES)
    assert isinstance(models.build("torch.nn:Identity", 7), torch.nn.Identity)  # a factory without num_classes
    (tmp_path / "pairdata.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def load(root, n=30):\n    x, y = torch.randn(n, 2), torch.arange(n) % 2\n"
        "    return TensorDataset(x, y), TensorDataset(x[:10], y[:10])\n")
    sys.path.insert(0, str(tmp_path))
    try:
        task = data.load("pairdata:load", tmp_path, n=20)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pairdata", None)
    assert task.num_classes == 2 and len(task.train) == 20 and task.train.fixed


# ----------------------------------------------------------------------------- bad input: one line each

BAD_MODULE = '''
import torch
def raises(profile):
    raise RuntimeError("no GPU budget")
def wide():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(5))
'''


def toml(tmp_path, name="my.toml", **changes) -> str:
    values = {"name": '"mine"', "modality": '"vision"', "dataset": '"imagefolder"',
              "dataset_kwargs": '{ path = "images", image_size = 8 }', "teacher": '"torchvision:resnet18"',
              "student": '"torchvision:resnet18"', "alphas": "[0.5]", "student_seeds": "[10, 11]",
              "recipe": '{ optimizer = "sgd", lr = 0.1, batch_size = 4, steps = 2 }', **changes}
    (tmp_path / name).write_text("".join(f"{k} = {v}\n" for k, v in values.items() if v is not None))
    return str(tmp_path / name)


@pytest.fixture
def images(tmp_path):
    from PIL import Image
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "images" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8), (60 * i, 100 if c == "a" else 0, 0)).save(tmp_path / "images" / split / c /
                                                                                     f"{i}.png")
    (tmp_path / "badsetups.py").write_text(BAD_MODULE)
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("badsetups", None)


def one_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_each_bad_input_is_one_line_naming_the_value(images, capsys):
    tmp = images
    run = lambda ref, *more: one_line(capsys, ["run", ref, "--profile", "smoke", "--data-dir", str(tmp), "--out",
                                              str(tmp / "out"), *more])
    assert run("nopkg.kd:my_setup") == ("kdlib run: error: setup 'nopkg.kd:my_setup': cannot import it "
                                        "(ModuleNotFoundError: No module named 'nopkg')")
    assert "unknown key 'studnt': did you mean 'student'?" in run(toml(tmp, studnt='"x"', student=None))
    assert "setup factory badsetups:raises failed: RuntimeError: no GPU budget" in run("badsetups:raises")
    assert "student 'torchvision:nosuchnet' failed to build" in run(toml(tmp, student='"torchvision:nosuchnet"'))
    assert ("student 'badsetups:wide' gives 5 outputs per example, but dataset 'imagefolder' has 2 classes"
            in run(toml(tmp, student='"badsetups:wide"')))
    torch.manual_seed(0)
    import torchvision
    torch.save(torchvision.models.resnet34(num_classes=2).state_dict(), tmp / "wrong.pt")
    err = run(toml(tmp, teacher='{ arch = "torchvision:resnet18", checkpoint = "wrong.pt" }'))
    assert f"teacher checkpoint {tmp / 'wrong.pt'} does not fit the teacher's architecture: 96 unexpected" in err


def test_a_checkpoint_is_read_without_running_code_unless_trusted(images, capsys):
    import torchvision
    tmp = images
    torch.save(torchvision.models.resnet18(num_classes=2), tmp / "pickled.pt")  # a whole pickled model
    ref = toml(tmp, teacher='{ arch = "torchvision:resnet18", checkpoint = "pickled.pt" }')
    err = one_line(capsys, ["run", ref, "--profile", "smoke", "--data-dir", str(tmp), "--out", str(tmp / "o")])
    assert "holds pickled objects beyond tensors, which could run code when loaded" in err
    assert "--trust-checkpoints" in err
    assert main(["run", ref, "--profile", "smoke", "--data-dir", str(tmp), "--out", str(tmp / "o"),
                 "--trust-checkpoints"]) == 0
    os.environ.pop("KDLIB_TRUST_CHECKPOINTS")


def test_a_checkpoint_changed_after_planning_is_refused(images, tmp_path):
    import torchvision
    from kdlib.runs.run import run_one
    from kdlib.runs.weights import CheckpointError
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), tmp_path / "t.pt")
    setup = setups.get(toml(tmp_path, teacher='{ arch = "torchvision:resnet18", checkpoint = "t.pt" }'), "smoke")
    teacher = plan(setup)[0]
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), tmp_path / "t.pt")  # another init
    with pytest.raises(CheckpointError, match="changed since its run was planned"):
        run_one(teacher, tmp_path / "out", tmp_path)


def test_a_timm_architecture_without_timm_is_one_line():
    from kdlib import models
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"^architecture 'timm:resnet18' needs timm, which is not installed: "
                                             r"pip install timm$"):
            models.build("timm:resnet18", 3)
    else:
        assert models.build("timm:resnet18", 3).num_classes == 3
