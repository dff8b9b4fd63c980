"""Bounds that are real: what an endpoint holds is charged at what it costs in
memory (measured here with tracemalloc), and ``total_buffer_bytes`` bounds
all of it: partial messages, reorder buffers, every receive channel (the
server's, each connection's, serve() handlers'), reliable queues."""

from __future__ import annotations

import gc
import itertools
import tracemalloc
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from sansio import A

import trioudp
from trioudp import Config
from trioudp._engine import Engine
from trioudp._frame import encode_message
from trioudp.testing import FakeNetwork

if TYPE_CHECKING:
    from collections.abc import Callable

SERVER = ("10.0.0.1", 5000)
MiB = 1024 * 1024
#: The modules where a receiving endpoint keeps what it holds.
HOLDING = ("_engine.py", "_receiving.py", "_delivery.py", "_ordering.py", "_message.py")


def roomy(**options: Any) -> Engine:
    """An engine whose limits are all far away, so that nothing is dropped."""
    settings: dict[str, Any] = {
        "max_partial_messages": 65535,
        "reorder_window": 32768,
        "channel_capacity": 2**20,
        "channel_bytes": 2**40,
        "peer_buffer_bytes": 2**40,
        "total_buffer_bytes": 2**44,
        "reassembly_timeout": 3600,
        "reorder_timeout": 3600,
        "max_message_size": 2**20,
        **options,
    }
    engine = Engine(Config(**settings), now=0.0, new_session_id=itertools.count(1000).__next__)
    if not settings.get("reliable"):
        # Known first: the peer's own state is not what is measured.
        engine.receive_datagram(encode_message(7, 0, b"first", 1200)[0], A, 0.0)
        engine.events()
        engine.take(engine.shared_queue(), 10)
    return engine


def fragments(size: int) -> Callable[[Engine, int], None]:
    """The first fragment of a message of ten ``size``-byte fragments."""

    def fill(engine: Engine, number: int) -> None:
        first = encode_message(7, number + 1, b"f" * 10 * size, size + 28)[0]
        engine.receive_datagram(first, A, 0.0)

    return fill


def waiting(size: int) -> Callable[[Engine, int], None]:
    """A message behind a gap that never fills (message 1 never comes)."""

    def fill(engine: Engine, number: int) -> None:
        engine.receive_datagram(encode_message(7, number + 2, b"w" * size, 1200)[0], A, 0.0)

    return fill


def queued(size: int) -> Callable[[Engine, int], None]:
    """A message delivered to the server's channel, never read."""

    def fill(engine: Engine, number: int) -> None:
        engine.receive_datagram(encode_message(7, number + 1, b"q" * size, 1200)[0], A, 0.0)

    return fill


def to_send(size: int) -> Callable[[Engine, int], None]:
    """A reliable message queued to send, never acknowledged."""

    def fill(engine: Engine, number: int) -> None:
        engine.queue(engine.peer_for(A, 0.0), b"s" * size, 0.0)

    return fill


KINDS: dict[str, tuple[Callable[[Engine, int], None], dict[str, Any]]] = {
    "1-byte fragments": (fragments(1), {}),
    "1000-byte fragments": (fragments(1000), {"max_datagram_size": 1028}),
    "64-byte messages behind a gap": (waiting(64), {}),
    "64-byte messages in a channel": (queued(64), {}),
    "1000-byte messages in a channel": (queued(1000), {}),
    "64-byte reliable messages to send": (to_send(64), {"reliable": True}),
    "5000-byte reliable messages to send": (to_send(5000), {"reliable": True}),
}


def grown(measure: Callable[[], object]) -> tuple[int, object]:
    """Bytes allocated and kept while ``measure`` runs (tracemalloc), and what
    it returned (kept alive until measured)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = measure()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, kept
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_thing_held_is_charged_within_twice_its_real_cost(kind: str) -> None:
    """The charge per item, against the memory it really takes: a 1-byte
    fragment once cost 65 charged bytes against 516 real ones."""
    fill, options = KINDS[kind]
    engine = roomy(**options)
    count = 3000
    charged_before = engine.buffered_bytes

    def hold() -> None:
        for number in range(count):
            fill(engine, number)

    real, _ = grown(hold)
    charged = engine.buffered_bytes - charged_before
    assert engine.statistics().bytes_buffered == engine.buffered_bytes
    assert real / 2 <= charged <= real * 2, (kind, real / count, charged / count)


def test_fragments_that_never_complete_stay_within_the_total() -> None:
    """An attacker's first fragments of one byte, from 500 addresses: what is
    held stays within total_buffer_bytes as charged, and within twice that in
    real memory (6.4 times the limit before fragments were charged their real
    cost)."""
    limit = MiB // 2
    engine = Engine(
        Config(total_buffer_bytes=limit, peer_buffer_bytes=limit, max_message_size=64 * 1024),
        now=0.0,
    )
    addresses = [(f"10.9.{index // 250}.{index % 250}", 7000) for index in range(500)]
    # The first of ten 1-byte fragments of each of 32 messages.
    datagrams = [encode_message(99, number, b"abcdefghij", 29)[0] for number in range(32)]

    def flood() -> None:
        for round_ in range(32):
            for address in addresses:
                engine.receive_datagram(datagrams[round_], address, 0.0)
                assert engine.buffered_bytes <= limit
            engine.events()

    # What the 500 peers themselves cost is not what the limit bounds: take it
    # off, measured the same way for 500 peers that hold nothing.
    empty = Engine(Config(), now=0.0)
    whole = encode_message(98, 0, b"ab", 1200)[0]

    def peers_alone() -> None:
        for address in addresses:
            empty.receive_datagram(whole, address, 0.0)
        empty.events()
        empty.take(empty.shared_queue(), 10**6)

    peers, _ = grown(peers_alone)
    real, _ = grown(flood)
    assert engine.statistics().datagrams_over_limit > 0  # the limit was met
    assert real - peers <= 2 * limit


def holding(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes a receiving endpoint holds, by the modules that hold them."""
    return sum(
        stat.size
        for stat in snapshot.statistics("filename")
        if stat.traceback[0].filename.endswith(HOLDING)
        and "/testing/" not in stat.traceback[0].filename
    )


async def test_a_reliable_server_that_never_reads_holds_at_most_its_total(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """12 clients send 256 KiB reliable messages to a server that never reads.
    Everything the server holds (partial messages, messages waiting for their
    turn or in its channel) stays within total_buffer_bytes, as charged and in
    real memory: a first fragment and the next message of each peer once
    skipped the budget, and reliable channels were unbounded (24 clients of
    1 MiB messages: 82 MiB held at a 64 MiB limit). The clients' sends wait."""
    limit = 2 * MiB
    size = 256 * 1024
    options: dict[str, Any] = {"reliable": True, "give_up_timeout": 3600}
    network = FakeNetwork()
    highest = 0
    tracemalloc.start()
    try:
        with network.installed():
            async with (
                trioudp.open_udp_server(
                    *SERVER, total_buffer_bytes=limit, peer_buffer_bytes=MiB, **options
                ) as server,
                trio.open_nursery() as nursery,
            ):

                async def client(number: int) -> None:
                    async with trioudp.open_udp_connection(
                        *SERVER, local_address=(f"10.0.1.{number}", 7000), **options
                    ) as conn:
                        for _ in range(3):
                            await conn.send(bytes(size))
                        await trio.sleep_forever()

                for number in range(1, 13):
                    nursery.start_soon(client, number)
                for _ in range(10):
                    await trio.sleep(1)
                    held = server.statistics().bytes_buffered
                    assert held <= limit
                    highest = max(highest, holding(tracemalloc.take_snapshot()))
                stats = server.statistics()
                nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    assert highest <= limit * 1.1
    assert stats.messages_delivered >= limit // (2 * size)  # it did take some
    assert stats.datagrams_over_limit > 0  # and refused the rest, to come again


async def test_handlers_that_never_read_hold_at_most_the_total(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """serve() gives each of 300 peers a handler that never reads: their
    channels together stay within total_buffer_bytes (each channel alone was
    bounded, so 500 peers once held 700 MiB)."""
    limit = 4 * MiB
    network = FakeNetwork()
    highest = 0

    async def idle(connection: trioudp.Connection) -> None:
        await trio.sleep_forever()

    tracemalloc.start()
    try:
        with network.installed():
            async with (
                trioudp.open_udp_server(*SERVER, total_buffer_bytes=limit) as server,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(server.serve, idle)
                message = encode_message(5, 0, b"m" * 60_000, 65_000)
                for sequence in range(30):
                    for peer in range(300):
                        (datagram,) = encode_message(5, sequence, b"m" * 60_000, 65_000)
                        network.inject(datagram, (f"10.1.{peer // 250}.{peer % 250}", 7000), SERVER)
                    await trio.testing.wait_all_tasks_blocked()
                    assert server.statistics().bytes_buffered <= limit
                    highest = max(highest, holding(tracemalloc.take_snapshot()))
                stats = server.statistics()
                assert message
                nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    # What is held, and each of the 300 peers' own state (under 2 KiB each).
    assert highest <= limit * 1.1 + 300 * 2048
    assert stats.messages_overflow_dropped > 0
    assert stats.datagrams_received == stats.datagrams_accounted


async def test_reliable_messages_to_send_leave_room_for_the_replies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Both ends send large reliable messages and read what comes back, with a
    small budget. Messages queued to send once filled an endpoint's budget, so
    it refused its peer's replies; the peer's budget was full of replies, so it
    refused (and never acknowledged) the messages that would have freed them:
    each waited for the other for good, nothing delivered."""
    options: dict[str, Any] = {
        "reliable": True,
        "total_buffer_bytes": 1 << 20,
        "peer_buffer_bytes": 1 << 20,
        "max_message_size": 64 << 10,
        "channel_bytes": 1 << 20,
    }
    count = 60
    payloads = [index.to_bytes(4, "big") * 7_500 for index in range(count)]  # 30 KB each

    async def echo(connection: trioudp.Connection) -> None:
        async for message in connection:
            await connection.send(message.payload)

    with FakeNetwork(seed=3).installed():
        async with (
            trioudp.open_udp_server(*SERVER, **options) as server,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(server.serve, echo)
            async with trioudp.open_udp_connection(*SERVER, **options) as client:
                replies: list[bytes] = []

                async def read() -> None:
                    while len(replies) < count:
                        replies.append((await client.receive()).payload)

                with trio.fail_after(120):
                    async with trio.open_nursery() as both:
                        both.start_soon(read)
                        for payload in payloads:
                            await client.send(payload)
                assert replies == payloads
                # The last reply may come before the ACK of the last message
                # (one datagram each once the path MTU is probed, and an ACK
                # waits for a second datagram or 25 ms): it comes.
                with trio.fail_after(1):
                    await client.flush()
                assert client.statistics().messages_unacknowledged == 0
            nursery.cancel_scope.cancel()
