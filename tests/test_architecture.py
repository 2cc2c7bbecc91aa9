"""The house's shape: kdlib's imports flow one way (no cycle), and moving code kept every number.

The golden tables in tests/golden/ were collected on the smoke profile by the code before the issue-11 move
(tests/golden/meta.json says which torch and CPU); the same runs trained by today's code must give the same
tables bit for bit on that torch and CPU, and to float32 rounding elsewhere.
"""
import ast
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kdlib import setups
from kdlib.study import collect, run_setup

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """kdlib module -> the kdlib modules it imports (anywhere in the file, lazy imports included)."""
    files = {_module_name(p): p for p in (REPO / "kdlib").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` imports the submodule pkg.mod when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_kdlib_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "kdlib.study" in graph["kdlib.__main__"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = import_graph()
    graph["kdlib.store"] = graph["kdlib.store"] | {"kdlib.study"}  # study imports store: now a circle
    assert find_cycle(graph) is not None


def test_lower_rooms_never_import_higher_ones():
    graph = import_graph()
    low = ["kdlib.outputs", "kdlib.losses", "kdlib.metrics", "kdlib.conditions", "kdlib.recipe", "kdlib.device",
           "kdlib.store"]
    high = {"kdlib.runs", "kdlib.study", "kdlib.launchers", "kdlib.report", "kdlib.__main__", "kdlib.train",
            "kdlib.together", "kdlib.autopack", "kdlib.audit", "kdlib.scorecard", "kdlib.views", "kdlib.notebook"}
    for module in low:  # a package stands for its modules too (kdlib.launchers.local)
        upward = {t for t in graph[module] if any(t == h or t.startswith(h + ".") for h in high)}
        assert not upward, (module, upward)


GOLDEN_SETUPS = sorted({p.name.split(".")[0] for p in GOLDEN.glob("*.runs.csv")})


@pytest.fixture(scope="module")
def smoke_tables(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("golden")
    os.environ.setdefault("KDLIB_CACHE_DIR", str(out / "cache"))
    tables = {}
    for name in GOLDEN_SETUPS:
        setup = setups.get(name, "smoke")
        run_setup(setup, out, data_dir, progress=False)
        tables[name] = collect(setup, out, write=False)
    return tables


@pytest.mark.parametrize("name", GOLDEN_SETUPS)
def test_collected_smoke_tables_equal_the_tables_written_before_the_move(name, smoke_tables):
    meta = json.loads((GOLDEN / "meta.json").read_text())
    exact = meta["torch"] == torch.__version__ and meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    for got, kind in zip(smoke_tables[name], ("runs", "teachers")):
        want = pd.read_csv(GOLDEN / f"{name}.{kind}.csv")
        got = pd.read_csv(pd.io.common.StringIO(got.drop(columns="train_seconds").to_csv(index=False,
                                                                                        float_format="%.17g")))
        assert list(got.columns) == list(want.columns)
        if exact:
            pd.testing.assert_frame_equal(got, want, check_exact=True)
        else:  # another CPU's kernels round float32 differently: same numbers to float32 rounding
            pd.testing.assert_frame_equal(got, want, rtol=1e-4, atol=1e-6)


def test_golden_tables_cover_every_path():
    assert {"tinyshakespeare-nanogpt", "cifar10-resnet18", "fsdd-vggish", "tinyshakespeare-width-scaling",
            "tinyshakespeare-nanogpt-featuremap-block4", "tinyshakespeare-adversarial"} <= set(GOLDEN_SETUPS)
    assert not np.isnan(pd.read_csv(GOLDEN / "tinyshakespeare-nanogpt.runs.csv")["activation_distance"]).any()
