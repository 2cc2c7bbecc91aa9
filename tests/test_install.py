"""Installing kdlib keeps the environment's torch: pyproject.toml states ranges, ships every package and the study
notebooks, and a plain (non-editable) install runs `kdlib study` from any folder."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from setuptools.config.pyprojecttoml import read_configuration

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = read_configuration(REPO / "pyproject.toml", expand=False)  # as the build reads it (validated)
PROJECT = PYPROJECT["project"]
#: Every requirement kdlib states: its dependencies and its extras'
REQUIREMENTS = PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
#: The packages an install must take from the environment as they are
TORCH = ("torch", "torchvision", "torchaudio")


def test_dependencies_are_ranges_and_the_extras_are_named():
    assert [r for r in REQUIREMENTS if "==" in r] == []  # pins live in requirements.txt only
    assert "torch>=2.11" in PROJECT["dependencies"]
    assert set(PROJECT["optional-dependencies"]) == {"notebooks", "launchers", "tracking", "dev"}


def test_the_pinned_set_lies_within_the_ranges():
    """requirements*.txt (the README's reproducible install) pins versions kdlib's own ranges allow."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    pins = {}
    for name in ("requirements.txt", "requirements-launchers.txt"):
        for line in (REPO / name).read_text().splitlines():
            if "==" in line.split("#")[0]:
                pin = Requirement(line.split("#")[0])
                pins[canonicalize_name(pin.name)] = str(pin.specifier).removeprefix("==")
    checked = [(r, pins[canonicalize_name(r.name)]) for r in map(Requirement, REQUIREMENTS)
               if canonicalize_name(r.name) in pins]
    assert len(checked) > 10 and [(str(r), v) for r, v in checked if not r.specifier.contains(v)] == []


def test_every_package_and_the_study_notebooks_ship():
    from setuptools import find_packages
    tool = PYPROJECT["tool"]["setuptools"]
    assert set(tool["packages"]) == set(find_packages(str(REPO), include=["kdlib*"])) | {"kdlib.notebooks"}
    assert tool["package-dir"] == {"kdlib.notebooks": "notebooks"}
    assert tool["package-data"]["kdlib.notebooks"] == ["*.ipynb"]


def test_a_checkout_runs_its_own_notebooks():
    from kdlib import setups
    from kdlib.notebook import sources
    from kdlib.runs.suites import notebook_for
    assert sources.folder() == REPO / "notebooks"
    for name in setups.names():
        assert sources.path(Path(notebook_for(setups.get(name, "paper"))).name).parent == REPO / "notebooks"
    assert sources.path("summary.ipynb") == REPO / "notebooks" / "summary.ipynb"


def test_a_study_without_the_notebook_extra_stops_in_one_line_before_training(tmp_path, capsys, monkeypatch):
    from kdlib.__main__ import main
    monkeypatch.setitem(sys.modules, "papermill", None)  # as if not installed
    code = main(["study", "tinyshakespeare-nanogpt", "--profile", "smoke", "--out", str(tmp_path / "results")])
    assert code == 2 and capsys.readouterr().err.splitlines() == [
        "kdlib study: error: executing the study notebooks needs papermill: pip install 'kdlib[notebooks]'"]
    assert not (tmp_path / "results").exists()


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _torch(python: Path) -> list[str]:
    """Version and location of torch, torchvision and torchaudio as ``python`` finds them."""
    code = ("from importlib.metadata import distribution as d\n"
            f"for name in {TORCH!r}:\n    print(name, d(name).version, d(name).locate_file(''))")
    return _run(python, "-c", code).stdout.splitlines()


@pytest.mark.slow
def test_a_wheel_installs_beside_the_torch_it_finds_and_runs_the_study(tmp_path, data_dir):
    """The wheel, built offline from the files a commit would hold, installed with the notebook extra into a fresh
    virtual environment that sees this machine's packages (the CPU torch among them): pip installs kdlib and
    touches no torch; then, from a folder outside the checkout, the venv's own kdlib reports the pyproject version
    and `kdlib study` runs a smoke setup, its notebook and the summary from the wheel's notebooks, on a kernel of the
    venv's interpreter although the user's `python3` kernel names another one."""
    src = tmp_path / "src"
    listed = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():  # a tracked file deleted in the working tree is not part of it
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src)
    (wheel,) = (tmp_path / "dist").glob("kdlib-*.whl")

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv)
    python = venv / "bin" / "python"
    before = _torch(python)
    install = _run(sys.executable, "-m", "pip", "--python", python, "install", f"{wheel}[notebooks]")
    installed = {name.strip() for line in install.stdout.splitlines()
                 if line.startswith("Installing collected packages:") for name in line.split(":", 1)[1].split(",")}
    assert not installed & set(TORCH), installed
    assert _torch(python) == before

    work = tmp_path / "work"
    kernel = work / "jupyter" / "kernels" / "python3"  # the user's python3 kernel: an interpreter that is not there
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text('{"argv": ["/nonexistent/python3", "-m", "ipykernel_launcher", "-f", '
                                        '"{connection_file}"], "display_name": "Python 3", "language": "python"}')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KDLIB_HOME")}
    env.update(JUPYTER_DATA_DIR=str(work / "jupyter"), KDLIB_CACHE_DIR=str(tmp_path / "cache"),
               # the data files of the packages the venv borrows (nbconvert's templates) lie under their own prefix
               JUPYTER_PATH=str(Path(sysconfig.get_path("data")) / "share" / "jupyter"))
    version, where = _run(python, "-c", "import kdlib; print(kdlib.__version__, kdlib.__file__)", cwd=work,
                          env=env).stdout.split()
    assert version == PROJECT["version"] and venv.resolve() in Path(where).resolve().parents

    study = _run(venv / "bin" / "kdlib", "study", "tinyshakespeare-nanogpt", "--profile", "smoke", "--data-dir",
                 Path(data_dir).resolve(), cwd=work, env=env)
    shipped = Path(where).parent / "notebooks"
    assert f"{shipped / 'language.ipynb'} -> {work / 'results'}" in study.stdout, study.stdout
    for written in ("tinyshakespeare-nanogpt/smoke/language.ipynb", "summary-smoke.ipynb", "summary-smoke.html",
                    "scorecard.md"):
        assert (work / "results" / written).is_file(), written
    assert (work / "figures" / "tinyshakespeare-nanogpt" / "smoke").is_dir()
