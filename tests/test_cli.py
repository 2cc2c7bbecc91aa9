"""The command line: fast help and list (no torch), short messages and exit 2 for a user's mistakes, plan."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kdlib import setups
from kdlib.__main__ import data_status, main, parser
from kdlib.data.base import SOURCES

REPO = Path(__file__).resolve().parents[1]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kdlib", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_help_and_list_answer_without_loading_torch():
    code = ("import sys, runpy; sys.argv = ['kdlib', 'list']; "
            "import kdlib.__main__ as m; m.main(['list']); m.parser().format_help(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
    start = time.perf_counter()
    helped = cli("--help")
    assert time.perf_counter() - start < 30  # no torch import; the bound only catches a hang
    assert helped.returncode == 0 and "examples:" in helped.stdout and "`" not in helped.stdout
    assert "plan" in helped.stdout and "scorecard" in helped.stdout


def test_list_marks_built_in_and_missing_data(tmp_path, data_dir):
    listed = cli("list", "--data-dir", str(data_dir), env={"KDLIB_OFFLINE": "0"}).stdout
    line = lambda name: next(ln for ln in listed.splitlines() if ln.startswith(name + " "))
    assert "built-in" in line("cifar10-resnet18") and "built-in" in line("fsdd-vggish")
    assert "downloads itself (needs internet): train_32x32.mat, test_32x32.mat" in line("svhn-resnet18")
    assert "missing: imagenet/ (get it from https://image-net.org" in line("imagenet-resnet50-to-resnet18")
    ready = cli("list", "--ready", "--data-dir", str(data_dir), "cifar10-resnet18", "imagenet-resnet50-to-resnet18",
                "svhn-resnet18", env={"KDLIB_OFFLINE": "0"})
    assert ready.stdout.split() == ["cifar10-resnet18", "svhn-resnet18"]  # svhn downloads itself
    offline = cli("list", "--data-dir", str(data_dir), "svhn-resnet18", env={"KDLIB_OFFLINE": "1"}).stdout
    assert "missing: train_32x32.mat, test_32x32.mat" in offline and "KDLIB_OFFLINE=1" in offline


def test_a_downloaded_archive_counts_as_present(tmp_path):
    from kdlib.data.base import SOURCES
    assert SOURCES["tinyimagenet"].missing(tmp_path) == ["tiny-imagenet-200/"]
    (tmp_path / "tiny-imagenet-200.zip").write_bytes(b"")  # the loader extracts it
    assert SOURCES["tinyimagenet"].missing(tmp_path) == []


def test_every_dataset_is_described_and_readme_agrees_on_downloads():
    for name in setups.names():
        assert setups.get(name, "paper").dataset in SOURCES, name
    readme = (REPO / "data" / "README.md").read_text()
    for name, source in SOURCES.items():
        for f in source.files:
            assert f"`{f.rstrip('/')}" in readme, (name, f)
    downloads = sorted(n for n, s in SOURCES.items() if s.downloads)
    assert downloads == ["svhn", "tinyimagenet", "tinyshakespeare"]
    assert readme.count("(downloaded automatically)") == len(downloads)
    assert data_status("digits", Path("/nonexistent")) == "built-in"


def test_a_mistyped_setup_gets_a_did_you_mean_and_exit_2():
    bad = cli("run", "tinyshakespear-nanogpt")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "did you mean 'tinyshakespeare-nanogpt'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_missing_data_folder_is_reported_never_created(tmp_path):
    missing = tmp_path / "nonexistent"
    bad = cli("run", "svhn-resnet18", "--profile", "smoke", "--data-dir", str(missing), "--out", str(tmp_path / "r"),
              env={"KDLIB_OFFLINE": "0"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert f"data folder {missing} does not exist" in bad.stderr
    assert not missing.exists()


def test_missing_dataset_file_is_one_line(tmp_path):
    (tmp_path / "data").mkdir()
    bad = cli("run", "svhn-resnet18", "--profile", "smoke", "--data-dir", str(tmp_path / "data"),
              "--out", str(tmp_path / "r"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "train_32x32.mat" in bad.stderr and "downloads are disabled" in bad.stderr


def test_report_with_nothing_to_report_exits_2_and_creates_nothing(tmp_path, capsys):
    out, figures = tmp_path / "results", tmp_path / "figures"
    assert main(["report", "cifar10-resnet18", "--profile", "smoke", "--out", str(out), "--figures", str(figures)]) == 2
    assert "nothing to report" in capsys.readouterr().err
    assert not out.exists() and not figures.exists()


def test_plan_counts_models_and_estimates_from_runs_here(tmp_path, capsys):
    setup = setups.get("tinyshakespeare-nanogpt", "paper")
    assert main(["plan", "tinyshakespeare-nanogpt", "--profile", "paper", "--device", "cuda", "--out",
                 str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "teachers: 3 planned, 0 finished" in text and "students: 210 planned" in text
    assert "no per-model time measured on cuda yet" in text
    (tmp_path / "gpu_check.json").write_text(json.dumps(
        {setup.name: {"paper": {"teacher": 120.0, "student": 30.0}}}))
    assert main(["plan", "tinyshakespeare-nanogpt", "--profile", "paper", "--device", "cuda", "--out",
                 str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"estimated: {(3 * 120 + 210 * 30) / 3600:.2f} device-hours left" in text
    assert main(["plan", "tinyshakespeare-nanogpt", "--profile", "paper", "--device", "cpu", "--out",
                 str(tmp_path)]) == 0
    assert "no per-model time measured on cpu yet" in capsys.readouterr().out  # the GPU check's are a GPU's


def test_compile_choices_match_the_device_module():
    from kdlib.engine.device import COMPILE
    run = next(a for a in parser()._subparsers._group_actions[0].choices["run"]._actions if a.dest == "compile")
    assert tuple(run.choices) == COMPILE
