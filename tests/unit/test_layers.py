"""The package layering of docs/architecture.md §2, read from the source: no import cycle
between poserft's modules (function-level imports count too), and the two roles that share the
model, `learner` and `rollout_workers`, never import each other."""

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "poserft"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        name = ".".join(f.relative_to(ROOT.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("poserft"):
                graph[name] |= {t for t in [node.module, *(f"{node.module}.{a.name}" for a in node.names)] if t in mods}
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in mods}
        graph[name].discard(name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(u: str, path: list[str]) -> list[str] | None:
        state[u] = 1
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return path[path.index(v) :] + [u, v] if v in path else [u, v]
            if v not in state and (found := visit(v, [*path, u])):
                return found
        state[u] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [])):
            return found
    return None


def test_no_import_cycle():
    graph = _imports(_modules())
    # a package's __init__ that re-exports its modules is not a cycle with them
    for pkg in list(graph):
        graph[pkg] = {m for m in graph[pkg] if not m.startswith(pkg + ".")}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_learner_and_rollout_workers_do_not_import_each_other():
    graph = _imports(_modules())
    for a, b in (("poserft.learner", "poserft.rollout_workers"), ("poserft.rollout_workers", "poserft.learner")):
        bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.startswith(a) for t in ts if t.startswith(b))
        assert not bad, f"{a} imports {b}: {bad}"


def test_the_checker_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
