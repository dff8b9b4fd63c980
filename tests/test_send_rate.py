"""``send_rate``: an endpoint sends at most that many bytes per second, in
bursts of at most 64 KiB (or 5 ms of the rate), and a ``send()`` that would go
faster waits; nothing is lost or reordered by the waiting (issue 14)."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

import trioudp
from trioudp.testing import FakeNetwork

SERVER = ("10.0.0.1", 5000)
CLIENT = ("10.0.0.2", 6000)
BURST = 65536


async def receive_all(
    server: trioudp.UDPServer, count: int, arrivals: list[tuple[float, int]]
) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        message = await server.receive()
        got.append(message.payload)
        arrivals.append((trio.current_time(), len(message.payload)))
    return got


@pytest.mark.parametrize("reliable", [False, True])
async def test_a_paced_sender_keeps_to_its_rate_and_loses_nothing(
    autojump_clock: trio.testing.MockClock, reliable: bool
) -> None:
    rate = 200_000  # bytes per second
    payloads = [bytes([i]) * 20_000 for i in range(40)]  # about 820 KB on the wire
    network = FakeNetwork()
    arrivals: list[tuple[float, int]] = []
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER, reliable=reliable) as server,
            trio.open_nursery() as nursery,
        ):
            got: list[bytes] = []

            async def receiver() -> None:
                got.extend(await receive_all(server, len(payloads), arrivals))

            nursery.start_soon(receiver)
            async with trioudp.open_udp_connection(
                *SERVER, local_address=CLIENT, send_rate=rate, reliable=reliable
            ) as client:
                start = trio.current_time()
                for payload in payloads:
                    await client.send(payload)
                await client.flush()
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
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER) as server,
            trioudp.open_udp_connection(*SERVER, local_address=CLIENT) as client,
        ):
            start = trio.current_time()
            for i in range(40):
                await client.send(bytes([i]) * 20_000)
            elapsed = trio.current_time() - start
            assert (await server.receive()).payload == bytes(20_000)
    assert elapsed < 0.01


async def test_a_send_cancelled_while_paced_still_sends_its_message_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Cancelled while it waits for the rate, a send leaves the rest of its
    # message to the endpoint, which sends it at the rate: the message arrives
    # whole rather than as a partial that would time out.
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER) as server,
            trioudp.open_udp_connection(*SERVER, local_address=CLIENT, send_rate=50_000) as client,
        ):
            with trio.move_on_after(0.1) as scope:
                await client.send(b"a" * 200_000)
            assert scope.cancelled_caught
            with trio.fail_after(10):
                message = await server.receive()
    assert message.payload == b"a" * 200_000


@pytest.mark.parametrize("bad", [0, -5, 999, math.nan, math.inf, "fast", 2e12, True])
def test_send_rate_must_be_a_sensible_number(bad: object) -> None:
    with pytest.raises(ValueError, match="send_rate must be a number of bytes per second"):
        trioudp.Config(send_rate=bad)  # type: ignore[arg-type]
