"""The package's shape: no module imports, through any chain, a module that imports it back.

The layers themselves are import-linter's contracts (`make lint`); a cycle inside one layer (a package and
its own submodules, two runtime parts) is what they cannot see, and a function-level import counts the same
as one at the top. Imports only for type checking (`if TYPE_CHECKING:`) are not imports at run time and
are left out.
"""

from __future__ import annotations

import sys

import grimp


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in imports[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for module in sorted(imports):
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_no_module_imports_itself_back_through_any_chain() -> None:
    graph = grimp.build_graph("gateway", exclude_type_checking_imports=True)
    assert cycles(graph) == []


def test_the_cycle_finder_sees_a_cycle_made_by_a_function_level_import() -> None:
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")  # e.g. inside a function
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_every_module_of_the_package_is_in_a_layer_and_kept_from_the_simulators() -> None:
    import tomllib
    from pathlib import Path

    import gateway

    root = Path(gateway.__file__).parent
    top = {f"gateway.{p.stem}" for p in root.glob("*.py") if p.stem != "__init__"}
    top |= {f"gateway.{p.parent.name}" for p in root.glob("*/__init__.py")}
    contracts = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    layered = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    apart = next(c for c in contracts if c["type"] == "forbidden")
    kept = set(apart["source_modules"]) | set(apart["forbidden_modules"])
    assert sorted(top - layered - {"gateway.sim"}) == []  # a new module must take its place in the layers
    # and stay away from the simulators (only the demo command may import them)
    assert sorted(m for m in top - kept if m != "gateway.commands") == []
