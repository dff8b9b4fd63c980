"""The chaos proxy: real sockets on loopback through a bad network."""

from __future__ import annotations

import hashlib
import random
import socket

import trio
import trio.testing

import trioudp
from trioudp.testing import HARSH, Faults, open_chaos_proxy

LOCAL = "127.0.0.1"


async def test_trioudp_through_a_harsh_proxy_delivers_only_whole_ordered_messages() -> None:
    rng = random.Random(5)
    sent = [rng.randbytes(rng.choice([0, 1, 500, 1180, 1181, 5000])) for _ in range(150)]
    received: list[trioudp.Message] = []
    async with (
        trioudp.open_udp_server(LOCAL, 0) as server,
        open_chaos_proxy(server.local_address[:2], faults=HARSH, seed=5) as proxy,
        trioudp.open_udp_connection(*proxy.address) as conn,
    ):
        for payload in sent:
            await conn.send(payload)
            await trio.sleep(0.0005)
        # Delay and reordering are under 30 ms; a second is ample for stragglers.
        with trio.move_on_after(1):
            while True:
                received.append(await server.receive())
        stats = server.statistics()
    sequences = [m.sequence for m in received if m.sequence is not None]
    assert len(sequences) == len(received)
    assert sequences == sorted(set(sequences))  # in order, no duplicates
    for message in received:
        assert message.sequence is not None
        expected = hashlib.sha256(sent[message.sequence]).digest()
        assert hashlib.sha256(message.payload).digest() == expected
    assert 0 < len(received) < len(sent)
    assert proxy.forward.lost > 0
    assert proxy.forward.duplicated > 0
    assert stats.datagrams_duplicate > 0
    assert stats.datagrams_crc_error + stats.datagrams_malformed > 0
    assert stats.datagrams_received == stats.datagrams_accounted


async def test_plain_programs_get_the_same_faults_both_ways() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as echo:
        echo.bind((LOCAL, 0))
        echo.setblocking(False)
        target = echo.getsockname()
        async with open_chaos_proxy(
            target, faults=Faults(delay=0.01), reply_faults=Faults(loss=1.0)
        ) as proxy:
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                await client.sendto(b"ping", proxy.address)
                tsock = trio.socket.from_stdlib_socket(echo.dup())
                try:
                    start = trio.current_time()
                    data, via = await tsock.recvfrom(100)
                    assert data == b"ping"
                    assert trio.current_time() - start >= 0.009  # the delay
                    await tsock.sendto(b"pong", via)  # lost on the way back
                finally:
                    tsock.close()
                await trio.testing.wait_all_tasks_blocked()
                assert proxy.backward.lost == 1
                assert proxy.backward.delivered == 0


async def test_reliable_mode_through_a_lossy_proxy_delivers_everything_once_in_order() -> None:
    """Real loopback sockets, 10% loss both ways (and some duplication and
    reordering): 10^4 messages arrive exactly once, in order."""
    rng = random.Random(6)
    sent = [rng.randbytes(rng.choice([0, 1, 64, 500, 1180, 3000])) for _ in range(10_000)]
    received: list[bytes] = []
    lossy = Faults(loss=0.1, duplicate=0.02, reorder=0.05, delay=0.001, jitter=0.001)
    async with (
        trioudp.open_udp_server(LOCAL, 0, reliable=True) as server,
        open_chaos_proxy(
            server.local_address[:2], faults=lossy, reply_faults=lossy, seed=6
        ) as proxy,
        trioudp.open_udp_connection(*proxy.address, reliable=True) as conn,
        trio.open_nursery() as nursery,
    ):

        async def collect() -> None:
            async for message in server:
                received.append(message.payload)
                if len(received) == len(sent):
                    return

        nursery.start_soon(collect)
        with trio.fail_after(120):
            for payload in sent:
                await conn.send(payload)
            await conn.flush()
        stats = conn.statistics()
    assert received == sent
    assert proxy.forward.lost > 0
    assert proxy.backward.lost > 0
    assert stats.datagrams_retransmitted > 0
    assert stats.messages_acked == len(sent) == stats.messages_sent
    assert stats.bytes_in_flight == 0
