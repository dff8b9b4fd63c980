"""The trio layer on real loopback sockets."""

from __future__ import annotations

import array
import asyncio
import os
import random
import socket
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

import trioudp
from trioudp._frame import encode_message
from trioudp._peers import RESTART_QUIET
from trioudp._sockets import AddressBook
from trioudp.testing import FakeNetwork

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

LOCAL = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, 0))
        return int(sock.getsockname()[1])


async def echo(server: trioudp.UDPServer) -> None:
    async for message in server:
        await message.reply(message.payload)


@pytest.fixture
async def echo_server() -> AsyncIterator[trioudp.UDPServer]:
    async with trioudp.open_udp_server(LOCAL, 0) as server, trio.open_nursery() as nursery:
        nursery.start_soon(echo, server)
        yield server
        nursery.cancel_scope.cancel()


async def test_echo_of_every_size(echo_server: trioudp.UDPServer) -> None:
    host, port = echo_server.local_address[:2]
    sizes = [0, 1, 1200 - 21, 1200 - 20, 1200 - 19, 50_000, 1024 * 1024]
    rng = random.Random(7)
    async with trioudp.open_udp_connection(host, port) as conn:
        for size in sizes:
            payload = rng.randbytes(size)
            await conn.send(payload)
            with trio.fail_after(10):
                reply = await conn.receive()
            assert reply.payload == payload
            assert reply.address == (host, port)
        stats = conn.statistics()
        assert stats.messages_sent == stats.messages_delivered == len(sizes)
        assert stats.datagrams_received == stats.datagrams_accounted
    server_stats = echo_server.statistics()
    assert server_stats.messages_delivered == len(sizes)
    assert server_stats.datagrams_received == server_stats.datagrams_accounted


async def test_serve_runs_one_handler_per_peer() -> None:
    seen: list[trioudp.Address] = []

    async def handler(connection: trioudp.Connection, prefix: bytes) -> None:
        seen.append(connection.address)
        async for message in connection:
            assert message.address == connection.address
            await connection.send(prefix + message.payload)

    async with trioudp.open_udp_server(LOCAL, 0) as server, trio.open_nursery() as nursery:
        await nursery.start(server.serve, handler, b"re:")
        port = server.local_address[1]
        async with (
            trioudp.open_udp_connection(LOCAL, port) as a,
            trioudp.open_udp_connection(LOCAL, port) as b,
        ):
            for i in range(5):
                await a.send(b"a%d" % i)
                await b.send(b"b%d" % i)
            with trio.fail_after(5):
                assert [(await a.receive()).payload for _ in range(5)] == [
                    b"re:a%d" % i for i in range(5)
                ]
                assert [(await b.receive()).payload for _ in range(5)] == [
                    b"re:b%d" % i for i in range(5)
                ]
            assert sorted(seen) == sorted([a.local_address, b.local_address])
            assert set(server.connections) == set(seen)
            assert server.connections[a.local_address].statistics().messages_delivered == 5
            with pytest.raises(TypeError):
                server.connections[("1.2.3.4", 5)] = server.connections[a.local_address]  # type: ignore[index]
            with pytest.raises(trio.BusyResourceError):
                await server.serve(handler, b"again")
        nursery.cancel_scope.cancel()


async def test_handler_error_surfaces_in_the_callers_task() -> None:
    async def handler(connection: trioudp.Connection) -> None:
        await connection.receive()
        raise ValueError("handler failed")

    async def scenario() -> None:
        async with trioudp.open_udp_server(LOCAL, 0) as server, trio.open_nursery() as nursery:
            await nursery.start(server.serve, handler)
            async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
                await conn.send(b"x")
                await trio.sleep_forever()

    with pytest.raises(ValueError, match="handler failed"):
        await scenario()


async def test_closing_the_server_cancels_the_handlers_and_ends_serve() -> None:
    """aclose() from another task while serve() runs: the handlers are
    cancelled and serve() raises ClosedResourceError. serve() once slept on
    forever, and the nursery around it never exited."""
    handled = trio.Event()
    cancelled: list[bool] = []

    async def handler(connection: trioudp.Connection) -> None:
        try:
            await connection.receive()
            handled.set()
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise

    async def close(server: trioudp.UDPServer) -> None:
        async with trioudp.open_udp_connection(*server.local_address[:2]) as client:
            await client.send(b"x")
            await handled.wait()
        await server.aclose()

    async with trioudp.open_udp_server(LOCAL, 0) as server, trio.open_nursery() as nursery:
        nursery.start_soon(close, server)
        with trio.fail_after(5), pytest.raises(trio.ClosedResourceError, match="serve"):
            await server.serve(handler)
    assert cancelled == [True]


async def test_serve_runs_at_most_max_peers_handlers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Handlers that go on after their peer is gone (idle, restarted) once
    piled up without bound. A handler for a new peer now cancels those, oldest
    first, so that no more than max_peers run; live peers' handlers are never
    touched."""
    running = 0
    most = 0
    cancelled = 0

    async def handler(connection: trioudp.Connection) -> None:
        nonlocal running, most, cancelled
        running += 1
        most = max(most, running)
        try:
            await connection.receive()
            await trio.sleep_forever()  # on and on, whatever becomes of the peer
        except trio.Cancelled:
            cancelled += 1
            raise
        finally:
            running -= 1

    with FakeNetwork().installed():
        async with (
            trioudp.open_udp_server("10.0.0.1", 5000, max_peers=3, idle_timeout=1) as server,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(server.serve, handler)
            for number in range(10):
                address = ("10.0.0.2", 6000 + number)
                async with trioudp.open_udp_connection(
                    "10.0.0.1", 5000, local_address=address
                ) as client:
                    await client.send(b"hello")
                    await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(2)  # its peer goes idle: forgotten
            assert most == 3
            assert cancelled == 7
            nursery.cancel_scope.cancel()


async def test_raw_mode_talks_to_plain_sockets() -> None:
    async with trioudp.open_udp_server(LOCAL, 0, framing=False) as server:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            await plain.bind((LOCAL, 0))
            await plain.sendto(b"ping", server.local_address)
            with trio.fail_after(5):
                message = await server.receive()
            assert (message.payload, message.sequence, message.address) == (
                b"ping",
                None,
                plain.getsockname(),
            )
            await message.reply(b"pong")
            with trio.fail_after(5):
                assert await plain.recv(100) == b"pong"
            # And a raw client connection to the plain socket.
            async with trioudp.open_udp_connection(*plain.getsockname(), framing=False) as conn:
                await conn.send(b"hello")
                with trio.fail_after(5):
                    data, address = await plain.recvfrom(100)
                assert (data, address) == (b"hello", conn.local_address)
                await plain.sendto(b"raw reply", address)
                with trio.fail_after(5):
                    assert (await conn.receive()).payload == b"raw reply"
                assert conn.statistics().datagrams_delivered == 1


async def test_receive_is_cancel_safe(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        trioudp.open_udp_server(LOCAL, 0) as server,
        trioudp.open_udp_connection(*server.local_address[:2]) as conn,
    ):
        await conn.send(b"hello")
        (peer,) = await server.receive_batch()

        async def sender() -> None:
            for i in range(60):
                await peer.reply(b"%d" % i)
                await trio.sleep(0.013)

        received: list[bytes] = []
        timeouts = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            while len(received) < 60:
                with trio.move_on_after(0.005) as scope:
                    received.append((await conn.receive()).payload)
                timeouts += scope.cancelled_caught
        assert received == [b"%d" % i for i in range(60)]
        assert timeouts > 60


async def test_corrupted_datagrams_are_counted_never_delivered(
    echo_server: trioudp.UDPServer,
) -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        await plain.bind((LOCAL, 0))
        good = encode_message(42, 0, b"intact", 1200)[0]
        damaged = bytearray(encode_message(42, 1, b"damaged", 1200)[0])
        damaged[18] ^= 0x04
        await plain.sendto(good, echo_server.local_address)
        await plain.sendto(bytes(damaged), echo_server.local_address)
        await plain.sendto(encode_message(42, 1, b"second", 1200)[0], echo_server.local_address)
        with trio.fail_after(5):
            replies = [await plain.recv(2000) for _ in range(2)]
        assert [r[16:-4] for r in replies] == [b"intact", b"second"]
    stats = echo_server.statistics()
    assert stats.datagrams_crc_error == 1
    assert stats.messages_delivered == 2
    assert stats.datagrams_received == stats.datagrams_accounted


async def test_garbage_never_kills_the_server(echo_server: trioudp.UDPServer) -> None:
    rng = random.Random(3)
    count = 2000
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        await plain.bind((LOCAL, 0))
        for i in range(count):
            size = rng.choice([0, 1, 3, 19, 20, 27, 28, 100, 1200, 9000])
            junk = bytearray(rng.randbytes(size))
            if i % 3 == 0 and size >= 4:
                junk[:3] = b"tU\x01"  # past the magic, into the CRC check
            await plain.sendto(bytes(junk), echo_server.local_address)
        # Datagrams from one socket arrive in order: once this is echoed, all
        # the garbage before it has been read.
        await plain.sendto(encode_message(9, 0, b"still alive", 1200)[0], echo_server.local_address)
        with trio.fail_after(5):
            reply = await plain.recv(2000)
        assert reply[16:-4] == b"still alive"
    stats = echo_server.statistics()
    refused = stats.datagrams_crc_error + stats.datagrams_malformed
    assert refused + stats.datagrams_unauthenticated == count
    assert stats.datagrams_received == count + 1 == stats.datagrams_accounted
    assert stats.peers == 1


async def test_restarted_client_with_a_new_session_is_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that restarts (a new session from the same address) is served
    as a new connection once its old session has been silent RESTART_QUIET;
    until then the new session's datagrams are dropped as stale, so that one
    datagram with a made-up session cannot silence a client that is talking."""
    client = ("10.0.0.2", 6000)
    with FakeNetwork().installed():
        async with trioudp.open_udp_server("10.0.0.1", 5000) as server:
            async with trioudp.open_udp_connection("10.0.0.1", 5000, local_address=client) as first:
                await first.send(b"one")
                await first.send(b"two")
                assert [m.sequence for m in await _receive(server, 2)] == [0, 1]
            old = server.connections[client]
            async with trioudp.open_udp_connection(
                "10.0.0.1", 5000, local_address=client
            ) as second:
                await second.send(b"too soon")
                await trio.testing.wait_all_tasks_blocked()
                assert server.statistics().datagrams_stale_session == 1
                assert old.ended is None
                await trio.sleep(RESTART_QUIET)
                await second.send(b"one again")
                (message,) = await _receive(server, 1)
        assert (message.payload, message.sequence) == (b"one again", 1)
        assert old.ended == "replaced"
        assert server.connections[client] is not old
        assert server.statistics().session_changes == 1


async def _receive(receiver: trioudp.UDPServer, count: int) -> list[trioudp.Message]:
    return [await receiver.receive() for _ in range(count)]


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_closing_leaks_no_socket_and_no_task() -> None:
    before_fds = _open_fds()
    task = trio.lowlevel.current_task()
    before_nurseries = len(task.child_nurseries)
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            assert len(_open_fds()) == len(before_fds) + 2
            await conn.send(b"x")
            with trio.fail_after(5):
                await server.receive()
        with pytest.raises(trio.ClosedResourceError):
            await conn.send(b"after")
        with pytest.raises(trio.ClosedResourceError):
            conn.receive_nowait()
    assert _open_fds() == before_fds
    assert len(task.child_nurseries) == before_nurseries
    with pytest.raises(trio.ClosedResourceError):
        await server.receive()
    with pytest.raises(trio.ClosedResourceError):
        await server.send((LOCAL, 9), b"after")


async def test_idle_peer_ends_its_connection(autojump_clock: trio.testing.MockClock) -> None:
    ended: list[str | None] = []
    done = trio.Event()

    async def handler(connection: trioudp.Connection) -> None:
        async for _message in connection:
            pass
        ended.append(connection.ended)
        done.set()

    async with (
        trioudp.open_udp_server(LOCAL, 0, idle_timeout=5.0) as server,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(server.serve, handler)
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            start = trio.current_time()
            await conn.send(b"hello")
            await done.wait()
            assert ended == ["idle"]
            assert trio.current_time() - start == pytest.approx(5.0, abs=0.01)
            assert server.connections == {}
            assert server.statistics().peers_closed == 1
        nursery.cancel_scope.cancel()


async def test_unreachable_peer_is_reported_on_the_client() -> None:
    async with trioudp.open_udp_connection(LOCAL, free_port()) as conn:
        await conn.send(b"anyone?")
        with trio.fail_after(5), pytest.raises(trioudp.UnreachableError) as info:
            await conn.receive()
        assert info.value.address == conn.address
        assert "still usable" in str(info.value)
        # The connection goes on working; the next ICMP error is reported again.
        await conn.send(b"still there?")
        with trio.fail_after(5), pytest.raises(trioudp.UnreachableError):
            await conn.receive()
        assert conn.statistics().unreachable_errors >= 2


async def test_unreachable_errors_do_not_stop_a_server() -> None:
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        await server.send((LOCAL, free_port()), b"nobody")
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            await conn.send(b"ok")
            with trio.fail_after(5):
                assert (await server.receive()).payload == b"ok"


@pytest.mark.ipv6
async def test_ipv6_echo() -> None:
    async with trioudp.open_udp_server("::1", 0) as server, trio.open_nursery() as nursery:
        nursery.start_soon(echo, server)
        async with trioudp.open_udp_connection("::1", server.local_address[1]) as conn:
            await conn.send(b"six" * 1000)
            with trio.fail_after(5):
                reply = await conn.receive()
        assert reply.payload == b"six" * 1000
        assert len(reply.address) == 4
        nursery.cancel_scope.cancel()


@pytest.mark.ipv6
async def test_dual_stack_server_takes_ipv4_and_sends_to_ipv4_addresses() -> None:
    async with trioudp.open_udp_server(None, 0) as server:
        port = server.local_address[1]
        async with trioudp.open_udp_connection(LOCAL, port) as conn:
            await conn.send(b"v4")
            with trio.fail_after(5):
                message = await server.receive()
            assert message.address[0] == "::ffff:127.0.0.1"
            # A plain IPv4 address finds the same peer.
            await server.send(conn.local_address, b"back")
            with trio.fail_after(5):
                assert (await conn.receive()).payload == b"back"
            assert list(server.connections) == [message.address]


async def test_server_can_speak_first_and_resolves_names() -> None:
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
            await listener.bind((LOCAL, 0))
            await server.send(("localhost", listener.getsockname()[1]), b"first")
            with trio.fail_after(5):
                data = await listener.recv(2000)
            assert data[16:-4] == b"first"
            assert list(server.connections) == [listener.getsockname()]


async def test_from_socket_adopts_a_bound_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCAL, 0))
    address = sock.getsockname()
    async with trioudp.from_socket(sock) as server:
        assert server.local_address == address
        async with trioudp.open_udp_connection(*address) as conn:
            await conn.send(b"adopted")
            with trio.fail_after(5):
                assert (await server.receive()).payload == b"adopted"
    assert sock.fileno() == -1


async def test_from_socket_rejects_what_it_cannot_use() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unbound,
        pytest.raises(ValueError, match=r"needs a bound socket: call sock.bind"),
    ):
        async with trioudp.from_socket(unbound):
            pass
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        pytest.raises(ValueError, match=r"needs a UDP socket"),
    ):
        async with trioudp.from_socket(tcp):
            pass


@pytest.mark.parametrize(("policy", "kept"), [("drop_oldest", [3, 4]), ("drop_newest", [0, 1])])
async def test_full_channel_drops_by_policy_and_counts(policy: str, kept: list[int]) -> None:
    options = trioudp.Config(channel_capacity=2, overflow=policy)  # type: ignore[arg-type]
    async with (
        trioudp.open_udp_server(LOCAL, 0, config=options) as server,
        trioudp.open_udp_connection(*server.local_address[:2]) as conn,
    ):
        for i in range(5):
            await conn.send(b"%d" % i)
        await trio.testing.wait_all_tasks_blocked()
        batch = await server.receive_batch(10)
        assert [m.sequence for m in batch] == kept
        with pytest.raises(trio.WouldBlock):
            server.receive_nowait()
        stats = server.statistics()
        assert (stats.messages_delivered, stats.messages_overflow_dropped) == (2, 3)
        assert stats.datagrams_received == stats.datagrams_accounted


async def test_large_message_with_a_tiny_send_buffer(echo_server: trioudp.UDPServer) -> None:
    payload = random.Random(5).randbytes(1024 * 1024)
    async with trioudp.open_udp_connection(
        *echo_server.local_address[:2], send_buffer_size=4096
    ) as conn:
        await conn.send(payload)
        with trio.fail_after(10):
            assert (await conn.receive()).payload == payload


async def test_bad_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="max_datagram_size must be an integer from 64 to 65507"):
        async with trioudp.open_udp_server(LOCAL, 0, max_datagram_size=10):
            pass
    with pytest.raises(ValueError, match="port must be an integer from 0 to 65535"):
        async with trioudp.open_udp_server(LOCAL, 70000):
            pass
    with pytest.raises(TypeError, match="unknown trioudp option"):
        async with trioudp.open_udp_connection(LOCAL, 9, nonsense=1):  # type: ignore[call-arg]
            pass
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        with pytest.raises(OSError, match="already in use"):
            async with trioudp.open_udp_server(LOCAL, server.local_address[1]):
                pass
        with pytest.raises(ValueError, match="max_message_size"):
            await server.send((LOCAL, 9), b"x" * (1024 * 1024 + 1))
        with pytest.raises(TypeError, match=r"\(host, port\) tuple"):
            await server.send("127.0.0.1:9", b"x")
        with pytest.raises(ValueError, match="max_messages"):
            await server.receive_batch(0)


async def test_link_local_scope_ids_are_kept() -> None:
    book = AddressBook(socket.AF_INET6)
    scope = socket.if_nametoindex("lo")
    # The socket module reports a link-local peer as (host, port, flowinfo, scope
    # id) with the scope in the tuple, not the host; a "%lo" suffix becomes that.
    assert await book.lookup(("fe80::1%lo", 5)) == ("fe80::1", 5, 0, scope)
    assert await book.lookup(("fe80::1", 5, 0, scope)) == ("fe80::1", 5, 0, scope)
    assert await book.lookup(("127.0.0.1", 5)) == ("::ffff:127.0.0.1", 5, 0, 0)


async def test_a_stalled_consumer_does_not_stall_other_peers() -> None:
    stalled = trio.Event()

    async def handler(connection: trioudp.Connection) -> None:
        first = await connection.receive()
        if first.payload == b"slow":
            stalled.set()
            await trio.sleep_forever()  # never reads again
        await first.reply(first.payload)
        async for message in connection:
            await message.reply(message.payload)

    async with (
        trioudp.open_udp_server(LOCAL, 0, channel_capacity=4) as server,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(server.serve, handler)
        target = server.local_address[:2]
        async with (
            trioudp.open_udp_connection(*target) as slow,
            trioudp.open_udp_connection(*target) as fast,
        ):
            await slow.send(b"slow")
            await stalled.wait()
            for i in range(50):
                await slow.send(b"flood %d" % i)
                await fast.send(b"%d" % i)
                with trio.fail_after(5):
                    assert (await fast.receive()).payload == b"%d" % i
            slow_stats = server.connections[slow.local_address].statistics()
            assert slow_stats.messages_overflow_dropped == 50 - 4
            assert server.connections[fast.local_address].statistics().messages_delivered == 50
        nursery.cancel_scope.cancel()


async def test_unreachable_error_keeps_its_place_among_messages() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCAL, 0))
    async with trioudp.open_udp_connection(*sock.getsockname()) as conn:
        async with trioudp.from_socket(sock) as server:
            await conn.send(b"hello")
            with trio.fail_after(5):
                await (await server.receive()).reply(b"one")
            await trio.testing.wait_all_tasks_blocked()
        # The server is gone: this datagram comes back as an ICMP error.
        await conn.send(b"anyone?")
        await trio.testing.wait_all_tasks_blocked()
        assert [m.payload for m in await conn.receive_batch()] == [b"one"]
        with trio.CancelScope() as scope:
            scope.cancel()
            await conn.receive()  # cancelled before it takes anything
        with trio.fail_after(5), pytest.raises(trioudp.UnreachableError):
            await conn.receive()
        with pytest.raises(trio.WouldBlock):
            conn.receive_nowait()


@pytest.mark.parametrize("reliable", [False, True], ids=["unreliable", "reliable"])
async def test_send_batch_sends_many_small_messages_in_few_datagrams(reliable: bool) -> None:
    payloads = [b"reading %d" % i for i in range(500)] + [b"z" * 3000, b"last"]
    async with (
        trioudp.open_udp_server(LOCAL, 0, reliable=reliable) as server,
        trioudp.open_udp_connection(*server.local_address[:2], reliable=reliable) as conn,
    ):
        await conn.send_batch(payloads)
        await conn.send_batch(iter([b"from an iterator"]))
        with trio.fail_after(10):
            got = [(await server.receive()).payload for _ in range(len(payloads) + 1)]
        assert got == [*payloads, b"from an iterator"]
        stats = conn.statistics()
        assert stats.messages_sent == len(payloads) + 1
        assert stats.datagrams_sent < 60


async def test_send_batch_in_raw_mode_sends_one_datagram_per_payload() -> None:
    async with trioudp.open_udp_server(LOCAL, 0, framing=False) as server:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            await plain.bind((LOCAL, 0))
            payloads = [b"%04d" % i for i in range(100)] + [b"short"]
            await server.send_batch_to(plain.getsockname(), payloads)
            with trio.fail_after(5):
                got = [await plain.recv(100) for _ in payloads]
            assert got == payloads


async def test_send_batch_rejects_bad_input_before_sending_anything() -> None:
    async with (
        trioudp.open_udp_server(LOCAL, 0, max_message_size=100) as server,
        trioudp.open_udp_connection(*server.local_address[:2], max_message_size=100) as conn,
    ):
        with pytest.raises(TypeError, match="iterable of payloads"):
            await conn.send_batch(b"one payload")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at least one payload"):
            await conn.send_batch([])
        with pytest.raises(ValueError, match="larger than max_message_size"):
            await conn.send_batch([b"fine", b"x" * 101])
        with pytest.raises(TypeError, match="bytes-like"):
            await server.send_batch_to(conn.local_address, [b"fine", "text"])  # type: ignore[list-item]
        assert conn.statistics().messages_sent == 0
        assert server.statistics().messages_sent == 0


async def test_state_read_first_late_is_the_current_one() -> None:
    # A connection makes its AsyncValue only when asked (servers hold many
    # connections nobody asks); asked late, it gives the state at that time.
    clients: list[trioudp.Connection] = []
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        for _ in range(2):
            async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
                clients.append(conn)
                await conn.send(b"hi")
                with trio.fail_after(5):
                    await server.receive()
        asked, unasked = server.connections.values()
        assert [asked.state.value] == [trioudp.ConnectionState.ESTABLISHED]
    closed = trioudp.ConnectionState.CLOSED
    assert [c.state.value for c in (unasked, asked, *clients)] == [closed] * 4


async def test_iterating_waiting_messages_still_lets_other_tasks_run() -> None:
    count = 64
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            await conn.send_batch([b"%d" % i for i in range(count)])
            with trio.fail_after(5):
                first = await server.receive()
            await trio.testing.wait_all_tasks_blocked()
            assert server.statistics().messages_delivered == count
        ticks = 0
        seen: list[int] = []

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.lowlevel.checkpoint()
            start = ticks
            got = [first.payload]
            async for message in server:
                got.append(message.payload)
                seen.append(ticks - start)
                if len(got) == count:
                    break
            nursery.cancel_scope.cancel()
        assert got == [b"%d" % i for i in range(count)]
        # Other tasks ran about once per 16 messages taken, not after each one.
        assert (count - 1) // 16 - 1 <= seen[-1] <= (count - 1) // 16 + 1
        # And each receive is still a cancellation point.
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await server.receive()


async def test_a_connection_never_talks_to_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    # Connecting to a free local port can give the socket that port as its own
    # (the kernel's choice): made to happen here by binding the first socket so.
    port = free_port()
    made: list[socket.socket] = []

    def new_socket(family: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if not made:
            sock.bind((LOCAL, port))
        made.append(sock)
        return sock

    monkeypatch.setattr("trioudp._sockets.new_socket", new_socket)
    async with trioudp.open_udp_connection(LOCAL, port) as conn:
        assert len(made) == 2
        assert made[0].fileno() == -1  # the self-connected one was closed
        assert conn.local_address[1] != port
        await conn.send(b"anyone?")
        with trio.fail_after(5), pytest.raises(trioudp.UnreachableError):
            await conn.receive()


async def test_a_socket_that_keeps_connecting_to_itself_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()

    def new_socket(family: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOCAL, port))
        return sock

    monkeypatch.setattr("trioudp._sockets.new_socket", new_socket)
    with pytest.raises(OSError, match="connected to itself; pass local_address="):
        async with trioudp.open_udp_connection(LOCAL, port):
            pass


async def test_careless_calls_get_errors_that_name_the_argument_and_the_fix() -> None:
    """Issue 15: each of these once failed deep inside (or not at all)."""
    with pytest.raises(TypeError, match=r"host must name the peer to connect to.*got None"):
        async with trioudp.open_udp_connection(None, 9):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match=r"host must name the peer to connect to.*got ''"):
        async with trioudp.open_udp_connection("", 9):
            pass
    with pytest.raises(TypeError, match=r"host must name the peer.*got 123"):
        async with trioudp.open_udp_connection(123, 9):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match=r"host must be an address or name to bind to.*got 123"):
        async with trioudp.open_udp_server(123, 0):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="port must be the peer's port, 1 to 65535, got 0"):
        async with trioudp.open_udp_connection(LOCAL, 0):
            pass
    with pytest.raises(TypeError, match=r"port must be an integer .* got '9' \(str\)"):
        async with trioudp.open_udp_server(LOCAL, "9"):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match=r"Config.from_dict\(\) takes a mapping .* got NoneType"):
        trioudp.Config.from_dict(None)  # type: ignore[arg-type]


async def test_flush_after_close_raises_closed_resource_error() -> None:
    async with trioudp.open_udp_connection(LOCAL, 9) as conn:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await conn.flush()
    async with trioudp.open_udp_connection(LOCAL, 9, reliable=True) as conn:
        await conn.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await conn.flush()


async def test_serve_refuses_what_is_not_a_handler_and_names_a_plain_function() -> None:
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        with pytest.raises(TypeError, match=r"serve\(\) takes an async function.*got None"):
            await server.serve(None)  # type: ignore[arg-type]

        def plain(connection: trioudp.Connection) -> None:
            pass

        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            await conn.send(b"hello")
            with (
                trio.fail_after(5),
                pytest.raises(TypeError, match=r"serve\(\) handler '.*plain' returned NoneType"),
            ):
                await server.serve(plain)  # type: ignore[arg-type]


async def test_topics_of_the_wrong_kind_are_named() -> None:
    with pytest.raises(TypeError, match=r"topics is a collection of strings .* got int"):
        async with trioudp.open_udp_server(LOCAL, 0, topics=42):  # type: ignore[arg-type]
            pass
    async with trioudp.open_udp_connection(LOCAL, 9) as conn:
        with pytest.raises(ValueError, match="a topic must be valid text"):
            await conn.send(b"x", topic="\udcff")


def test_peer_lost_error_takes_a_reasons_string_value() -> None:
    error = trioudp.PeerLostError(("127.0.0.1", 9), "timeout", give_up_timeout=5)  # type: ignore[arg-type]
    assert error.reason is trioudp.LostReason.TIMEOUT
    assert "answered nothing for 5 s" in str(error)


async def test_unicast_calls_on_group_broadcast_and_wildcard_addresses_point_elsewhere() -> None:
    for host, hint in (("239.1.2.3", "open_multicast"), ("255.255.255.255", "open_broadcast")):
        with pytest.raises(ValueError, match=f"is (a|the) .* use {hint}"):
            async with trioudp.open_udp_connection(host, 9):
                pass
        with pytest.raises(ValueError, match=f"is (a|the) .* use {hint}"):
            async with trioudp.open_udp_server(host, 0):
                pass
    for wildcard in ("0.0.0.0", "::"):
        with pytest.raises(ValueError, match="means every interface, not a peer"):
            async with trioudp.open_udp_connection(wildcard, 9):
                pass


async def test_send_to_addresses_of_the_wrong_kind_are_named() -> None:
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        with pytest.raises(TypeError, match=r"an address is a \(host, port\) tuple, got \["):
            await server.send_to([LOCAL, 9], b"x")
        with pytest.raises(ValueError, match="port must be the peer's port, 1 to 65535, got 0"):
            await server.send_to((LOCAL, 0), b"x")
        with pytest.raises(ValueError, match="socket is IPv4 and cannot send to the IPv6"):
            await server.send_to(("::1", 9), b"x")


async def test_local_address_mistakes_name_local_address() -> None:
    for bad in ("127.0.0.1", 5000, (LOCAL,), (LOCAL, "0"), (None, 0)):
        with pytest.raises(TypeError, match="local_address must be a \\(host, port\\) tuple"):
            async with trioudp.open_udp_connection(LOCAL, 9, local_address=bad):  # type: ignore[arg-type]
                pass
    with pytest.raises(ValueError, match="port must be an integer from 0 to 65535"):
        async with trioudp.open_udp_connection(LOCAL, 9, local_address=(LOCAL, -1)):
            pass
    with pytest.raises(ValueError, match="is not an IPv4 address of this machine"):
        async with trioudp.open_udp_connection(LOCAL, 9, local_address=("::1", 0)):
            pass
    with pytest.raises(OSError, match=r"local_address .* not an address of this machine"):
        async with trioudp.open_udp_connection(LOCAL, 9, local_address=("192.0.2.1", 0)):
            pass
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        taken = (LOCAL, server.local_address[1])
        with pytest.raises(OSError, match=r"local_address .* already in use"):
            async with trioudp.open_udp_connection(LOCAL, 9, local_address=taken):
                pass


async def test_from_socket_refuses_a_connected_or_closed_socket_and_leaves_it_alone() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, 0))
        sock.connect((LOCAL, 9))
        with pytest.raises(ValueError, match="needs an unconnected socket"):
            async with trioudp.from_socket(sock):
                pass
    with pytest.raises(ValueError, match="this one is closed"):
        async with trioudp.from_socket(sock):
            pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, 0))
        with pytest.raises(TypeError, match="topics is a collection of strings"):
            async with trioudp.from_socket(sock, topics=42):  # type: ignore[arg-type]
                pass
        assert sock.fileno() != -1  # refused, and still the caller's
        with pytest.raises(ValueError, match=r"raw mode .* has no frames to authenticate"):
            async with trioudp.from_socket(sock, key=b"k" * 32, framing=False):
                pass
        assert sock.fileno() != -1


def test_opening_outside_trio_says_trioudp_runs_on_trio() -> None:
    async def under_asyncio() -> None:
        async with trioudp.open_udp_server(LOCAL, 0):
            pass  # pragma: no cover

    with pytest.raises(RuntimeError, match="trioudp runs on Trio: open its endpoints inside"):
        asyncio.run(under_asyncio())


async def test_send_batch_takes_any_bytes_like_object_for_one_payload() -> None:
    async with trioudp.open_udp_connection(LOCAL, 9) as conn:
        for one in (array.array("B", b"hi"), memoryview(b"hello"), b"x"):
            with pytest.raises(TypeError, match="not one payload; use send"):
                await conn.send_batch(one)  # type: ignore[arg-type]


async def test_serve_started_late_hands_each_peer_what_already_waited() -> None:
    """Datagrams that arrive before serve() starts (a worker that starts while
    its socket's buffer is full) go to their peers' handlers, in order; they
    stayed in the server's own queue, where no handler looked."""
    seen: list[bytes] = []
    done = trio.Event()

    async def handler(connection: trioudp.Connection) -> None:
        async for message in connection:
            seen.append(message.payload)
            if len(seen) == 4:
                done.set()

    async with (
        trioudp.open_udp_server(LOCAL, 0) as server,
        trioudp.open_udp_connection(*server.local_address[:2]) as conn,
    ):
        for index in range(3):
            await conn.send(b"%d" % index)
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().messages_delivered == 3
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, handler)
            await conn.send(b"3")
            with trio.fail_after(5):
                await done.wait()
            nursery.cancel_scope.cancel()
    assert seen == [b"0", b"1", b"2", b"3"]
