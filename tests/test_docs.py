"""The code in README.md and docs/*.md: every Python block compiles (top-level
``await`` allowed, as in a notebook or ``python -m asyncio``), and every name it
takes from trioudp exists. The tutorial's programs are examples/ files, which
tests/test_examples.py runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import trioudp
import trioudp.testing

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[str, int, str]]:
    found: list[tuple[str, int, str]] = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            found.append((page.name, line, match.group(1)))
    return found


def test_the_pages_have_code() -> None:
    assert len(blocks()) >= 15


@pytest.mark.parametrize(("page", "line", "code"), blocks(), ids=lambda v: str(v)[:24])
def test_code_block(page: str, line: int, code: str) -> None:
    tree = compile(
        code, f"{page}:{line}", "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = {"trioudp": trioudp}.get(node.value.id)
            if module is not None and node.attr != "testing":
                assert hasattr(module, node.attr), f"{page}:{line}: no trioudp.{node.attr}"
        if isinstance(node, ast.ImportFrom) and node.module in ("trioudp", "trioudp.testing"):
            module = trioudp if node.module == "trioudp" else trioudp.testing
            for alias in node.names:
                assert hasattr(module, alias.name), f"{page}:{line}: no {node.module}.{alias.name}"
