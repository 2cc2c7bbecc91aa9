"""The house's shape: kdlib's imports flow one way (no cycle), each folder importing only the floors below it, and
planning needs no torch.

That moving code kept every number is tests/test_golden.py's job (the golden smoke tables).
"""
import ast
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


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


#: kdlib's floors, top to bottom, along the data's path: a module imports only modules of its own floor or below.
FLOORS = (
    ("kdlib.__main__",),
    ("kdlib.study",),
    ("kdlib.notebook",),
    ("kdlib.audit",),
    ("kdlib.report",),
    ("kdlib.analysis",),
    ("kdlib.runs",),
    ("kdlib.setups",),
    ("kdlib.data",),
    ("kdlib.engine",),
    ("kdlib.models",),
    ("kdlib.metrics", "kdlib.store", "kdlib.conditions", "kdlib.paths", "kdlib.paper", "kdlib.outputs", "kdlib"),
)


def floor(module: str) -> int:
    """The floor of ``module`` (0 is the top): the floor of the longest room name it lies in."""
    rooms = [(len(room), i) for i, names in enumerate(FLOORS) for room in names
             if module == room or module.startswith(room + ".")]
    if not rooms:
        raise AssertionError(f"{module} lies on no floor: add its folder to FLOORS")
    return max(rooms)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, t) for m, targets in graph.items() for t in targets if floor(t) < floor(m))


def test_kdlib_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "kdlib.study" in graph["kdlib.__main__"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = import_graph()
    graph["kdlib.store"] = graph["kdlib.store"] | {"kdlib.study"}  # study imports store: now a circle
    assert find_cycle(graph) is not None


def test_each_folder_imports_only_folders_below_it():
    graph = import_graph()
    assert {floor(m) for m in graph} == set(range(len(FLOORS)))  # every floor has rooms; every module a floor
    assert upward_imports(graph) == []


def test_an_upward_import_is_found():
    graph = import_graph()
    graph["kdlib.engine.train"] = graph["kdlib.engine.train"] | {"kdlib.runs.spec"}
    assert upward_imports(graph) == [("kdlib.engine.train", "kdlib.runs.spec")]


def test_planning_a_setup_imports_no_torch():
    import subprocess
    import sys
    code = ("import sys\nfrom kdlib import setups\nfrom kdlib.runs.spec import packs, plan\n"
            "for name in setups.names():\n    packs(plan(setups.get(name, 'paper')), 7)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_every_architecture_is_built_by_the_family_module_its_lazy_entry_names():
    import importlib

    from kdlib.models import ARCHITECTURES
    from kdlib.registry import Registry
    fresh = Registry("architecture")
    for arch in ARCHITECTURES:
        path = ARCHITECTURES.entry(arch)  # the lazy "module:name" path (the builder once something built it)
        module, name = path.split(":") if isinstance(path, str) else (path.__module__, path.__name__)
        assert module.startswith("kdlib.models.") and callable(getattr(importlib.import_module(module), name))
        fresh.register(arch, path)
    assert set(fresh) == set(ARCHITECTURES) == {"gpt", "resnet18", "resnet50", "vgg19", "vgg19_bn", "vit", "vggish",
                                                "ast"}
