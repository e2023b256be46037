"""The shape ARCHITECTURE.md promises, checked on the source: short functions, strategies chosen
by the registry rather than by comparing names, and one fitted check."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from headstart.strategies import strategy_names

SRC = Path(__file__).resolve().parents[1] / "src" / "headstart"
MODULES = sorted(SRC.rglob("*.py"))
MAX_FUNCTION_LINES = 50


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _functions(tree: ast.Module):
    return (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _string_constants(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {v for element in node.elts for v in _string_constants(element)}
    return set()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_function_is_longer_than_fifty_lines(path):
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines, line {f.lineno})" for f in _functions(_tree(path))
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {', '.join(long)}"


def test_no_code_outside_strategies_compares_a_strategy_name():
    names = set(strategy_names())
    found = []
    for path in MODULES:
        if "strategies" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Compare):
                compared = _string_constants(node.left).union(*(_string_constants(c) for c in node.comparators))
                if compared & names:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, "strategy names compared outside strategies/: " + ", ".join(found)


def test_fitted_state_is_checked_in_one_place():
    """No ``hasattr(obj, "something_")`` probing for fitted attributes: ``Transfer._check_fitted`` does it."""
    found = []
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr"
                    and len(node.args) == 2 and _string_constants(node.args[1])
                    and next(iter(_string_constants(node.args[1]))).endswith("_")):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, "fitted checks outside Transfer._check_fitted: " + ", ".join(found)
