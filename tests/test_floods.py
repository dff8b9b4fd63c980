"""Floods: spoofed peers, messages that never complete, a stalled consumer,
garbage by the million, and open/close cycles. CI runs them at a size that
takes seconds; ``nox -s soak`` (TRIOUDP_SOAK=1) at the full size."""

from __future__ import annotations

import os
import random
import tracemalloc

import pytest
import trio
import trio.testing

import trioudp
from trioudp._frame import encode_message
from trioudp._peers import RESTART_QUIET
from trioudp.testing import FakeNetwork

SOAK = bool(os.environ.get("TRIOUDP_SOAK"))
SERVER = ("10.0.0.1", 5000)


def scale(ci: int, soak: int) -> int:
    return soak if SOAK else ci


def spoofed(number: int) -> tuple[str, int]:
    return (
        f"10.{1 + number // 65536 % 250}.{number // 256 % 256}.{number % 256}",
        1024 + number % 50000,
    )


async def echo(server: trioudp.UDPServer) -> None:
    async for message in server:
        if message.address[0] == "10.0.0.2":
            await message.reply(message.payload)


async def test_spoofed_peer_flood_leaves_established_peers_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flood = scale(20_000, 100_000)
    max_peers = 1000
    network = FakeNetwork()
    tracemalloc.start()
    try:
        with network.installed():
            async with (
                trioudp.open_udp_server(*SERVER, max_peers=max_peers) as server,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(echo, server)
                async with trioudp.open_udp_connection(
                    *SERVER, local_address=("10.0.0.2", 6000)
                ) as client:
                    for number in range(flood):
                        frame = encode_message(number, 0, b"spoof", 1200)[0]
                        network.inject(frame, spoofed(number), SERVER)
                        if number % 1000 == 0:
                            await client.send(b"still there? %d" % number)
                            with trio.fail_after(1):
                                reply = await client.receive()
                            assert reply.payload == b"still there? %d" % number
                await trio.testing.wait_all_tasks_blocked()
                stats = server.statistics()
                nursery.cancel_scope.cancel()
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.peers == max_peers
    admitted = max_peers - 1  # the client holds one place
    assert stats.datagrams_over_limit == flood - admitted
    assert stats.datagrams_received == stats.datagrams_accounted
    # A known peer costs a few kilobytes; the rest of the flood nothing at all.
    assert peak < max_peers * 8 * 1024 + 8 * 1024 * 1024


async def test_a_new_session_per_datagram_from_one_address_costs_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Session churn: one address puts a fresh session id in every datagram
    (a thousand a second) at a server running serve(). It once made a peer, a
    handler task and a timer entry per datagram, kept for idle_timeout (2 GB
    in 40 s). Now a new session replaces the current one only after it has
    been silent RESTART_QUIET, a retired session is let go at once, and a
    normal client is served throughout."""
    seconds = scale(20, 60)
    per_second = 1000
    churner = ("10.0.0.9", 4000)
    network = FakeNetwork()
    handlers = 0
    most_handlers = 0
    baseline = 0

    async def handler(connection: trioudp.Connection) -> None:
        nonlocal handlers, most_handlers
        handlers += 1
        most_handlers = max(most_handlers, handlers)
        try:
            async for message in connection:
                await connection.send(message.payload)
        finally:
            handlers -= 1

    tracemalloc.start()
    try:
        with network.installed():
            async with (
                trioudp.open_udp_server(*SERVER) as server,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(server.serve, handler)
                async with trioudp.open_udp_connection(
                    *SERVER, local_address=("10.0.0.2", 6000)
                ) as client:
                    session = random.Random(13)
                    for number in range(seconds * per_second):
                        frame = encode_message(session.getrandbits(64), 0, b"churn", 1200)[0]
                        network.inject(frame, churner, SERVER)
                        if number % per_second == 0:
                            await client.send(b"still there? %d" % number)
                            with trio.fail_after(1):
                                reply = await client.receive()
                            assert reply.payload == b"still there? %d" % number
                            if number == per_second:
                                baseline = tracemalloc.get_traced_memory()[0]
                        await trio.sleep(1 / per_second)
                    await trio.testing.wait_all_tasks_blocked()
                    grown = tracemalloc.get_traced_memory()[0] - baseline
                    stats = server.statistics()
                    heap = len(server._engine._timers.heap)
                nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    # At most one session of the churner's per RESTART_QUIET, and the client's.
    assert stats.peers_opened <= seconds / RESTART_QUIET + 2
    assert stats.peers == 2
    assert most_handlers <= 3
    assert heap < 200
    assert grown < 2 * 1024 * 1024
    assert stats.datagrams_stale_session >= seconds * per_second * 0.99
    assert stats.datagrams_received == stats.datagrams_accounted


async def test_messages_that_never_complete_are_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    count = scale(2_000, 10_000)
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_server(*SERVER, max_message_size=65536) as server:
            sent = 0
            for sequence in range(count):
                fragments = encode_message(99, sequence, b"f" * 5000, 1200)
                for fragment in fragments[:-1]:  # the last never comes
                    network.inject(fragment, ("10.0.0.3", 7000), SERVER)
                    sent += 1
                if sequence % 100 == 0:
                    await trio.testing.wait_all_tasks_blocked()
                    pending = server.statistics().datagrams_pending
                    assert pending <= 32 * (len(fragments) - 1)  # max_partial_messages
            await trio.testing.wait_all_tasks_blocked()
            # A well-behaved peer is unaffected meanwhile.
            good = encode_message(5, 0, b"g" * 5000, 1200)
            for fragment in good:
                network.inject(fragment, ("10.0.0.4", 7000), SERVER)
            with trio.fail_after(1):
                assert (await server.receive()).payload == b"g" * 5000
            await trio.sleep(2)  # past reassembly_timeout
            stats = server.statistics()
    assert stats.datagrams_pending == 0
    assert stats.messages_delivered == 1
    assert stats.datagrams_over_limit + stats.datagrams_reassembly_expired == sent
    assert stats.datagrams_received == stats.datagrams_accounted


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
async def test_a_stalled_consumer_drops_exactly_the_overflow(
    autojump_clock: trio.testing.MockClock, policy: str
) -> None:
    count = scale(20_000, 100_000)
    capacity = 1000
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_server(
            *SERVER,
            channel_capacity=capacity,
            overflow=policy,  # type: ignore[arg-type]
        ) as server:
            for sequence in range(count):
                network.inject(
                    encode_message(7, sequence, b"%d" % sequence, 1200)[0],
                    ("10.0.0.5", 7000),
                    SERVER,
                )
                if sequence % 5000 == 0:
                    await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            kept = [m.sequence for m in await server.receive_batch(count)]
            stats = server.statistics()
    expected = range(count - capacity, count) if policy == "drop_oldest" else range(capacity)
    assert kept == list(expected)
    assert stats.messages_overflow_dropped == count - capacity
    assert stats.datagrams_overflow_dropped == count - capacity
    assert stats.datagrams_received == stats.datagrams_accounted == count


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
async def test_a_stalled_consumer_holds_at_most_channel_bytes(
    autojump_clock: trio.testing.MockClock, policy: str
) -> None:
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_server(
            *SERVER,
            channel_bytes=10_000,
            max_message_size=8_000,
            overflow=policy,  # type: ignore[arg-type]
        ) as server:
            for sequence in range(50):
                for fragment in encode_message(7, sequence, b"%04d" % sequence * 750, 1200):
                    network.inject(fragment, ("10.0.0.5", 7000), SERVER)
            await trio.testing.wait_all_tasks_blocked()
            kept = [m.sequence for m in await server.receive_batch(100)]
            stats = server.statistics()
    # 3,000-byte messages: three fit in 10,000 bytes.
    assert kept == ([47, 48, 49] if policy == "drop_oldest" else [0, 1, 2])
    assert stats.messages_overflow_dropped == 47
    assert stats.datagrams_received == stats.datagrams_accounted


async def test_garbage_by_the_million(autojump_clock: trio.testing.MockClock) -> None:
    count = scale(30_000, 1_000_000)
    rng = random.Random(11)
    network = FakeNetwork()
    templates = [d for i in range(20) for d in encode_message(3, i, b"t" * 3000, 1200)]
    delivered: list[bytes] = []
    with network.installed():
        async with trioudp.open_udp_server(*SERVER, max_message_size=65536) as server:
            for number in range(count):
                if number % 2:
                    data = rng.randbytes(rng.randrange(64))
                else:  # a real frame, mutated
                    mutated = bytearray(rng.choice(templates))
                    for _ in range(rng.randrange(1, 4)):
                        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
                    data = bytes(mutated)
                network.inject(data, spoofed(number % 3000), SERVER)
                if number % 2000 == 0:
                    await trio.testing.wait_all_tasks_blocked()
                    while True:
                        try:
                            delivered.append(server.receive_nowait().payload)
                        except trio.WouldBlock:
                            break
            await trio.sleep(5)
            stats = server.statistics()
    # Nothing damaged got through: anything delivered is an original payload.
    assert all(payload == b"t" * 3000 for payload in delivered)
    assert stats.datagrams_received == stats.datagrams_accounted == count
    refused = stats.datagrams_crc_error + stats.datagrams_malformed
    assert refused + stats.datagrams_unauthenticated >= count * 0.99


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_open_close_cycles_leave_nothing_behind() -> None:
    cycles = scale(300, 10_000)
    baseline_fds = _open_fds()
    task = trio.lowlevel.current_task()
    baseline_nurseries = len(task.child_nurseries)
    for _ in range(cycles):
        async with (
            trioudp.open_udp_server("127.0.0.1", 0) as server,
            trioudp.open_udp_connection(*server.local_address[:2]) as conn,
        ):
            await conn.send(b"x")
            with trio.fail_after(5):
                await server.receive()
    assert _open_fds() == baseline_fds
    assert len(task.child_nurseries) == baseline_nurseries
