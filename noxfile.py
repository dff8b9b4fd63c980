"""Test matrix and checks: ``nox`` runs the default sessions, as CI does.

One shared test function serves the whole matrix (as in urllib3's noxfile);
the package is installed into each session's virtualenv, and the tests import
it from there, never from the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = [
    "tests",
    "tests_oldest_trio",
    "lint",
    "typing",
    "wheel",
    "docs",
    "monitoring",
]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
#: The oldest trio we support (pyproject's floor) is tested too.
OLDEST_TRIO = "0.25.0"
TEST_REQUIREMENTS = ["pytest>=8.0", "pytest-trio>=0.8.0", "hypothesis>=6.100"]
#: The systems the benchmarks compare trioudp with, and the chart's library.
BENCH_PEERS = ["uvloop", "twisted", "anyio", "asyncudp", "asyncio-dgram", "matplotlib"]

# uv must use the Pythons installed here, never download one.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


def _use_every_pyenv_python() -> None:
    """pyenv's shims run only the versions it is told to (its shim sets
    PYENV_VERSION to the one that runs nox): on a machine whose Pythons come
    from pyenv, offer all of ours, the current one first, so that python3.10
    ... python3.13 each find theirs."""
    if shutil.which("pyenv") is None:
        return

    def pyenv(*arguments: str) -> list[str]:
        result = subprocess.run(["pyenv", *arguments], capture_output=True, text=True, check=False)
        return result.stdout.split()

    installed = pyenv("versions", "--bare")
    current = os.environ.get("PYENV_VERSION")
    chosen = current.split(":") if current else pyenv("version-name")[:1]
    for wanted in PYTHONS:
        matches = [
            v for v in installed if v.startswith(wanted + ".") and v[len(wanted) + 1 :].isdigit()
        ]
        if matches:
            chosen.append(max(matches, key=lambda v: int(v.rsplit(".", 1)[1])))
    os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys(chosen))


_use_every_pyenv_python()


#: The Python whose session runs the reliable-delivery matrix (10 seeds x 4
#: network profiles) with 10**4 messages each; the others run it with 10**3, as
#: the same code paths do not need proving five times at ten minutes a time.
FULL_RELIABLE_PYTHON = "3.11"


#: The package with its optional integrations, so that their tests run too.
PACKAGE = ".[prometheus]"


def run_tests(session: nox.Session, *pins: str) -> None:
    full = session.python == FULL_RELIABLE_PYTHON and not pins
    session.install(PACKAGE, *TEST_REQUIREMENTS)
    if pins:
        session.install(*pins)
    session.run("python", "-c", "import trio; print('trio', trio.__version__)")
    session.run(
        "pytest",
        "--import-mode=importlib",
        *session.posargs,
        env={
            "TRIOUDP_EXPECT_INSTALLED": "1",
            "TRIOUDP_RELIABLE_MESSAGES": "10000" if full else "1000",
        },
    )


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite on every supported Python with the newest trio."""
    run_tests(session)


@nox.session(python=PYTHONS[0])
def tests_oldest_trio(session: nox.Session) -> None:
    """The test suite with the oldest trio trioudp supports."""
    run_tests(session, f"trio=={OLDEST_TRIO}")


@nox.session(python=PYTHONS[1])
def netns(session: nox.Session) -> None:
    """Only the multi-host tests (multicast, broadcast) in network namespaces.
    They need root; the tests sessions run them too, and skip them without."""
    session.install(".", *TEST_REQUIREMENTS)
    session.run("pytest", "--import-mode=importlib", "tests/test_netns.py", *session.posargs)


@nox.session(python=PYTHONS[1])
def soak(session: nox.Session) -> None:
    """The floods at full size (10^5 spoofed peers, 10^6 garbage datagrams,
    10^4 open/close cycles ...), the decoder fuzzing at 10,000 examples, and
    reliable delivery with 10^5 messages over 30 seeds.
    Not a default session: it takes minutes."""
    session.install(".", *TEST_REQUIREMENTS)
    session.run(
        "pytest",
        "--import-mode=importlib",
        "tests/test_floods.py",
        "tests/test_malformed.py",
        "tests/test_reliable.py",
        *session.posargs,
        env={"TRIOUDP_SOAK": "1", "CI": "1"},
    )


@nox.session(python=PYTHONS[1])
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS[1])
def typing(session: nox.Session) -> None:
    """mypy strict and pyright strict over the package, tests, examples and
    benchmarks; and pyright's check that the installed public API is fully
    typed (--verifytypes fails below 100%)."""
    session.install(
        PACKAGE,
        *TEST_REQUIREMENTS,
        "mypy>=1.10",
        "pyright[nodejs]>=1.1.380",
        "nox",
        # mypy checks as Python 3.10, which imports this backport
        "exceptiongroup",
    )
    session.run("mypy")
    session.run("pyright")
    # Run from elsewhere, so that it sees the installed package, not the tree.
    session.chdir(session.create_tmp())
    session.run("pyright", "--verifytypes", "trioudp", "--ignoreexternal")


@nox.session(python=PYTHONS[1])
def docs(session: nox.Session) -> None:
    """Build the Sphinx documentation with every warning an error (-W) and every
    reference to trioudp resolved (-n), into docs/_build/html."""
    session.install(PACKAGE, "sphinx>=7", "myst-parser>=2", "furo", "pytest>=8.0")
    session.run(
        "sphinx-build", "-W", "-n", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session(python=PYTHONS[1])
def examples(session: nox.Session) -> None:
    """Run every example program, each within a time limit, and check what it
    prints: on loopback (tests/test_examples.py), and the multicast and
    broadcast ones between test hosts in network namespaces (test_netns.py's
    test_example_*, skipped with the reason without root). The tests sessions
    run them too."""
    session.install(PACKAGE, *TEST_REQUIREMENTS)
    session.run(
        "pytest",
        "--import-mode=importlib",
        "tests/test_examples.py",
        "tests/test_netns.py",
        "tests/test_prometheus.py",
        "-k",
        "example",
        *session.posargs,
    )


@nox.session(python=PYTHONS[1])
def monitoring(session: nox.Session) -> None:
    """The Wireshark dissector against tshark (installed from Debian's packages
    here if it is missing and this runs as root) and the Prometheus
    integration with its example: docs/monitoring.md's tools."""
    if shutil.which("tshark") is None and shutil.which("apt-get") and os.geteuid() == 0:
        quiet = {"DEBIAN_FRONTEND": "noninteractive"}
        try:
            session.run("apt-get", "update", "-qq", external=True, env=quiet, silent=True)
            session.run(
                "apt-get", "install", "-y", "-qq", "tshark", external=True, env=quiet, silent=True
            )
        except CommandFailed:
            session.warn("could not install tshark: the dissector's tests will be skipped")
    session.install(PACKAGE, *TEST_REQUIREMENTS)
    required = {"TRIOUDP_REQUIRE_TSHARK": "1"} if shutil.which("tshark") else {}
    session.run(
        "pytest",
        "--import-mode=importlib",
        "tests/test_wireshark.py",
        "tests/test_prometheus.py",
        *session.posargs,
        env={"TRIOUDP_EXPECT_INSTALLED": "1", **required},
    )


@nox.session(python=PYTHONS[1])
def wheel(session: nox.Session) -> None:
    """Build the wheel, install it (not the source tree) in a fresh virtualenv,
    check its metadata and entry points, and run the tests against it, as
    trio's CI does."""
    session.install("build", "twine")
    dist = session.create_tmp()
    session.run("python", "-m", "build", "--wheel", "--outdir", dist)
    wheels = sorted(Path(dist).glob("trioudp-*.whl"))
    session.run("twine", "check", "--strict", *map(str, wheels))
    session.install(f"{wheels[-1]}[prometheus]", *TEST_REQUIREMENTS)
    session.run("trioudp", "--version")
    session.run(
        "pytest",
        "--import-mode=importlib",
        *session.posargs,
        env={"TRIOUDP_EXPECT_INSTALLED": "1", "TRIOUDP_RELIABLE_MESSAGES": "1000"},
    )


@nox.session(python=PYTHONS[1])
def bench(session: nox.Session) -> None:
    """Benchmarks (not run by default): each prints a table of ratios measured
    in one run, since these machines are shared and noisy."""
    session.install(".", *BENCH_PEERS)
    session.run(
        "python",
        "bench/receive_capacity.py",
        "--json",
        "docs/bench/receive_capacity.json",
        "--chart",
        "docs/bench/receive_capacity.png",
        *session.posargs,
    )
    session.run("python", "bench/goodput.py", "--json", "docs/bench/goodput.json")
    session.run("python", "bench/echo_latency.py", "--json", "docs/bench/echo_latency.json")
    session.run("python", "bench/peers.py", "--json", "docs/bench/peers.json")
    session.run("python", "bench/flood.py", "--json", "docs/bench/flood.json")
    session.run("python", "bench/control_loop.py", "--json", "docs/bench/control_loop.json")
    session.run("python", "bench/connections.py", "--json", "docs/bench/connections.json")
    session.run("python", "bench/workloads.py", "--json", "docs/bench/workloads.json")
    session.run("python", "bench/workers.py", "--json", "docs/bench/workers.json")


@nox.session(python=PYTHONS[1])
def bench_compare(session: nox.Session) -> None:
    """The benchmarks of a base revision and of the working tree in one run, in
    turns, with their ratios (``nox -s bench_compare -- REV``; HEAD~1 by
    default). Not run by default."""
    session.install(".", *BENCH_PEERS)
    base = session.posargs[0] if session.posargs else "HEAD~1"
    session.run(
        "python",
        "bench/compare.py",
        base,
        "--json",
        "docs/bench/compare.json",
        *session.posargs[1:],
    )


@nox.session(python=PYTHONS[1])
def demo(session: nox.Session) -> None:
    """The live demo of the README."""
    session.install(".")
    session.run("python", "-m", "trioudp", "demo", *session.posargs)
