"""JupyterLab in a real browser: Debian's Chromium, driven by selenium through Debian's chromedriver (nothing
downloads a browser), against ``python -m kdlib lab`` on a free local port with a token, in a git clone of the
project's notebooks. What a reader meets: a smoke study's executed summary, moved to another folder, opens with the
explorer as widgets; it re-runs there with no edit and the explorer redraws; Run All and save in ``notebooks/``
leave ``git status`` clean; a page reload brings the explorer back from the live kernel; the server logs no
traceback. Screenshots go to ``$KDLIB_SCREENSHOTS`` (default: the test's temporary folder).

Without Chromium, chromedriver or selenium the test skips; with ``CI`` set (``.ci/run`` installs them) that is a
failure."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import copy_store

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SETUPS = ("tinyshakespeare-nanogpt", "cifar10-resnet18")  # two setups: the explorer has a setup to switch to

#: Wait until JupyterLab's current document is ``arguments[0]``, loaded, its kernel session ready.
READY = """const done = arguments[arguments.length - 1], path = arguments[0];
(async () => { for (let i = 0; i < 1200; i++) {
  const app = window.jupyterapp, p = app && app.shell.currentWidget;
  if (p && p.context && p.sessionContext && p.context.path === path) {
    await p.context.ready; await p.sessionContext.ready; await p.revealed; done(true); return; }
  await new Promise(r => setTimeout(r, 100)); } done(false); })();"""
#: Run every cell of the current notebook; the error outputs and the cells that did not run.
RUN_ALL = """const done = arguments[arguments.length - 1], app = window.jupyterapp, p = app.shell.currentWidget;
app.commands.execute('notebook:run-all-cells').then(async () => {
  await new Promise(r => setTimeout(r, 500)); const problems = [], cells = p.content.model.cells;
  for (let i = 0; i < cells.length; i++) { const c = cells.get(i); if (c.type !== 'code') continue;
    for (const o of c.outputs.toJSON()) if (o.output_type === 'error') problems.push(o.ename + ': ' + o.evalue);
    if (c.executionCount === null) problems.push('cell ' + i + ' did not run'); }
  done(problems); }, e => done(['run all failed: ' + e]));"""
SAVE = """const done = arguments[arguments.length - 1];
window.jupyterapp.commands.execute('docmanager:save').then(() => done(true), e => done(String(e)));"""
TO_LAST_CELL = """const done = arguments[arguments.length - 1], nb = window.jupyterapp.shell.currentWidget.content;
nb.activeCellIndex = nb.widgets.length - 1; nb.scrollToItem(nb.widgets.length - 1, 'start').then(() => done(true));"""
EXPLORER_OUTPUT = "const o = document.querySelector('.widget-vbox .widget-output'); return o ? o.innerHTML : null;"


def _need(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI must run the browser test (.ci/run installs it)")
    pytest.skip(f"{what} is missing (Debian: apt-get install chromium chromium-driver; pip install selenium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")


@pytest.fixture(scope="module")
def project(tmp_path_factory, smoke_store, data_dir):
    """A git clone of the project's notebooks (KDLIB_HOME), the smoke study of :data:`SETUPS` run by ``kdlib study``
    elsewhere and then moved into it (``moved/results``, outside git), and the same results as its own
    ``results/`` for ``notebooks/summary.ipynb``; Jupyter's data, settings and runtime folders of its own."""
    base = tmp_path_factory.mktemp("browser")
    work = base / "project"
    (work / "notebooks").mkdir(parents=True)
    for path in sorted((REPO / "notebooks").glob("*.ipynb")) + [REPO / ".gitignore"]:
        shutil.copy(path, work / path.relative_to(REPO))
    env = {**os.environ, "KDLIB_HOME": str(work), "KDLIB_DATA_DIR": str(Path(data_dir).resolve()),
           "JUPYTER_DATA_DIR": str(base / "jupyter-data"), "JUPYTER_RUNTIME_DIR": str(base / "jupyter-runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(base / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "lab-workspaces"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    notices = base / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notices.parent.mkdir(parents=True)
    notices.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news pop-up over the screenshots
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "notebooks"]):
        subprocess.run(["git", *args], cwd=work, env=env, check=True)
    (work / ".git" / "info" / "exclude").write_text("/moved/\n")
    first = base / "elsewhere"
    copy_store(smoke_store, first / "results")
    started = time.time()
    subprocess.run([sys.executable, "-m", "kdlib", "study", *SETUPS, "--profile", "smoke", "--launcher", "serial",
                    "--out", str(first / "results"), "--figures", str(first / "figures")],
                   cwd=base, env=env, check=True, stdout=subprocess.DEVNULL)
    print(f"kdlib study: {time.time() - started:.0f} s")
    (work / "moved").mkdir()
    shutil.move(first / "results", work / "moved" / "results")
    shutil.copytree(work / "moved" / "results", work / "results")
    return work, env


@pytest.fixture(scope="module")
def lab(project):
    """``python -m kdlib lab`` (the README's command) serving the project, and its log."""
    work, env = project
    port, token = _free_port(), uuid.uuid4().hex
    log = work.parent / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "kdlib", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))

    def up():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5)
            return True
        except OSError:
            assert server.poll() is None, log.read_text()[-3000:]
            return False

    _wait(up, 90, "jupyter lab to answer")
    yield f"http://127.0.0.1:{port}", token, log
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        _need("Debian's chromium and chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need("selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(300)
    yield driver
    driver.quit()


def _dropdown(driver, label: str):
    """The explorer's dropdown labelled ``label``, as selenium's Select."""
    from selenium.webdriver.support.ui import Select
    for box in driver.find_elements("css selector", ".widget-vbox .widget-dropdown"):
        if box.find_element("tag name", "label").text.strip() == label:
            return Select(box.find_element("tag name", "select"))
    raise AssertionError(f"no {label!r} dropdown in the explorer")


def _select(driver, label: str, text: str) -> None:
    """Choose ``text`` in the explorer's dropdown labelled ``label``, as a reader does."""
    _dropdown(driver, label).select_by_visible_text(text)


def _open(driver, url: str, token: str, path: str) -> None:
    driver.get(f"{url}/lab/tree/{path}?reset&token={token}")
    assert driver.execute_async_script(READY, path), f"JupyterLab did not open {path}"


def _shot(driver, folder: Path, name: str, element=None) -> Path:
    if element is not None:
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)
        time.sleep(0.5)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def _heading(driver, text: str):
    found = [h for h in driver.find_elements("css selector", ".jp-Notebook h1, .jp-Notebook h2, .jp-Notebook h3, "
                                                              ".jp-Notebook h4") if text in h.text]
    assert found, f"no heading with {text!r}"
    return found[0]


def test_a_reader_browses_the_study_in_jupyterlab(project, lab, browser, tmp_path):
    work, _ = project
    url, token, log = lab
    shots = Path(os.environ.get("KDLIB_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    started, taken = time.time(), []

    # 1. the executed summary, moved whole to another folder, opens with the explorer as widgets (nothing run)
    summary = "moved/results/summary-smoke.ipynb"
    _open(browser, url, token, summary)
    explorer = _wait(lambda: browser.find_elements("css selector", ".jp-OutputArea .widget-vbox"), 30,
                     "the explorer's widgets")[0]
    page = browser.find_element("css selector", ".jp-Notebook").text
    assert "VBox(" not in page and "Error displaying widget" not in page and "model not found" not in page
    assert "<img" in browser.execute_script(EXPLORER_OUTPUT) or "<table" in browser.execute_script(EXPLORER_OUTPUT)
    browser.execute_async_script(TO_LAST_CELL)
    taken.append(_shot(browser, shots, "1-executed-summary-explorer"))
    taken.append(_shot(browser, shots, "2-scorecard", _heading(browser, "Reproduction scorecard")))
    taken.append(_shot(browser, shots, "3-paper-beside-ours", _heading(browser, "The paper beside ours")))

    # 2. it re-runs where it now lies, with no edit, and the explorer redraws as its dropdowns change
    assert browser.execute_async_script(RUN_ALL) == []
    before = browser.execute_script(EXPLORER_OUTPUT)
    _select(browser, "view", "agreement deltas (normalised)")
    chart = _wait(lambda: (lambda h: h if h and h != before and "<img" in h else None)(
        browser.execute_script(EXPLORER_OUTPUT)), 30, "the normalised chart")
    _select(browser, "setup", next(s for s in SETUPS if s != _dropdown(browser, "setup").first_selected_option.text))
    _wait(lambda: (lambda h: h and h != chart and "<img" in h)(browser.execute_script(EXPLORER_OUTPUT)), 30,
          "the other setup's chart")
    explorer = browser.find_element("css selector", ".jp-OutputArea .widget-vbox")
    taken.append(_shot(browser, shots, "4-explorer-redrawn", explorer))

    # 3. Run All and save in notebooks/ leave the checkout clean
    _open(browser, url, token, "notebooks/summary.ipynb")
    assert browser.execute_async_script(RUN_ALL) == []
    _select(browser, "view", "agreement deltas (normalised)")
    _wait(lambda: "<img" in (browser.execute_script(EXPLORER_OUTPUT) or ""), 30, "the chart")
    assert browser.execute_async_script(SAVE) is True
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=work,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", status
    taken.append(_shot(browser, shots, "5-notebooks-summary-saved"))

    # 4. a reload brings the explorer back from the live kernel, as it was left
    browser.refresh()
    assert browser.execute_async_script(READY, "notebooks/summary.ipynb")
    _wait(lambda: browser.find_elements("css selector", ".jp-OutputArea .widget-vbox"), 30, "the explorer again")
    _wait(lambda: "<img" in (browser.execute_script(EXPLORER_OUTPUT) or ""), 30, "the chart again")
    assert not browser.find_elements("css selector", ".jupyter-widgets-disconnected"), "widgets not linked"
    browser.execute_async_script(TO_LAST_CELL)
    taken.append(_shot(browser, shots, "6-after-reload"))

    # 5. the summary's HTML export reads with no server: the explorer's view as drawn
    browser.get((work / "moved" / "results" / "summary-smoke.html").as_uri())
    fallback = _wait(lambda: [p for p in browser.find_elements("tag name", "p")
                              if p.text.startswith("The explorer as drawn")], 30, "the explorer's static view")
    taken.append(_shot(browser, shots, "7-summary-html", fallback[0]))

    server_log = log.read_text()
    for noise in ("Traceback", "is not trusted", "WARNING"):
        assert noise not in server_log, server_log[-3000:]
    print(f"browser test: {time.time() - started:.0f} s; screenshots: {', '.join(str(p) for p in taken)}")
