"""The pytest plugin trioudp registers (trioudp.testing.pytest_plugin), used as
users use it: its fixtures in tests, and found through its entry point."""

from __future__ import annotations

import socket

import pytest
import trio

import trioudp
from trioudp.testing import HARSH, FakeNetwork


async def test_the_echo_server_answers(udp_echo_server: trioudp.UDPServer) -> None:
    async with trioudp.open_udp_connection(*udp_echo_server.local_address[:2]) as conn:
        await conn.send(b"ping", topic="t")
        with trio.fail_after(5):
            answer = await conn.receive()
    assert (answer.payload, answer.topic) == (b"ping", "t")


@pytest.mark.trioudp_echo(reliable=True)
async def test_the_echo_server_takes_options(udp_echo_server: trioudp.UDPServer) -> None:
    assert udp_echo_server.config.reliable
    async with trioudp.open_udp_connection(
        *udp_echo_server.local_address[:2], reliable=True
    ) as conn:
        await conn.send_batch([b"a", b"b"])
        with trio.fail_after(5):
            assert [(await conn.receive()).payload for _ in range(2)] == [b"a", b"b"]


@pytest.mark.trioudp_faults(loss=1.0)
async def test_the_fake_network_has_the_markers_faults(
    udp_fake_network: FakeNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        trioudp.open_udp_server("10.0.0.1", 5000) as server,
        trioudp.open_udp_connection("10.0.0.1", 5000) as conn,
    ):
        await conn.send(b"lost")
        with trio.move_on_after(1):
            await server.receive()
            pytest.fail("a message crossed a link that loses everything")
    assert udp_fake_network.statistics.lost == 1


@pytest.mark.trioudp_faults(HARSH)
def test_a_faults_preset_in_the_marker(udp_fake_network: FakeNetwork) -> None:
    assert udp_fake_network.faults == HARSH


def test_the_free_port_can_be_bound(free_udp_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", free_udp_port))


def test_the_plugin_is_registered_by_its_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.trioudp_faults(loss=0.5, duplicate=0.1)
        def test_faults(udp_fake_network):
            assert udp_fake_network.faults.loss == 0.5

        def test_seed(udp_fake_network, request):
            assert request.config.getoption("--trioudp-seed") == 7
        """
    )
    result = pytester.runpytest_subprocess("--trioudp-seed", "7", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_marker_with_both_forms_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from trioudp.testing import HARSH

        @pytest.mark.trioudp_faults(HARSH, loss=0.5)
        def test_faults(udp_fake_network):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*trioudp_faults takes a trioudp.testing.Faults or keyword*"])
