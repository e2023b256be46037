"""The shape of the code: which modules import which, read from the source with ``ast``.

``import_graph`` and ``find_cycle`` work on any package under ``src/``: the graph's nodes are
modules (a package is its ``__init__``), its edges the package-internal imports. An import a
parent package makes of its own sub-modules is an edge like any other; the implicit import
of a parent by ``import pkg.sub`` is not, so ``pkg/__init__`` importing ``pkg.sub`` is no
cycle unless ``pkg.sub`` imports ``pkg`` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(package: str, src: Path = SRC) -> dict[str, Path]:
    """Every module of ``package`` (dotted name -> file)."""
    root = src / package.replace(".", "/")
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST, top_level_only: bool):
    """Import statements that run (not under ``if TYPE_CHECKING:``); with ``top_level_only``,
    only those that run on import (not inside a function)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            stack.append(child)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str], top_level_only: bool = False) -> set[str]:
    """The modules of ``known`` that ``module`` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    targets: set[str] = set()
    for node in _import_nodes(tree, top_level_only):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        source = _absolute(node, module, path.name == "__init__.py")
        submodules = {f"{source}.{alias.name}" for alias in node.names} & known
        targets.update(submodules)
        if len(submodules) < len(node.names):  # a name from the module itself
            targets.add(source)
    return {target for target in targets if target in known and target != module}


def import_graph(package: str, src: Path = SRC, top_level_only: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports."""
    files = module_files(package, src)
    known = set(files)
    return {module: imports_of(module, path, known, top_level_only) for module, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node], _ = 2, path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


# -- the graph helpers themselves ------------------------------------------------------------
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_graph_sees_relative_absolute_and_lazy_imports_and_finds_a_cycle(tmp_path):
    src = _package(tmp_path, {
        "pkg/__init__.py": "from . import a\n",
        "pkg/a.py": "from .sub import b\nimport os\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n"
                        "def later():\n    import pkg.a\n",
    })
    graph = import_graph("pkg", src)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub.b"}, "pkg.sub": set(), "pkg.sub.b": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    assert find_cycle(import_graph("pkg", src, top_level_only=True)) is None


# -- the command line --------------------------------------------------------------------------
def test_the_cli_package_has_no_import_cycle():
    graph = import_graph("headstart.cli")
    assert {"headstart.cli.app", "headstart.cli.options", "headstart.cli.output"} <= set(graph)
    assert find_cycle(graph) is None


def test_cli_command_modules_import_only_the_shared_cli_modules():
    shared = {"headstart.cli.app", "headstart.cli.options", "headstart.cli.output", "headstart.cli.launch"}
    graph = import_graph("headstart.cli")
    for module, targets in graph.items():
        if module != "headstart.cli" and module not in shared:
            assert targets <= shared, f"{module} imports {targets - shared}"


def test_the_library_never_imports_the_cli():
    graph = import_graph("headstart")
    users = {module for module, targets in graph.items() if any(t.startswith("headstart.cli") for t in targets)
             and not module.startswith("headstart.cli") and module != "headstart.__main__"}
    assert not users


@pytest.mark.parametrize("top_level_only", [True, False], ids=["on-import", "with-lazy-imports"])
def test_headstart_has_no_import_cycle(top_level_only):
    assert find_cycle(import_graph("headstart", top_level_only=top_level_only)) is None


# -- the layers of ARCHITECTURE.md ---------------------------------------------------------------
LAYERS = [  # top first: a module may import its own layer and those below, never one above
    {"cli", "__main__"},
    {"autopilot"},
    {"workflows", "tuning", "comparison", "report", "tracking", "demo", "export", "serve", "data_audit",
     "pretraining"},
    {"transfer", "ensemble", "run_backbones"},
    {"strategies", "adaptation"},
    {"training", "allocator", "features", "feature_cache", "inference", "heads", "ranking", "transferability",
     "peak_memory"},
    {"data", "backbones"},
    {"config", "registry", "lazy", "runs", "integrity", "runtime", "imaging", "devices", "distributed", "errors", "evaluation", "contract",
     "_version"},
]


def _layer(module: str) -> int:
    part = module.split(".")[1]
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def test_every_module_belongs_to_a_layer_and_imports_only_its_own_or_lower_layers():
    graph = import_graph("headstart")
    upward = [f"{module} -> {target}" for module, targets in graph.items() if module != "headstart"
              for target in targets if target != "headstart" and _layer(target) < _layer(module)]
    assert not upward, "imports against the layers of ARCHITECTURE.md: " + ", ".join(sorted(upward))


def test_library_modules_never_import_the_package_root():
    graph = import_graph("headstart")
    assert not [module for module, targets in graph.items() if "headstart" in targets and module != "headstart.__main__"]
