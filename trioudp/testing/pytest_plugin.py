"""pytest fixtures for testing code that uses trioudp (registered through the
``pytest11`` entry point, so installing trioudp is enough).

- ``udp_fake_network``: a :class:`FakeNetwork` installed for the test, so that
  every endpoint the test opens lives on it; faults come from the
  ``trioudp_faults`` marker (``@pytest.mark.trioudp_faults(loss=0.1,
  duplicate=0.05)``, or a :class:`Faults` such as ``HARSH``) and the seed from
  ``--trioudp-seed`` (default 0), so a failing run can be repeated exactly.
- ``udp_echo_server``: a trioudp server on 127.0.0.1 that echoes every message
  back to its sender (an async fixture: it needs pytest-trio). Options for it
  come from the ``trioudp_echo`` marker (``@pytest.mark.trioudp_echo(reliable=True)``).
- ``free_udp_port``: a UDP port on 127.0.0.1 that was free a moment ago.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import pytest
import trio

from .. import open_udp_server
from ._fakenet import CLEAN, FakeNetwork, Faults

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from .. import UDPServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--trioudp-seed",
        type=int,
        default=0,
        help="seed of the udp_fake_network fixture's randomness (default 0)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "trioudp_faults(faults=None, **fields): faults of the udp_fake_network fixture "
        "(a trioudp.testing.Faults, or its fields as keywords)",
    )
    config.addinivalue_line(
        "markers", "trioudp_echo(**options): trioudp options of the udp_echo_server fixture"
    )


def _faults(request: pytest.FixtureRequest) -> Faults:
    marker = request.node.get_closest_marker("trioudp_faults")
    if marker is None:
        return CLEAN
    if marker.args:
        (faults,) = marker.args
        if not isinstance(faults, Faults) or marker.kwargs:
            raise TypeError(
                "trioudp_faults takes a trioudp.testing.Faults or keyword fields, "
                "e.g. trioudp_faults(loss=0.1), not both"
            )
        return faults
    return Faults(**marker.kwargs)


@pytest.fixture
def udp_fake_network(request: pytest.FixtureRequest) -> Iterator[FakeNetwork]:
    seed = int(request.config.getoption("--trioudp-seed") or 0)
    network = FakeNetwork(seed=seed, faults=_faults(request))
    with network.installed():
        yield network


@pytest.fixture
async def udp_echo_server(request: pytest.FixtureRequest) -> AsyncIterator[UDPServer]:
    marker = request.node.get_closest_marker("trioudp_echo")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    async with (
        open_udp_server("127.0.0.1", 0, **options) as server,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_echo, server)
        yield server
        nursery.cancel_scope.cancel()


async def _echo(server: UDPServer) -> None:
    async for message in server:
        await message.reply(message.payload, topic=message.topic)


@pytest.fixture
def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
