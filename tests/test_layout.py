"""The shape of the source tree: imports run one way, files and functions stay short enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("memory", "assistant", "serving", "evaluation", "demos")
MAY_IMPORT = {
    "memory": set(),
    "assistant": {"memory"},
    "serving": {"memory", "assistant"},
    "evaluation": {"memory", "assistant", "serving"},
    "demos": {"memory", "assistant", "serving"},
}
"""Our packages each package may import (itself aside): memory ← assistant ← serving ← demos, evaluation beside."""
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _imported_packages(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    wrong = _imported_packages(ast.parse(path.read_text(encoding="utf-8"))) - MAY_IMPORT[package] - {package}
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}; {package}/ may import {MAY_IMPORT[package]}"


def test_no_source_file_is_too_long() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def test_no_function_is_too_long() -> None:
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
