"""The socket is read as fast as the application takes messages (issue 14):
under a flood, what a consumer cannot take yet waits in the kernel rather than
being decoded and dropped; a consumer that stops taking does not stop the
reading for other peers; the kernel's own drops are counted."""

from __future__ import annotations

import contextlib
import socket

import pytest
import trio
import trio.testing

import trioudp
from trioudp._frame import encode_message
from trioudp._sockets import kernel_drops
from trioudp._transport import FIRST_BATCH
from trioudp.testing import FakeNetwork

SERVER = ("10.0.0.1", 5000)
PEER = ("10.0.0.2", 7000)
OTHER = ("10.0.0.3", 7000)
CONSUMERS = [
    "async for",
    "receive() in fail_after",
    "receive_batch()",
    "serve() handler",
    "async for, awaiting 1 time",
    "async for, awaiting 3 times",
    "async for, through a memory channel",
]


async def take(server: trioudp.UDPServer, how: str, count: int) -> list[int | None]:
    """The sequence numbers of ``count`` messages, taken ``how``."""
    got: list[int | None] = []
    if how == "async for":
        async for message in server:
            got.append(message.sequence)
            if len(got) == count:
                break
    elif how == "receive() in fail_after":
        while len(got) < count:
            with trio.fail_after(1):
                got.append((await server.receive()).sequence)
    elif how.startswith("async for, awaiting"):
        # A consumer that awaits a few times per message: as one that sends a
        # reply or passes each message on does.
        awaits = int(how.split()[3])
        async for message in server:
            got.append(message.sequence)
            for _ in range(awaits):
                await trio.lowlevel.checkpoint()
            if len(got) == count:
                break
    elif how == "async for, through a memory channel":
        send, receive = trio.open_memory_channel[int](0)

        async def forward() -> None:
            async with send:
                async for message in server:
                    await send.send(message.sequence or 0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            async for sequence in receive:
                got.append(sequence)
                if len(got) == count:
                    nursery.cancel_scope.cancel()
    elif how == "receive_batch()":
        while len(got) < count:
            got.extend(message.sequence for message in await server.receive_batch())
    else:
        done = trio.Event()

        async def handler(connection: trioudp.Connection) -> None:
            async for message in connection:
                got.append(message.sequence)
                if len(got) == count:
                    done.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, handler)
            await done.wait()
            nursery.cancel_scope.cancel()
    return got


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
@pytest.mark.parametrize("how", CONSUMERS)
async def test_a_consumer_that_keeps_taking_loses_nothing_of_a_backlog(
    autojump_clock: trio.testing.MockClock, how: str, policy: str
) -> None:
    # 3,000 datagrams wait in the socket, 60 times the channel's capacity: a
    # consumer taking them as fast as it can (each of the README's idioms) gets
    # every one, because the socket is read only as fast as it takes.
    count, capacity = 3000, 50
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_server(
            *SERVER,
            channel_capacity=capacity,
            overflow=policy,  # type: ignore[arg-type]
        ) as server:
            for sequence in range(count):
                network.inject(encode_message(7, sequence, b"%d" % sequence, 1200)[0], PEER, SERVER)
            got: list[int | None] = []
            with trio.move_on_after(60):  # on the autojump clock: at once
                got = await take(server, how, count)
            stats = server.statistics()
    assert got == list(range(count))
    assert stats.messages_overflow_dropped == 0
    assert stats.datagrams_received == stats.datagrams_accounted == count


async def test_a_handler_that_does_not_take_does_not_hold_up_other_peers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One peer's handler takes a message every 10 ms; the peer has sent 2,000.
    # Another peer's messages, sent after them, reach their handler as soon as
    # the socket is read, not once the first handler has caught up (20 s).
    network = FakeNetwork()
    arrived: list[float] = []
    with network.installed():
        async with trioudp.open_udp_server(*SERVER, channel_capacity=50) as server:

            async def handler(connection: trioudp.Connection) -> None:
                async for message in connection:
                    if connection.address == OTHER:
                        arrived.append(trio.current_time())
                        if message.sequence == 9:
                            nursery.cancel_scope.cancel()
                    else:
                        await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve, handler)
                start = trio.current_time()
                for sequence in range(2000):
                    network.inject(encode_message(7, sequence, b"flood", 1200)[0], PEER, SERVER)
                for sequence in range(10):
                    network.inject(encode_message(8, sequence, b"other", 1200)[0], OTHER, SERVER)
            stats = server.statistics()
    assert len(arrived) == 10
    assert max(arrived) - start < 0.1
    # The busy peer's channel applied its overflow policy, counted.
    assert stats.messages_overflow_dropped > 0
    assert stats.datagrams_received == stats.datagrams_accounted


async def test_the_kernels_drops_are_counted() -> None:
    # A sender faster than the endpoint (it sends 3,000 datagrams before the
    # endpoint's task can run) into a small socket buffer on loopback: every
    # datagram is either received or counted as dropped by the kernel.
    count = 3000
    async with trioudp.open_udp_server(
        "127.0.0.1", 0, receive_buffer_size=4096, channel_capacity=count
    ) as server:
        if kernel_drops(server.socket) is None:  # type: ignore[arg-type]
            pytest.skip("the kernel does not report a socket's drops (SO_MEMINFO, Linux 4.12+)")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for sequence in range(count):
                with contextlib.suppress(BlockingIOError):
                    sender.sendto(
                        encode_message(7, sequence, b"x" * 100, 1200)[0], server.local_address[:2]
                    )
        await trio.testing.wait_all_tasks_blocked()
        stats = server.statistics()
    assert stats.datagrams_kernel_dropped > 0
    assert stats.datagrams_received + stats.datagrams_kernel_dropped == count
    assert stats.datagrams_received == stats.datagrams_accounted


async def test_reading_statistics_does_not_hide_the_kernels_drops_from_the_receive_path() -> None:
    # A metrics poller reads statistics() (and with it the kernel's count)
    # between two reads of the socket: the receive path still learns that the
    # kernel dropped datagrams meanwhile.
    async with trioudp.open_udp_server("127.0.0.1", 0, receive_buffer_size=4096) as server:
        if kernel_drops(server.socket) is None:  # type: ignore[arg-type]
            pytest.skip("the kernel does not report a socket's drops (SO_MEMINFO, Linux 4.12+)")
        await trio.testing.wait_all_tasks_blocked()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for sequence in range(500):
                with contextlib.suppress(BlockingIOError):
                    sender.sendto(
                        encode_message(7, sequence, b"x" * 100, 1200)[0], server.local_address[:2]
                    )
        assert server.statistics().datagrams_kernel_dropped > 0
        server._transport.check_drops()
        assert server._engine.delivery.kernel_dropping


@pytest.mark.parametrize("how", ["async for", "serve() handler"])
async def test_the_first_message_of_a_burst_does_not_wait_for_the_rest_to_be_decoded(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    # 100 clients' datagrams arrive at once (a game server's tick): the first
    # reaches the application after a few have been decoded, not after all 100,
    # and every one still arrives.
    count = 100
    network = FakeNetwork()
    peers = [(f"10.0.1.{index + 1}", 7000) for index in range(count)]
    decoded_when_first_taken: list[int] = []
    taken: list[trioudp.Address] = []

    def took(server: trioudp.UDPServer, message: trioudp.Message) -> None:
        if not taken:
            decoded_when_first_taken.append(server.statistics().datagrams_received)
        taken.append(message.address)

    with network.installed():
        async with trioudp.open_udp_server(*SERVER) as server:
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as nursery:
                if how == "async for":

                    async def consume() -> None:
                        async for message in server:
                            took(server, message)
                            if len(taken) == count:
                                nursery.cancel_scope.cancel()

                    nursery.start_soon(consume)
                else:

                    async def handler(connection: trioudp.Connection) -> None:
                        async for message in connection:
                            took(server, message)
                            if len(taken) == count:
                                nursery.cancel_scope.cancel()

                    await nursery.start(server.serve, handler)
                await trio.testing.wait_all_tasks_blocked()
                for index, peer in enumerate(peers):
                    network.inject(encode_message(index, 0, b"tick", 1200)[0], peer, SERVER)
    assert sorted(taken) == sorted(peers)
    # The first drain reads FIRST_BATCH; the next (twice as many) may run
    # before the consumer does, as trio orders a turn's tasks at random.
    assert decoded_when_first_taken[0] <= 3 * FIRST_BATCH
