"""The Workspace: resolved once where a command starts, handed down whole; loose values beside it are refused."""
import pickle
from pathlib import Path

import pytest

from kdlib.runs.workspace import Workspace


def test_resolve_fills_the_data_folder_and_refuses_a_bad_compile(monkeypatch, tmp_path):
    monkeypatch.setenv("KDLIB_DATA_DIR", str(tmp_path / "d"))
    ws = Workspace.resolve("results")
    assert ws == Workspace(Path("results"), tmp_path / "d", "cpu", "auto", 1) and not ws.compiled
    assert Workspace.resolve("r", "elsewhere", compile="on").data_dir == Path("elsewhere")
    assert Workspace.resolve("r", compile="on").compiled
    with pytest.raises(ValueError, match="compile='sometimes' is not allowed"):
        Workspace.resolve("r", compile="sometimes")
    assert pickle.loads(pickle.dumps(ws)) == ws  # what spawned workers, slurm and ray receive


def test_of_passes_a_workspace_through_and_refuses_values_beside_it(tmp_path):
    ws = Workspace.resolve(tmp_path, tmp_path)
    assert Workspace.of(ws) is ws
    assert Workspace.of(tmp_path, tmp_path, "cpu", "off") == Workspace(tmp_path, tmp_path, "cpu", "off", 1)
    with pytest.raises(ValueError, match="device='cuda', threads=4 given beside a Workspace"):
        Workspace.of(ws, device="cuda", threads=4)
