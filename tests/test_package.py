from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import trioudp
from trioudp._cli import main
from trioudp._demo import run_demo

if TYPE_CHECKING:
    import trio.testing


def test_tests_use_the_installed_package() -> None:
    if not os.environ.get("TRIOUDP_EXPECT_INSTALLED"):
        pytest.skip("only checked under nox, which installs the package")
    assert "site-packages" in Path(trioudp.__file__).parts


def test_public_names_are_exported() -> None:
    for name in trioudp.__all__:
        assert getattr(trioudp, name) is not None
    assert (Path(trioudp.__file__).parent / "py.typed").exists()


async def test_demo_passes_its_own_checks(autojump_clock: trio.testing.MockClock) -> None:
    lines: list[str] = []
    assert await run_demo(out=lines.append)
    text = "\n".join(lines)
    assert "300,000 bytes" in text
    assert "every datagram accounted for" in text
    assert "demo passed" in text


def test_demo_command_runs_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioudp", "demo", "--pace", "0.05"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "demo passed" in result.stdout


def test_command_line_errors() -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--pace", "-1"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main([])
