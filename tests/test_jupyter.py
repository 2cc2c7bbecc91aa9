"""Notebooks run where JupyterLab opens them: a real ``jupyter server`` on 127.0.0.1 in a copy of the project starts
each notebook's kernel in the notebook's own folder (as JupyterLab does, through the REST API's sessions), and the
notebook's cells run there through that kernel with no error, writing into the project's folders."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

from conftest import copy_store
from kdlib import paths, setups
from kdlib.analysis.collect import collect

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
websocket = pytest.importorskip("websocket")


def test_the_project_root_is_the_checkout_kdlib_is_installed_from(monkeypatch, tmp_path):
    monkeypatch.delenv("KDLIB_HOME", raising=False)
    monkeypatch.chdir(tmp_path)  # a kernel started anywhere
    assert paths.project_root() == REPO and paths.project_path("results", "out") == REPO / "results"
    assert paths.project_path(None, "figures") == REPO / "figures"
    assert paths.project_path(tmp_path / "x", "out") == tmp_path / "x"
    assert paths.project_path("../moved/results", "out") == tmp_path.parent.resolve() / "moved" / "results"
    assert paths.project_path("./results", "figures") == tmp_path.resolve() / "results"  # an executed copy's own
    monkeypatch.setenv("KDLIB_HOME", str(tmp_path))
    monkeypatch.setenv("KDLIB_DATA_DIR", "../shared/data")  # the environment's: under the project root, as ever
    assert paths.data_path() == tmp_path / "../shared/data"


class Server:
    """``jupyter server`` on a free local port, rooted at ``root``, with a token."""

    def __init__(self, root: Path, env: dict):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = uuid.uuid4().hex
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
             "--ServerApp.allow_root=True"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"))
        deadline = time.time() + 60
        while True:
            try:
                self.request("GET", "/api/status")
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError((root / "server.log").read_text()[-2000:])
                time.sleep(0.3)

    def request(self, method: str, path: str, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
        return json.loads(text) if text else None

    def session(self, notebook: str) -> "Kernel":
        """A session for ``notebook`` (a path under the root): the server picks the kernel's folder."""
        s = self.request("POST", "/api/sessions", {"path": notebook, "type": "notebook", "name": Path(notebook).name,
                                                    "kernel": {"name": "python3"}})
        return Kernel(f"ws://127.0.0.1:{self.port}/api/kernels/{s['kernel']['id']}/channels?token={self.token}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Kernel:
    """Executes code through the server's kernel websocket (the channel JupyterLab's cells run through). Every wait
    has a deadline: the server pings the socket every 30 s, so a reply that never comes would otherwise block a
    plain ``recv`` for ever (a CI run hung so for 85 minutes)."""

    #: Seconds one ``recv`` waits before the deadline is looked at again (shorter than the server's 30 s pings)
    POLL = 5.0
    #: Seconds a cell's end waits for IOPub's idle status once the shell's reply is in
    GRACE = 10.0

    def __init__(self, url: str, ready_seconds: float = 120):
        self.ws = websocket.create_connection(url, timeout=self.POLL)
        self.session = uuid.uuid4().hex
        self._wait_ready(ready_seconds)

    def _send(self, msg_type: str, content: dict) -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": self.session, "msg_type": msg_type,
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "content": content}))
        return msg_id

    def _next(self, msg_id: str, until: float) -> dict | None:
        """The next message answering ``msg_id`` (either channel), or None at ``until`` (``time.monotonic``)."""
        while time.monotonic() < until:
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg
        return None

    def _wait_ready(self, seconds: float) -> None:
        """Ask for the kernel's info until an IOPub message for it arrives, as JupyterLab does before it runs a
        cell: a cell sent earlier may lose its output to an IOPub channel not yet subscribed."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg_id, until = self._send("kernel_info_request", {}), min(deadline, time.monotonic() + 2)
            while (msg := self._next(msg_id, until)) is not None:
                if msg["channel"] == "iopub":
                    return
        raise AssertionError(f"the kernel did not answer on IOPub within {seconds:g} s")

    def execute(self, code: str, seconds: float = 600) -> list[dict]:
        """Run ``code``; its outputs once the kernel is idle again. The shell's reply also ends the cell,
        :attr:`GRACE` seconds after it arrives, should IOPub's idle status be lost; its error, if any, is then an
        output. Fails, naming the cell, after ``seconds``."""
        msg_id = self._send("execute_request", {"code": code, "silent": False, "store_history": True,
                                                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        outputs, replied, until = [], False, time.monotonic() + seconds
        while (msg := self._next(msg_id, until)) is not None:
            kind = msg["header"]["msg_type"]
            if msg["channel"] == "shell" and kind == "execute_reply":
                replied, until = True, min(until, time.monotonic() + self.GRACE)
                if msg["content"]["status"] == "error" and not any(o["type"] == "error" for o in outputs):
                    outputs.append({"type": "error", **msg["content"]})
            elif msg["channel"] != "iopub":
                continue
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return outputs
            elif kind in ("stream", "error", "execute_result", "display_data"):
                outputs.append({"type": kind, **msg["content"]})
        if replied:
            return outputs
        raise AssertionError(f"no end of the cell within {seconds:g} s (outputs so far: {outputs!r:.1000}): "
                             f"{code[:200]!r}")

    def run_notebook(self, path: Path, injected: str = "") -> list[dict]:
        """Every code cell of ``path``, ``injected`` right after its parameters cell (as papermill injects)."""
        outputs = []
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            outputs += self.execute(cell.source)
            if "parameters" in cell.metadata.get("tags", []) and injected:
                outputs += self.execute(injected)
        return outputs


def _errors(outputs: list[dict]) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" if o["type"] == "error" else o.get("text", "")[-500:]
            for o in outputs if o["type"] == "error" or (o["type"] == "stream" and "Traceback" in o.get("text", ""))]


@pytest.fixture(scope="module")
def served(tmp_path_factory, smoke_store, data_dir):
    """A copy of the project (no results of its own but the session's smoke runs) served by ``jupyter server``."""
    root = tmp_path_factory.mktemp("project") / "project"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(".git", "results", "figures", "*.egg-info",
                                                              "__pycache__", ".hypothesis", ".pytest_cache"))
    copy_store(smoke_store, root / "results")
    collect(setups.get("tinyshakespeare-nanogpt", "smoke"), root / "results")  # what the summary finds
    env = {**os.environ, "KDLIB_HOME": str(root), "KDLIB_DATA_DIR": str(Path(data_dir).resolve()),
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    server = Server(root, env)
    yield root, server
    server.stop()


SMOKE = 'profile = "smoke"\nsetup = "tinyshakespeare-nanogpt"'


def test_a_study_notebook_runs_in_its_own_folder_and_writes_the_projects_folders(served):
    root, server = served
    kernel = server.session("notebooks/language.ipynb")
    where = kernel.execute("import os; print(os.getcwd())")
    assert where[0]["text"].strip() == str(root / "notebooks")  # the kernel starts where JupyterLab starts it
    outputs = kernel.run_notebook(root / "notebooks" / "language.ipynb", SMOKE)
    assert not _errors(outputs), _errors(outputs)
    assert (root / "results" / "tinyshakespeare-nanogpt" / "smoke" / "runs.csv").exists()
    assert (root / "figures" / "tinyshakespeare-nanogpt" / "smoke" / "means_teacher0.csv").exists()
    assert not (root / "notebooks" / "results").exists() and not (root / "notebooks" / "figures").exists()


def test_an_executed_copy_under_results_runs_there_too(served):
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    root, server = served
    copy = root / "results" / "tinyshakespeare-nanogpt" / "smoke" / "language.ipynb"
    nb = parameterize_notebook(load_notebook_node(str(root / "notebooks" / "language.ipynb")),
                               {"setup": "tinyshakespeare-nanogpt", "profile": "smoke", "out": "results",
                                "figures": "figures"})  # the cell papermill injects into run_all.sh's copies
    nbformat.write(nb, copy)
    kernel = server.session(str(copy.relative_to(root)))
    assert kernel.execute("import os; print(os.getcwd())")[0]["text"].strip() == str(copy.parent)
    outputs = kernel.run_notebook(copy)  # its injected parameters say out = "results": the project's
    assert not _errors(outputs), _errors(outputs)
    assert not (copy.parent / "results").exists() and not (copy.parent / "figures").exists()


def test_the_summary_notebook_runs_in_its_own_folder(served):
    root, server = served
    kernel = server.session("notebooks/summary.ipynb")
    outputs = kernel.run_notebook(root / "notebooks" / "summary.ipynb", 'profile = "smoke"')
    assert not _errors(outputs), _errors(outputs)
    text = " ".join(o.get("text", "") + json.dumps(o.get("data", {})) for o in outputs)
    assert "tinyshakespeare-nanogpt" in text and "claims reproduced" in text


def test_a_cell_that_never_ends_fails_naming_it_instead_of_hanging(served):
    """The client's deadline holds although the server keeps the socket alive with pings."""
    _, server = served
    kernel = server.session("notebooks/summary.ipynb")
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"no end of the cell within 2 s .*'import time; time.sleep\(60\)'"):
        kernel.execute("import time; time.sleep(60)", seconds=2)
    assert time.monotonic() - started < 30


class _Socket:
    """A kernel websocket that delivers ``messages`` (each answering the last request sent), then only times out."""

    def __init__(self, messages):
        self.messages, self.sent = list(messages), []

    def send(self, text):
        self.sent.append(json.loads(text))

    def recv(self):
        if not self.messages:
            time.sleep(0.01)
            raise websocket.WebSocketTimeoutException("no message")
        return json.dumps({**self.messages.pop(0), "parent_header": {"msg_id": self.sent[-1]["header"]["msg_id"]}})


def test_the_shells_reply_ends_a_cell_whose_idle_status_is_lost(monkeypatch):
    stream = {"channel": "iopub", "header": {"msg_type": "stream"}, "content": {"name": "stdout", "text": "hi"}}
    reply = {"channel": "shell", "header": {"msg_type": "execute_reply"},
             "content": {"status": "error", "ename": "ValueError", "evalue": "bad", "traceback": []}}
    monkeypatch.setattr(Kernel, "GRACE", 0.2)
    kernel = Kernel.__new__(Kernel)  # no server: the socket above
    kernel.session, kernel.ws = "s", _Socket([stream, reply])
    outputs = kernel.execute("print('hi'); raise ValueError('bad')", seconds=60)
    assert [o["type"] for o in outputs] == ["stream", "error"] and _errors(outputs) == ["ValueError: bad"]
    kernel.ws = _Socket([])
    with pytest.raises(AssertionError, match="no end of the cell within 0.3 s"):
        kernel.execute("1", seconds=0.3)
