"""Every result says what made it (kdlib's version and commit, Python, torch, CUDA, the device, the data files'
checksums, the readings); a collected table summarises it, the report and the scorecard show it, and collect warns
when a table mixes runs of several kdlib versions."""
import hashlib
import json
import platform
import subprocess
from pathlib import Path

import torch

import kdlib
from kdlib import setups
from kdlib.analysis.collect import collect
from kdlib.analysis.scorecard import scorecard
from kdlib.runs import provenance
from kdlib.runs.spec import plan
from kdlib.store import read_result, run_dir, setup_dir

REPO = Path(__file__).resolve().parents[1]
SMOKE = "tinyshakespeare-nanogpt"


def test_a_result_records_what_made_it(smoke_store, data_dir):
    setup = setups.get(SMOKE, "smoke")
    spec = plan(setup)[3]
    made = read_result(smoke_store, spec)["provenance"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert made["kdlib"] == kdlib.__version__ and made["commit"].startswith(head)
    assert (made["python"], made["torch"], made["cuda"], made["device"]) == (
        platform.python_version(), torch.__version__, torch.version.cuda, "cpu")
    text = (Path(data_dir) / "tinyshakespeare.txt").read_bytes()
    assert made["data"] == {"tinyshakespeare.txt": hashlib.sha256(text).hexdigest()}
    assert made["readings"] == spec.tags["readings"] and made["readings"]["gpt-architecture"] == "lecture"


def test_a_folders_checksum_is_of_its_listing(tmp_path):
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "images" / "a" / "1.png").write_bytes(b"xyz")
    first = provenance.data_checksums("imagefolder", tmp_path, {"path": "images"})
    expected = hashlib.sha256(b"a/1.png\t3\n").hexdigest()
    assert first == {"images": f"listing:{expected}"}
    (tmp_path / "images" / "a" / "2.png").write_bytes(b"w")
    assert provenance.data_checksums("imagefolder", tmp_path, {"path": "images"}) != first


def test_collect_summarises_warns_on_mixed_versions_and_report_and_scorecard_show_it(smoke_copy, capsys):
    setup = setups.get(SMOKE, "smoke")
    collect(setup, smoke_copy)
    summary = json.loads((setup_dir(smoke_copy, setup) / provenance.FILE).read_text())
    runs = len(plan(setup))
    assert summary["runs"] == runs and summary["kdlib"] == {kdlib.__version__: runs}
    assert "warning" not in capsys.readouterr().err
    path = run_dir(smoke_copy, plan(setup)[4]) / "result.json"
    record = json.loads(path.read_text())
    record["provenance"]["kdlib"] = "0.9.0"
    path.write_text(json.dumps(record))
    collect(setup, smoke_copy)
    err = capsys.readouterr().err
    assert (f"kdlib collect: warning: {SMOKE}: this table mixes runs of several kdlib versions (kdlib: "
            f"{kdlib.__version__} ({runs - 1} runs), 0.9.0 (1 runs))") in err
    from kdlib.__main__ import main
    assert main(["report", SMOKE, "--profile", "smoke", "--out", str(smoke_copy), "--figures",
                 str(smoke_copy / "figures")]) == 0
    assert f"made by kdlib {kdlib.__version__}/0.9.0 (commit" in capsys.readouterr().out
    card = scorecard([SMOKE], "smoke", smoke_copy)
    assert "What made the runs" in card["markdown"] and f"- {SMOKE}: made by kdlib" in card["markdown"]
