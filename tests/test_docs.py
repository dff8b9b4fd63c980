"""The code in README.md and docs/*.md: every Python block compiles (top-level
``await`` allowed, as in a notebook or ``python -m asyncio``), every name it
takes from trioudp exists, and the complete programs run: the migration
guide's echo servers each echo. The tutorial's programs are examples/ files,
which tests/test_examples.py runs."""

from __future__ import annotations

import ast
import importlib.util
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import trioudp
import trioudp.testing
from trioudp._frame import decode_frame_untrusted, encode_message

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


#: trioudp's modules that code blocks import by name (trioudp.prometheus.register).
SUBMODULES = ("testing", "prometheus")


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
            if module is not None and node.attr not in SUBMODULES:
                assert hasattr(module, node.attr), f"{page}:{line}: no trioudp.{node.attr}"
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "trioudp"
            and node.value.attr in SUBMODULES
        ):
            try:
                module = importlib.import_module(f"trioudp.{node.value.attr}")
            except ImportError as exc:  # an optional integration not installed
                pytest.skip(str(exc))
            assert hasattr(module, node.attr), f"{page}:{line}: no {module.__name__}.{node.attr}"
        if isinstance(node, ast.ImportFrom) and node.module in ("trioudp", "trioudp.testing"):
            module = trioudp if node.module == "trioudp" else trioudp.testing
            for alias in node.names:
                assert hasattr(module, alias.name), f"{page}:{line}: no {node.module}.{alias.name}"


MIGRATION = ROOT / "docs" / "migration.md"


def echo_programs() -> list[tuple[str, str]]:
    """The migration guide's complete echo servers, by heading."""
    text = MIGRATION.read_text()
    programs: list[tuple[str, str]] = []
    for section in text.split("\n## ")[1:]:
        title = section.split("\n", 1)[0]
        match = BLOCK.search(section)
        if match is not None and "9999" in match.group(1):
            programs.append((title, match.group(1)))
    return programs


def test_the_guide_has_four_echo_servers() -> None:
    assert len(echo_programs()) == 4


@pytest.mark.parametrize(("title", "code"), echo_programs(), ids=lambda v: str(v)[:20])
def test_migration_echo_server_echoes(title: str, code: str, free_udp_port: int) -> None:
    if "twisted" in code and importlib.util.find_spec("twisted") is None:
        pytest.skip("Twisted is not installed (nox -s bench installs it)")
    port = free_udp_port
    program = code.replace("9999", str(port))
    if "async def main" in program and "run(main" not in program:
        program += "\nasyncio.run(main())\n"
    server = subprocess.Popen(
        [sys.executable, "-c", _SAYS_WHEN_BOUND + program], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "bound\n", title
        framed = "trioudp" in code
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.send(encode_message(1, 0, b"marco", 1200)[0] if framed else b"marco")
            reply = sock.recv(2048)
    finally:
        server.kill()
        server.communicate()
    assert (bytes(decode_frame_untrusted(reply).payload) if framed else reply) == b"marco"


#: Run before a guide's program: says when its socket is bound, so the test
#: sends only then (every framework here binds through socket.socket.bind).
_SAYS_WHEN_BOUND = """
import socket as _socket
_bind = _socket.socket.bind
def _bound(self, address):
    _bind(self, address)
    print("bound", flush=True)
_socket.socket.bind = _bound
"""
