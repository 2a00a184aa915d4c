"""The package's layering, read from the source with :mod:`ast` (nothing is imported).

Layers, bottom to top: the base (``errors``, ``concurrency``, the version) 0,
``index`` 1, ``storage`` 2, ``proxy`` and ``private`` 3 (siblings, apart), ``bulk`` 4,
``web`` 5, ``tap`` 6. See ``docs/architecture.rst``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Collection, Mapping

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "pypicache"
MAX_LINES = 400

# Module-name prefix -> (layer, rank). A module may import its own layer or a
# strictly lower rank. proxy and private share rank 3 as separate layers, so they
# cannot import each other; bulk (4) may import proxy, private cannot import bulk.
# A new top-level module or sub-package must be added here deliberately.
LAYERS: dict[str, tuple[str, int]] = {
    "pypicache": ("base", 0),
    "pypicache.errors": ("base", 0),
    "pypicache.concurrency": ("base", 0),
    "pypicache.index": ("index", 1),
    "pypicache.storage": ("storage", 2),
    "pypicache.proxy": ("proxy", 3),
    "pypicache.private": ("private", 3),
    "pypicache.bulk": ("bulk", 4),
    "pypicache.web": ("web", 5),
    "pypicache.tap": ("tap", 6),
}

Edge = tuple[str, str]


def read_package(directory: Path = PACKAGE_DIR) -> tuple[dict[str, str], set[str]]:
    """Every module's source by dotted name, and the names that are packages."""
    sources: dict[str, str] = {}
    packages: set[str] = set()
    for path in sorted(directory.rglob("*.py")):
        parts = list(path.relative_to(directory.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
            packages.add(".".join(parts))
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources, packages


def layer_of(module: str) -> tuple[str, int] | None:
    """The layer of a module by its longest known name prefix, or ``None``.

    The root package matches only itself: ``pypicache.new`` has no layer.
    """
    if module == "pypicache":
        return LAYERS[module]
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    return None


def _base_of(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module named by ``from <base> import ...`` (relative or not)."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def import_edges(
    sources: Mapping[str, str], packages: Collection[str] = ()
) -> list[Edge]:
    """Every ``(module, imported module)`` inside pypicache, at any depth of the code.

    ``from pkg import name`` points at ``pkg.name`` when that is a module, else at
    ``pkg``. Imports in functions and ``if TYPE_CHECKING:`` blocks count too.
    """
    edges: set[Edge] = set()
    for module, source in sources.items():
        for node in ast.walk(ast.parse(source, filename=module)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _base_of(module, module in packages, node)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in sources else base)
            for target in targets:
                if target.split(".")[0] == "pypicache" and target != module:
                    edges.add((module, target))
    return sorted(edges)


def layer_violations(edges: Collection[Edge]) -> list[Edge]:
    """The imports that leave their own layer for one of the same or a higher rank."""
    bad = []
    for module, target in edges:
        mine, theirs = layer_of(module), layer_of(target)
        if mine is None or theirs is None:
            bad.append((module, target))
        elif mine[0] != theirs[0] and theirs[1] >= mine[1]:
            bad.append((module, target))
    return sorted(bad)


def find_cycles(edges: Collection[Edge]) -> list[list[str]]:
    """One cycle path (``[a, b, ..., a]``) per back edge found by a depth-first search."""
    graph: dict[str, list[str]] = {}
    for module, target in edges:
        graph.setdefault(module, []).append(target)
        graph.setdefault(target, [])
    state: dict[str, str] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def _listing(edges: Collection[Edge]) -> str:
    return "\n".join(f"  {module} -> {target}" for module, target in edges)


def test_imports_point_down() -> None:
    """No module imports from a layer above its own, nor from its same-rank sibling."""
    sources, packages = read_package()
    bad = layer_violations(import_edges(sources, packages))
    assert not bad, "imports against the layering:\n" + _listing(bad)


def test_no_import_cycles() -> None:
    """No import cycle exists among pypicache modules, inside a layer or across."""
    sources, packages = read_package()
    cycles = find_cycles(import_edges(sources, packages))
    assert not cycles, "import cycles:\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in cycles
    )


def test_every_module_has_a_layer() -> None:
    """Every module under pypicache/ belongs to a layer listed in LAYERS."""
    sources, _ = read_package()
    unknown = [module for module in sources if layer_of(module) is None]
    assert not unknown, "modules outside every layer (add them to LAYERS):\n" + (
        "\n".join(f"  {module}" for module in unknown)
    )


def test_modules_are_small() -> None:
    """No module under pypicache/ is longer than MAX_LINES lines."""
    sources, _ = read_package()
    long = {m: len(s.splitlines()) for m, s in sources.items()}
    long = {m: n for m, n in long.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(
        f"  {module}: {lines} lines" for module, lines in sorted(long.items())
    )


def test_checker_catches_violations() -> None:
    """The checker reports upward, sibling and relative imports, and cycles."""
    sources = {
        "pypicache.index.names": "from pypicache.web.app import X\n",
        "pypicache.web.app": "def f():\n    from ..private import uploads\n",
        "pypicache.private.uploads": "import pypicache.proxy.mirror\n",
        "pypicache.proxy.mirror": "from ..storage.records import StoredFile\n",
        "pypicache.storage.records": "from pypicache.index import names\n",
    }
    edges = import_edges(sources)
    assert layer_of("pypicache.metrics") is None
    assert layer_of("pypicache.web.routes.admin") == ("web", 5)
    assert ("pypicache.web.app", "pypicache.private.uploads") in edges
    assert ("pypicache.proxy.mirror", "pypicache.storage.records") in edges
    assert layer_violations(edges) == [
        ("pypicache.index.names", "pypicache.web.app"),
        ("pypicache.private.uploads", "pypicache.proxy.mirror"),
    ]
    assert find_cycles(edges) == [
        [
            "pypicache.index.names",
            "pypicache.web.app",
            "pypicache.private.uploads",
            "pypicache.proxy.mirror",
            "pypicache.storage.records",
            "pypicache.index.names",
        ]
    ]
