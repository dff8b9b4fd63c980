"""Reliable delivery (reliable=True) through the whole stack on the fake network:
exactly once, in order, or a clear error on the sender."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

import trioudp
from trioudp.testing import CLEAN, HARSH, MODERATE, STRESS, FakeNetwork, Faults

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

SERVER = ("10.0.0.1", 5000)
PROFILES = {"clean": CLEAN, "moderate": MODERATE, "harsh": HARSH, "stress": STRESS}
SOAK = bool(os.environ.get("TRIOUDP_SOAK"))
#: Messages per run: 10**4 (noxfile.py gives one session that, the others 10**3),
#: 10**5 in the soak session.
COUNT = 100_000 if SOAK else int(os.environ.get("TRIOUDP_RELIABLE_MESSAGES", "10000"))
SEEDS = range(30 if SOAK else 10)
#: Mixed sizes: empty, small, one full datagram, and up to four fragments.
SIZES = [0, 1, 17, 200, 1150, 1160, 2500, 4600]
OPTIONS: dict[str, Any] = {"reliable": True, "max_message_size": 64 * 1024}


@asynccontextmanager
async def pair(
    network: FakeNetwork, server: dict[str, Any] | None = None, **client: Any
) -> AsyncGenerator[tuple[trioudp.UDPServer, trioudp.Connection], None]:
    """A reliable server and a reliable client connected to it on ``network``
    (options for each laid over reliable=True)."""
    server_options: dict[str, Any] = {"reliable": True, **(server or {})}
    client_options: dict[str, Any] = {"reliable": True, **client}
    with network.installed():
        async with (
            trioudp.open_udp_server(SERVER[0], SERVER[1], **server_options) as udp_server,
            trioudp.open_udp_connection(SERVER[0], SERVER[1], **client_options) as conn,
        ):
            yield udp_server, conn


def state_of(conn: trioudp.Connection) -> trioudp.ConnectionState:
    return conn.state.value


def payloads(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.choice(SIZES)) for _ in range(count)]


async def transfer(
    network: FakeNetwork, sent: list[bytes], *, batches: int = 0, **options: Any
) -> tuple[list[bytes], trioudp.PeerStatistics, trioudp.EndpointStatistics]:
    """A client sends every payload (await send() each, or with ``batches``
    send_batch() of 1 to ``batches`` at a time; then flush()) while the
    server's application receives; returns what it received and both sides'
    statistics."""
    received: list[bytes] = []
    with network.installed():
        async with trioudp.open_udp_server(SERVER[0], SERVER[1], **OPTIONS, **options) as server:

            async def collect() -> None:
                async for message in server:
                    received.append(message.payload)
                    if len(received) == len(sent):
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect)
                async with trioudp.open_udp_connection(
                    SERVER[0], SERVER[1], **OPTIONS, **options
                ) as conn:
                    if batches:
                        rng = random.Random(len(sent))
                        start = 0
                        while start < len(sent):
                            stop = start + rng.randint(1, batches)
                            await conn.send_batch(sent[start:stop])
                            start = stop
                    else:
                        for payload in sent:
                            await conn.send(payload)
                    await conn.flush()
                    client = conn.statistics()
            server_stats = server.statistics()
    return received, client, server_stats


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("profile", list(PROFILES))
async def test_every_message_arrives_once_in_order(
    autojump_clock: trio.testing.MockClock, profile: str, seed: int
) -> None:
    await check_transfer(profile, seed)


@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("profile", list(PROFILES))
async def test_batches_arrive_once_in_order(
    autojump_clock: trio.testing.MockClock, profile: str, seed: int
) -> None:
    await check_transfer(profile, seed, batches=64)


async def check_transfer(profile: str, seed: int, *, batches: int = 0) -> None:
    network = FakeNetwork(seed=seed, faults=PROFILES[profile])
    sent = payloads(COUNT, seed)
    received, client, server = await transfer(network, sent, batches=batches)
    assert len(received) == len(sent)
    assert [hashlib.sha256(p).digest() for p in received] == [
        hashlib.sha256(p).digest() for p in sent
    ]
    # The sender's accounting closes, and everything was acknowledged.
    assert client.messages_sent == len(sent)
    assert client.messages_sent == (
        client.messages_acked + client.messages_failed + client.messages_unacknowledged
    )
    assert client.messages_acked == len(sent)
    assert client.bytes_in_flight == 0
    # The receiver's datagrams all end in a named outcome.
    assert server.datagrams_received == server.datagrams_accounted
    assert server.messages_delivered == len(sent)
    if profile != "clean":
        assert network.statistics.lost > 0
        assert client.datagrams_retransmitted > 0
        assert client.rtt_smoothed > 0
    else:
        assert client.datagrams_retransmitted == 0


async def test_send_waits_for_a_receiver_that_does_not_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer whose application does not receive stops taking data after its
    window (reorder_window messages): send() blocks instead of buffering, and
    goes on as soon as the application reads. Nothing is given up."""
    async with pair(FakeNetwork(seed=1), {"reorder_window": 16}) as (server, conn):
        sent = 0
        with trio.move_on_after(60):
            while True:
                await conn.send(b"m%d" % sent)
                sent += 1
        # 16 in the server's window, then up to the client's own 256 queued:
        # never more, however long it waits.
        assert sent == 16 + 256
        assert state_of(conn) is trioudp.ConnectionState.ESTABLISHED
        assert conn.statistics().messages_failed == 0
        got = [(await server.receive()).payload for _ in range(sent)]
        assert got == [b"m%d" % i for i in range(sent)]
        await conn.flush()
        assert conn.statistics().messages_acked == sent


async def test_a_vanished_peer_fails_the_sender_after_give_up_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = FakeNetwork(seed=2)
    async with pair(network, give_up_timeout=5.0) as (server, conn):
        await conn.send(b"first")
        await conn.flush()
        assert (await server.receive()).payload == b"first"
        network.set_faults(Faults(loss=1.0))  # the server is cut off
        for index in range(5):
            await conn.send(b"lost %d" % index)
        start = trio.current_time()
        with pytest.raises(trioudp.PeerLostError, match="give_up_timeout") as info:
            await conn.flush()
        waited = trio.current_time() - start
        assert 5.0 <= waited <= 5.0 + 0.5
        assert info.value.unacknowledged == 5
        assert state_of(conn) is trioudp.ConnectionState.LOST
        stats = conn.statistics()
        assert stats.messages_failed == 5
        assert stats.messages_sent == stats.messages_acked + stats.messages_failed
        with pytest.raises(trioudp.PeerLostError):
            await conn.send(b"again")


async def test_a_receiver_that_closes_at_once_acknowledges_what_it_took_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`trioudp listen --reliable --count 1` takes one message and exits within
    the ACK delay: its ACK used to be lost with it, and the sender sent the
    message again until give_up_timeout, then failed."""
    network = FakeNetwork(seed=3)
    with network.installed():
        async with trioudp.open_udp_connection(*SERVER, reliable=True) as conn:
            async with trioudp.open_udp_server(*SERVER, reliable=True) as server:
                await conn.send(b"one and done")
                assert (await server.receive()).payload == b"one and done"
            start = trio.current_time()
            await conn.flush()
            assert trio.current_time() - start < 0.1
            assert conn.statistics().messages_acked == 1


async def test_state_is_awaitable(autojump_clock: trio.testing.MockClock) -> None:
    network = FakeNetwork(seed=3)
    with network.installed():
        async with trioudp.open_udp_server(*SERVER, reliable=True) as server:
            async with trioudp.open_udp_connection(
                *SERVER, reliable=True, keepalive=15.0, dead_timeout=50.0
            ) as conn:
                assert state_of(conn) is trioudp.ConnectionState.CONNECTING
                await conn.send(b"hello")
                with trio.fail_after(1):
                    await conn.state.wait_value(trioudp.ConnectionState.ESTABLISHED)
                message = await server.receive()
                # Keepalives keep a quiet connection established: the PINGs are
                # answered, so an hour passes without it going idle.
                with trio.move_on_after(3600):
                    await conn.state.wait_value(trioudp.ConnectionState.IDLE)
                assert state_of(conn) is trioudp.ConnectionState.ESTABLISHED
                pings = conn.statistics().pings_sent
                assert 3600 / 15 <= pings <= 3600 / 12 + 1
                network.set_faults(Faults(loss=1.0))
                start = trio.current_time()
                await conn.state.wait_value(trioudp.ConnectionState.IDLE)
                await conn.state.wait_value(trioudp.ConnectionState.LOST)
                assert 50 - 15 <= trio.current_time() - start <= 50 + 1
                network.set_faults(Faults())
                await message.reply(b"back")
                await conn.state.wait_value(trioudp.ConnectionState.ESTABLISHED)
                assert (await conn.receive()).payload == b"back"
            assert state_of(conn) is trioudp.ConnectionState.CLOSED


@pytest.mark.parametrize("reliable_end", ["client", "server"])
async def test_mixed_peers_get_a_clear_error(
    autojump_clock: trio.testing.MockClock, reliable_end: str
) -> None:
    network = FakeNetwork(seed=4)
    with network.installed():
        async with trioudp.open_udp_server(*SERVER, reliable=reliable_end == "server") as server:
            async with trioudp.open_udp_connection(
                *SERVER, reliable=reliable_end == "client"
            ) as conn:
                await conn.send(b"one")
                with trio.fail_after(1):
                    await conn.state.wait_value(trioudp.ConnectionState.LOST)
                error = "does not take reliable" if reliable_end == "client" else "only reliable"
                with pytest.raises(trioudp.PeerLostError, match=error):
                    await conn.send(b"two")
                with pytest.raises(trioudp.PeerLostError, match="reliable=True"):
                    await conn.flush()
            stats = server.statistics()
            assert stats.datagrams_mismatched == 1
            assert stats.messages_delivered == 0
            assert stats.datagrams_received == stats.datagrams_accounted


async def test_a_restarted_sender_starts_a_fresh_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that restarts (a new socket on the same address, a new session)
    is a new connection on the server; the old session's late datagrams are
    refused as stale, never delivered into the new one."""
    network = FakeNetwork(seed=5, faults=Faults(delay=0.05, jitter=0.04, reorder=0.3))
    local = ("10.0.0.2", 6000)
    received: list[bytes] = []
    with network.installed():
        async with trioudp.open_udp_server(*SERVER, reliable=True) as server:
            async with trio.open_nursery() as nursery:

                async def collect() -> None:
                    async for message in server:
                        received.append(message.payload)

                nursery.start_soon(collect)
                for run in range(3):
                    async with trioudp.open_udp_connection(
                        *SERVER, reliable=True, local_address=local
                    ) as conn:
                        for index in range(50):
                            await conn.send(b"%d/%d" % (run, index))
                        await conn.flush()
                await trio.sleep(5)
                nursery.cancel_scope.cancel()
            stats = server.statistics()
    assert received == [b"%d/%d" % (run, index) for run in range(3) for index in range(50)]
    assert stats.peers_opened == 3
    assert stats.datagrams_received == stats.datagrams_accounted


async def test_serve_handler_replies_are_delivered_before_the_peer_is_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = FakeNetwork(seed=6, faults=MODERATE)

    async def handler(connection: trioudp.Connection) -> None:
        message = await connection.receive()
        for index in range(100):
            await connection.send(message.payload + b" %d" % index)

    async with pair(network) as (server, conn), trio.open_nursery() as nursery:
        await nursery.start(server.serve, handler)
        await conn.send(b"ask")
        replies = [(await conn.receive()).payload for _ in range(100)]
        nursery.cancel_scope.cancel()
    assert replies == [b"ask %d" % index for index in range(100)]


async def test_reliable_is_refused_where_it_cannot_work() -> None:
    with pytest.raises(ValueError, match="ordered=False"):
        trioudp.Config(reliable=True, ordered=False)
    with pytest.raises(ValueError, match="framing=False"):
        trioudp.Config(reliable=True, framing=False)
    with pytest.raises(ValueError, match="keepalive must be a number of seconds from 15"):
        trioudp.Config(keepalive=1.0)
    with pytest.raises(ValueError, match="unicast"):
        async with trioudp.open_multicast("239.255.0.1", 4242, reliable=True):
            pass  # pragma: no cover


async def test_keepalives_and_state_work_without_reliable_mode(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Liveness is for every connection: an unreliable client's PINGs are
    answered by an unreliable server, and a silent server goes IDLE then LOST."""
    network = FakeNetwork(seed=7)
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER) as server,
            trioudp.open_udp_connection(*SERVER, keepalive=20.0, dead_timeout=70.0) as conn,
        ):
            with trio.fail_after(21):
                await conn.state.wait_value(trioudp.ConnectionState.ESTABLISHED)
            assert server.statistics().datagrams_control >= 1  # the PING, answered
            network.set_faults(Faults(loss=1.0))
            await conn.state.wait_value(trioudp.ConnectionState.IDLE)
            await conn.state.wait_value(trioudp.ConnectionState.LOST)
            network.set_faults(Faults())
            with trio.fail_after(21):
                await conn.state.wait_value(trioudp.ConnectionState.ESTABLISHED)


async def test_a_peer_that_came_back_is_watched_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """dead_timeout without keepalive: LOST after the silence, ESTABLISHED when
    the peer speaks, and LOST again after the next silence (its timer was
    once not started again, so it stayed ESTABLISHED for good)."""
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER, idle_timeout=None) as server,
            trioudp.open_udp_connection(*SERVER, dead_timeout=5) as conn,
        ):
            await conn.send(b"hi")
            with trio.fail_after(1):
                message = await server.receive()
            for _ in range(2):
                await message.reply(b"here")
                with trio.fail_after(1):
                    await conn.state.wait_value(trioudp.ConnectionState.ESTABLISHED)
                start = trio.current_time()
                await conn.state.wait_value(trioudp.ConnectionState.LOST)
                assert trio.current_time() - start == pytest.approx(5, abs=0.01)


async def test_raw_mode_watches_liveness_but_sends_no_pings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """In raw mode every datagram is data, so a plain UDP peer that keeps
    talking stays ESTABLISHED under dead_timeout; keepalive, which would send
    it trioudp PINGs, is refused."""
    with pytest.raises(ValueError, match="keepalive sends trioudp PING frames"):
        trioudp.Config(framing=False, keepalive=15)
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER, framing=False, dead_timeout=3) as server,
            trioudp.open_udp_connection(*SERVER, framing=False) as plain,
        ):
            for _ in range(10):
                await plain.send(b"still here")
                await trio.sleep(1)
            (connection,) = server.connections.values()
            states = [connection.state.value]
            await trio.sleep(4)
            states.append(connection.state.value)
            assert states == [trioudp.ConnectionState.ESTABLISHED, trioudp.ConnectionState.LOST]
            assert server.statistics().pings_sent == 0


async def test_reliable_mode_with_a_key(autojump_clock: trio.testing.MockClock) -> None:
    key = bytes(range(32))
    sent = payloads(500, 8)
    received, client, server = await transfer(FakeNetwork(seed=8, faults=HARSH), sent, key=key)
    assert received == sent
    assert client.messages_acked == len(sent)
    assert server.datagrams_unauthenticated > 0  # the damaged ones, refused by their tag
    assert server.datagrams_crc_error == 0


async def test_a_restarted_receiver_gets_the_rest_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server restarts mid-transfer. The client's session goes on, and each
    frame names its oldest unacknowledged message, so the new server starts
    there: the two servers together received every message, each in order.
    The new one may get again a few the old one received but had not yet
    acknowledged (at-least-once across a receiver's restart), never more than
    one window of them."""
    network = FakeNetwork(seed=9, faults=MODERATE)
    sent = [b"%d" % index for index in range(3000)]
    first: list[bytes] = []
    second: list[bytes] = []
    with network.installed():
        async with trioudp.open_udp_connection(*SERVER, reliable=True) as conn:
            flushed = trio.Event()

            async def send_all() -> None:
                for payload in sent:
                    await conn.send(payload)
                await conn.flush()
                flushed.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_all)
                for received, last in ((first, sent[999]), (second, sent[-1])):
                    async with trioudp.open_udp_server(*SERVER, reliable=True) as server:
                        async for message in server:
                            received.append(message.payload)
                            if message.payload == last:
                                break
                        # What this server acknowledged is its application's
                        # to take before it closes (as with TCP, unread data
                        # dies with the socket).
                        with contextlib.suppress(trio.WouldBlock):
                            while True:
                                received.append(server.receive_nowait().payload)
                        if received is second:
                            await flushed.wait()  # the last ACKs reach the client
            assert conn.statistics().messages_acked == len(sent)
    assert first == sent[: len(first)]
    numbers = [int(payload) for payload in second]
    assert numbers == sorted(set(numbers))  # in order, no duplicates
    assert set(numbers) >= set(range(len(first), 3000))  # nothing lost across the restart
    again = [number for number in numbers if number < len(first)]
    assert len(again) <= 256


async def test_a_handler_whose_peer_vanished_does_not_end_serve(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """serve() flushes what a handler sent when it returns; if that peer is
    gone, the failure is counted and the server goes on serving the others."""
    network = FakeNetwork(seed=10)
    vanishing = "10.0.0.7"
    staying = "10.0.0.8"

    async def handler(connection: trioudp.Connection) -> None:
        message = await connection.receive()
        await connection.send(b"re: " + message.payload)

    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER, reliable=True) as server,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(server.serve, handler)
            network.set_faults(Faults(loss=1.0), source=SERVER[0], destination=vanishing)
            async with trioudp.open_udp_connection(
                *SERVER, reliable=True, local_address=(vanishing, 7000)
            ) as gone:
                await gone.send(b"one")
                await trio.sleep(30)  # virtual: the server gives up on it meanwhile
            assert server.statistics().messages_failed == 1
            async with trioudp.open_udp_connection(
                *SERVER, reliable=True, local_address=(staying, 7000)
            ) as conn:
                await conn.send(b"two")
                assert (await conn.receive()).payload == b"re: two"
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("size", "count"), [(100_000, 1), (1000, 100)])
async def test_a_large_reply_whose_first_flight_is_lost_still_arrives(
    autojump_clock: trio.testing.MockClock, size: int, count: int
) -> None:
    """A 20-byte request and a 100 KB reply, the whole first flight lost (the
    link back down for 0.3 s). The amplification limit held every
    retransmission and probe towards the unvalidated client, which had nothing
    to acknowledge: the reply failed at give_up_timeout. Now a probe round
    that cannot send a fragment sends a PING, the client's ACK to it (naming
    our session) validates the address, and the reply goes on."""
    network = FakeNetwork()
    client_address = ("10.0.0.2", 6000)
    with network.installed():
        async with trioudp.open_udp_server(*SERVER, reliable=True) as server:

            async def handler(connection: trioudp.Connection) -> None:
                async for _message in connection:
                    for index in range(count):
                        await connection.send(bytes([index % 256]) * size)
                    await connection.flush()
                    return

            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve, handler)
                down = Faults(loss=1.0)
                network.set_faults(down, source=SERVER[0], destination=client_address[0])

                async def heal() -> None:
                    await trio.sleep(0.3)
                    network.set_faults(CLEAN, source=SERVER[0], destination=client_address[0])

                nursery.start_soon(heal)
                got = 0
                async with trioudp.open_udp_connection(
                    *SERVER, local_address=client_address, reliable=True
                ) as client:
                    await client.send(b"r" * 20)
                    with trio.fail_after(8):  # give_up_timeout is 10 s
                        while got < size * count:
                            got += len((await client.receive()).payload)
                stats = server.statistics()
                assert stats.messages_failed == 0
                assert stats.datagrams_received == stats.datagrams_accounted
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("probe_path_mtu", [False, True])
@pytest.mark.parametrize("seed", [24, 28])
async def test_a_tight_budget_on_a_lossy_path_never_stalls(
    autojump_clock: trio.testing.MockClock, seed: int, probe_path_mtu: bool
) -> None:
    # Messages up to 300 KB (some sent in batches, some sends cancelled)
    # through a receiver whose budget holds about two of them, over a path
    # that loses, reorders and duplicates. The receiver refuses a message
    # while the one before it is incomplete; a probe timeout once sent the
    # refused message's fragments again and again while the fragment the
    # receiver waited for sat behind them, for good (these two seeds).
    rng = random.Random(seed)
    payloads: list[bytes] = []
    for index in range(40):
        kind = rng.random()
        if kind < 0.4:
            size = rng.randint(0, 900)
        elif kind < 0.7:
            size = rng.randint(1100, 12000)
        elif kind < 0.95:
            size = rng.randint(12000, 120000)
        else:
            size = rng.randint(120000, 300000)
        payloads.append(index.to_bytes(4, "big") + rng.randbytes(size))
    options: dict[str, Any] = {
        "reliable": True,
        "key": b"k" * 32,
        "reorder_window": 2,
        "peer_buffer_bytes": 700_000,
        "max_message_size": 310_000,
        "probe_path_mtu": probe_path_mtu,
    }
    faults = Faults(mtu=8972, reorder=0.2, delay=0.01, jitter=0.01, duplicate=0.05, loss=0.05)
    got: list[tuple[str, bytes]] = []
    sent: list[tuple[str, bytes]] = []
    with FakeNetwork(seed=seed, faults=faults).installed():
        async with (
            trioudp.open_udp_server(*SERVER, **options) as server,
            trio.open_nursery() as nursery,
        ):

            async def sink() -> None:
                async for message in server:
                    got.append((message.topic, message.payload))

            nursery.start_soon(sink)
            async with trioudp.open_udp_connection(*SERVER, **options) as client:
                with trio.fail_after(200):
                    index = 0
                    while index < len(payloads):
                        topic = f"t{index % 3}"
                        if rng.random() < 0.3:
                            batch = payloads[index : index + rng.randint(2, 6)]
                            await client.send_batch(batch, topic=topic)
                            sent.extend((topic, payload) for payload in batch)
                            index += len(batch)
                            continue
                        if rng.random() < 0.1:
                            with trio.move_on_after(0) as cancelled:
                                await client.send(payloads[index], topic=topic)
                            if not cancelled.cancelled_caught:
                                sent.append((topic, payloads[index]))
                        else:
                            await client.send(payloads[index], topic=topic)
                            sent.append((topic, payloads[index]))
                        index += 1
                    await client.flush()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert got == sent


async def test_a_handler_that_returns_at_once_gets_its_message_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """serve() forgets a peer whose handler returned: the ACK its reliable
    stream still owed went with it, so the sender sent the message again and
    a new handler got it a second time."""
    network = FakeNetwork(seed=4)
    seen: list[bytes] = []

    async def one_message(connection: trioudp.Connection) -> None:
        seen.append((await connection.receive()).payload)

    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER, reliable=True) as server,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(server.serve, one_message)
            async with trioudp.open_udp_connection(*SERVER, reliable=True) as conn:
                await conn.send(b"once")
                start = trio.current_time()
                await conn.flush()
                assert trio.current_time() - start < 0.1
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(5)  # any retransmission would have come by now
            assert seen == [b"once"]
            nursery.cancel_scope.cancel()
