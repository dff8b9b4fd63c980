"""``send_rate``: an unreliable endpoint sends at most that many bytes per
second, in bursts of at most 64 KiB (or 5 ms of the rate), and a ``send()``
that would go faster waits; nothing is lost or reordered by the waiting, a
cancelled wait gives its message up, closing wakes it (issue 14)."""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

import trioudp
from trioudp._transport import _Abandoned
from trioudp.testing import FakeNetwork

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

SERVER = ("10.0.0.1", 5000)
CLIENT = ("10.0.0.2", 6000)
BURST = 65536


@asynccontextmanager
async def pair(
    network: FakeNetwork, send_rate: float | None = None
) -> AsyncGenerator[tuple[trioudp.UDPServer, trioudp.Connection], None]:
    """A server and a client sending to it at ``send_rate``, on ``network``."""
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER) as server,
            trioudp.open_udp_connection(
                *SERVER, local_address=CLIENT, send_rate=send_rate
            ) as client,
        ):
            yield server, client


async def receive_all(
    server: trioudp.UDPServer, count: int, arrivals: list[tuple[float, int]]
) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        message = await server.receive()
        got.append(message.payload)
        arrivals.append((trio.current_time(), len(message.payload)))
    return got


async def test_a_paced_sender_keeps_to_its_rate_and_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = 200_000  # bytes per second
    payloads = [bytes([i]) * 20_000 for i in range(40)]  # about 820 KB on the wire
    network = FakeNetwork()
    arrivals: list[tuple[float, int]] = []
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER) as server,
            trio.open_nursery() as nursery,
        ):
            got: list[bytes] = []

            async def receiver() -> None:
                got.extend(await receive_all(server, len(payloads), arrivals))

            nursery.start_soon(receiver)
            async with trioudp.open_udp_connection(
                *SERVER, local_address=CLIENT, send_rate=rate
            ) as client:
                start = trio.current_time()
                for payload in payloads:
                    await client.send(payload)
                sent = client.statistics().bytes_sent
            elapsed = trio.current_time() - start
    assert got == payloads
    # It took as long as the rate says (less the first burst), not less.
    assert elapsed >= (sent - BURST) / rate - 0.01
    assert elapsed <= (sent - BURST) / rate * 1.2 + 0.1
    # And the messages arrived no faster than the rate allows after the first
    # burst (their payloads are less than what went on the wire).
    first = arrivals[0][0]
    carried = 0
    for when, size in arrivals:
        carried += size
        assert carried <= BURST + rate * (when - first) + 20_000


async def test_without_a_rate_the_same_run_goes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The reference: with no send_rate, the same sends take no virtual time.
    async with pair(FakeNetwork()) as (server, client):
        start = trio.current_time()
        for i in range(40):
            await client.send(bytes([i]) * 20_000)
        elapsed = trio.current_time() - start
        assert (await server.receive()).payload == bytes(20_000)
    assert elapsed < 0.01


async def test_a_send_cancelled_while_paced_gives_its_message_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The common pattern of a timeout around each send, every one of them too
    # short for the rate: each cancelled send gives up what it had not sent
    # (counted), so nothing piles up behind which a later send would wait.
    async with pair(FakeNetwork(), 50_000) as (server, client):
        for _ in range(20):
            with trio.move_on_after(0.1):
                await client.send(b"a" * 200_000)
        start = trio.current_time()
        await client.send(b"urgent")
        waited = trio.current_time() - start
        stats = client.statistics()
        with trio.fail_after(5):
            message = await server.receive()
    assert waited < 0.1
    assert message.payload == b"urgent"
    assert stats.datagrams_send_dropped > 0


async def test_closing_wakes_a_send_waiting_for_the_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Raw mode, 60 KB datagrams at 5,000 bytes a second: an 11 s wait, which
    # closing the endpoint ends at once.
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_connection(
            *SERVER, local_address=CLIENT, send_rate=5000, framing=False, max_datagram_size=60_000
        ) as client:
            # The first burst, and one more that overdraws it by 54 KB.
            await client.send(b"b" * 60_000)
            await client.send(b"b" * 60_000)
            async with trio.open_nursery() as nursery:

                async def close_soon() -> None:
                    await trio.sleep(0.1)
                    await client.aclose()

                nursery.start_soon(close_soon)
                start = trio.current_time()
                with pytest.raises(trio.ClosedResourceError):
                    await client.send(b"c" * 60_000)
                assert trio.current_time() - start < 0.2


async def test_pacing_on_a_clock_with_a_coarse_step(autojump_clock: trio.testing.MockClock) -> None:
    # At 2**50 seconds a float clock moves in steps of an eighth of a second: a
    # wait for the rate shorter than that must still move it on.
    autojump_clock.jump(2.0**50)
    async with pair(FakeNetwork(), 100_000) as (server, client):
        for i in range(10):
            await client.send(bytes([i]) * 20_000)
        got = [(await server.receive()).payload for _ in range(10)]
    assert got == [bytes([i]) * 20_000 for i in range(10)]


async def test_a_large_message_paced_over_gso_arrives_whole() -> None:
    # On loopback, with segmentation offload: the fragments of a message go in
    # runs of at most 10 ms of the rate, evenly spaced, so none waits longer
    # than reassembly_timeout after the one before it.
    async with (
        trioudp.open_udp_server("127.0.0.1", 0, reassembly_timeout=0.2) as server,
        trioudp.open_udp_connection(
            "127.0.0.1", server.local_address[1], send_rate=200_000, offload=True
        ) as client,
    ):
        await client.send(b"d" * 150_000)
        with trio.fail_after(10):
            message = await server.receive()
        stats = server.statistics()
    assert message.payload == b"d" * 150_000
    assert stats.datagrams_reassembly_expired == 0


def test_send_rate_is_not_for_reliable_mode() -> None:
    with pytest.raises(ValueError, match="send_rate paces unreliable sends"):
        trioudp.Config(send_rate=1_000_000, reliable=True)


def test_send_rate_must_keep_fragments_within_reassembly_timeout() -> None:
    with pytest.raises(ValueError, match="raise send_rate to at least 4800 or reassembly_timeout"):
        trioudp.Config(send_rate=2000)
    trioudp.Config(send_rate=2000, reassembly_timeout=3.0)
    trioudp.Config(send_rate=2000, framing=False)  # raw mode does not fragment


@pytest.mark.parametrize("bad", [0, -5, 999, math.nan, math.inf, "fast", 2e12, True, "1e6"])
def test_send_rate_must_be_a_sensible_number(bad: object) -> None:
    with pytest.raises(ValueError, match="send_rate must be a number of bytes per second"):
        trioudp.Config(send_rate=bad)  # type: ignore[arg-type]


async def test_a_cancelled_sends_runs_stay_given_up_when_gso_is_turned_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A kernel that refuses GSO makes the transport cut every waiting run into
    # single datagrams: a cancelled paced send's runs must stay marked, or its
    # datagrams would go out after all, uncounted.
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_connection(
            *SERVER, local_address=CLIENT, send_rate=100_000
        ) as client:
            transport = client._endpoint._transport
            datagram = (b"x", SERVER, None)
            transport._pending.append(_Abandoned([datagram, datagram]))
            transport._pending.append([datagram, datagram])
            transport._waiting += 4
            transport._unsegmented()
            kinds = [type(run) for run in transport._pending]
    assert kinds == [_Abandoned, _Abandoned, list, list]


async def test_a_paced_send_cancelled_while_the_kernel_has_no_room_still_goes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Only a wait for the rate gives a cancelled send's message up: one
    # cancelled while the kernel has no room leaves it to the backlog task,
    # as without send_rate, and it arrives whole.
    network = FakeNetwork()
    async with pair(network, 10_000_000) as (server, client):
        network.refuse_sends(1)  # EAGAIN, writable again 1 ms later
        with trio.move_on_after(0.0005) as scope:
            await client.send(b"e" * 20_000)
        assert scope.cancelled_caught
        with trio.fail_after(5):
            message = await server.receive()
        stats = client.statistics()
    assert message.payload == b"e" * 20_000
    assert stats.datagrams_send_dropped == 0
