"""The import graph of ``alignkit``: no cycle, and imports run one way (docs/architecture.md).

Every ``import`` statement counts, the lazy ones inside functions included (only ``if
TYPE_CHECKING:`` blocks are skipped): a cycle through a lazy import is still a tangle.
Check: ``python -m pytest -q tests/test_architecture.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "alignkit"

# Lowest first; a module may import modules of its own layer or of lower ones.
LAYERS = (
    (
        "foundation",
        (
            "alignkit._version",
            "alignkit.formatting",
            "alignkit._wiring",
            "alignkit.errors",
            "alignkit.redact",
            "alignkit.paths",
            "alignkit.values",
            "alignkit._lazy",
        ),
    ),
    ("losses/data", ("alignkit.losses", "alignkit.data", "alignkit.models")),
    ("trainers", ("alignkit.trainers", "alignkit._trl_compat", "alignkit.sampling")),
    (
        "launch/hub/eval",
        (
            "alignkit.launch",
            "alignkit.hub",
            "alignkit.eval",
            "alignkit.quickstart",
            "alignkit.quickstart_alignment",
        ),
    ),
    ("commands", ("alignkit.commands", "alignkit.cli", "alignkit")),  # `alignkit`: the public facade
)
# Inside the middle layer: hub reads evaluation results; evaluation and launch import neither hub nor
# each other's runners.
FORBIDDEN = {"alignkit.eval": ("alignkit.hub", "alignkit.launch"), "alignkit.launch": ("alignkit.hub",)}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """``{module: {alignkit modules it imports}}`` over every file of the package."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in files)
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in files:
                    deps.add(sub)
                elif target in files:
                    deps.add(target)
        graph[mod] = deps - {mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or ``None`` (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, iters = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph[nxt])))
    return None


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    if rank is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")
    return rank


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    # package re-export (the method modules themselves are imported by a loop over the package, so the
    # registry decides the exports; each one's own imports are still in the graph)
    assert "alignkit.trainers.registry" in graph["alignkit.trainers"]
    assert "alignkit.trainers.base" in graph["alignkit.trainers.npo"]
    assert "alignkit.eval.tofu" in graph["alignkit.commands.eval"]  # lazy, inside a function
    assert "alignkit.trainers.run_info" in graph["alignkit.hub"]


def test_find_cycle_finds_a_known_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_alignkit_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_run_one_way():
    """commands → launch/hub/eval → trainers → losses/data (and the foundation below all)."""
    wrong = []
    for mod, deps in sorted(import_graph().items()):
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(mod):
                wrong.append(f"{mod} ({LAYERS[layer_of(mod)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
            for low, highs in FORBIDDEN.items():
                if _within(mod, low) and any(_within(dep, h) for h in highs):
                    wrong.append(
                        f"{mod} imports {dep}: forbidden inside the middle layer (docs/architecture.md)"
                    )
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", ["alignkit.trainers.base", "alignkit.trainers.registry"])
def test_trainers_import_neither_hub_nor_the_package_facade(module):
    deps = import_graph()[module]
    assert "alignkit.hub" not in deps and "alignkit" not in deps
