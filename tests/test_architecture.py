"""The house's shape: kdlib's imports flow one way (no cycle); lower rooms never import higher ones.

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
            "kdlib.together", "kdlib.autopack", "kdlib.audit", "kdlib.scorecard", "kdlib.views", "kdlib.notebook",
            "kdlib.analysis", "kdlib.tables", "kdlib.latex", "kdlib.figures", "kdlib.paper_beside", "kdlib.pipeline",
            "kdlib.explorer", "kdlib.audit_files", "kdlib.audit_report"}
    for module in low:  # a package stands for its modules too (kdlib.launchers.local)
        upward = {t for t in graph[module] if any(t == h or t.startswith(h + ".") for h in high)}
        assert not upward, (module, upward)


def test_every_architecture_is_built_from_the_family_that_registers_it():
    import importlib

    from kdlib.models import FAMILIES
    from kdlib.models.base import ARCHS
    for family in set(FAMILIES.values()):
        importlib.import_module(f"kdlib.models.{family}")
    assert set(ARCHS) == set(FAMILIES)
    assert all(ARCHS[arch].__module__ == f"kdlib.models.{family}" for arch, family in FAMILIES.items())
