"""The package's shape: no import cycle (function-local imports included, where cycles hide), no module importing
another module's private names, no module much over 300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "landmark_exp"


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(name: str, tree: ast.Module, known: set[str]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in the file, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                found.append((node.module, [a.name for a in node.names]))
            for a in node.names:  # `from landmark_exp.data import images`
                if f"{node.module}.{a.name}" in known:
                    found.append((f"{node.module}.{a.name}", []))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: {m for m, _ in _imports(name, tree, known) if m != name} for name, tree in modules.items()}


def test_the_package_has_no_import_cycle_even_through_function_local_imports():
    graph, cycles = _graph(), []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    known = set(modules)
    private = [f"{name} imports {target}.{n}" for name, tree in modules.items()
               for target, names in _imports(name, tree, known) for n in names
               if n.startswith("_") and not n.startswith("__")]
    assert not private, "\n".join(private)


LONGEST = 310  # "about 300 lines" (issue 29): a module that grows past it is split by concern


def test_no_module_of_the_package_is_much_over_300_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    long = {name: n for name, n in sizes.items() if n > LONGEST}
    assert not long, f"modules over {LONGEST} lines: {long}"
