"""Connections and servers are trio ReceiveChannels: they compose with any trio
code that takes a channel, and aclose() means what trio's aclose means."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

import trioudp
from trioudp.testing import FakeNetwork, Faults

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SERVER = ("10.0.0.1", 5000)
CLIENT = ("10.0.0.2", 6000)


async def first_two(channel: trio.abc.ReceiveChannel[trioudp.Message]) -> list[bytes]:
    """Trio code that knows nothing of trioudp: it takes any channel."""
    taken: list[bytes] = []
    async for message in channel:
        taken.append(message.payload)
        if len(taken) == 2:
            break
    return taken


@pytest.fixture
async def network() -> AsyncIterator[FakeNetwork]:
    fake = FakeNetwork()
    with fake.installed():
        yield fake


async def test_a_connection_and_a_server_are_receive_channels(
    autojump_clock: trio.testing.MockClock, network: FakeNetwork
) -> None:
    async with (
        trioudp.open_udp_server(*SERVER) as server,
        trioudp.open_udp_connection(*SERVER, local_address=CLIENT) as client,
    ):
        assert isinstance(server, trio.abc.ReceiveChannel)
        assert isinstance(client, trio.abc.ReceiveChannel)
        await client.send_batch([b"one", b"two"])
        with trio.fail_after(1):
            assert await first_two(server) == [b"one", b"two"]
        await server.send_to(CLIENT, b"three")
        await server.send_to(CLIENT, b"four")
        with trio.fail_after(1):
            assert await first_two(client) == [b"three", b"four"]
        # Its peer's own channel on the server is one too.
        await client.send_batch([b"five", b"six"])
        connection = server.connections[CLIENT]
        with trio.fail_after(1):
            assert await first_two(connection) == [b"five", b"six"]


async def test_closing_a_servers_connection_forgets_its_peer(
    autojump_clock: trio.testing.MockClock, network: FakeNetwork
) -> None:
    """aclose() on a server's connection: what waits in it is let go, receiving
    and sending on it raise ClosedResourceError, and the peer is forgotten,
    so its next datagram starts a new connection. Closing twice does nothing."""
    async with (
        trioudp.open_udp_server(*SERVER) as server,
        trioudp.open_udp_connection(*SERVER, local_address=CLIENT) as client,
    ):
        await client.send(b"one")
        await trio.testing.wait_all_tasks_blocked()
        connection = server.connections[CLIENT]
        assert server.receive_nowait().payload == b"one"  # nobody read it directly yet
        with pytest.raises(trio.WouldBlock):
            connection.receive_nowait()  # now someone does: it gets its own channel
        await client.send(b"two")
        with trio.fail_after(1):
            assert (await connection.receive()).payload == b"two"
        await client.send(b"three")
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().bytes_buffered > 0  # "three" waits for it
        await connection.aclose()
        await connection.aclose()
        assert server.statistics().bytes_buffered == 0  # let go
        assert connection.ended is trioudp.LostReason.CLOSED
        assert connection.state.value is trioudp.ConnectionState.CLOSED
        with pytest.raises(trio.ClosedResourceError):
            await connection.receive()
        with pytest.raises(trio.ClosedResourceError):
            await connection.send(b"no")
        assert CLIENT not in server.connections
        assert server.statistics().peers_closed == 1
        await client.send(b"again")
        await trio.testing.wait_all_tasks_blocked()
        fresh = server.connections[CLIENT]
        assert fresh is not connection
        with trio.fail_after(1):
            assert (await server.receive()).payload == b"again"


async def test_closing_a_client_connection_closes_its_endpoint(
    autojump_clock: trio.testing.MockClock, network: FakeNetwork
) -> None:
    async with trioudp.open_udp_connection(*SERVER) as client:
        receiver_error: list[BaseException] = []

        async def receive() -> None:
            try:
                await client.receive()
            except trio.ClosedResourceError as exc:
                receiver_error.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            await client.aclose()
        assert len(receiver_error) == 1
        with pytest.raises(trio.ClosedResourceError):
            await client.send(b"x")
        with pytest.raises(trio.ClosedResourceError):
            client.receive_nowait()
        await client.aclose()
    # ... and the block ends quietly.


async def test_closing_a_server_ends_its_block_quietly(
    autojump_clock: trio.testing.MockClock, network: FakeNetwork
) -> None:
    async with (
        trioudp.open_udp_server(*SERVER) as server,
        trioudp.open_udp_connection(*SERVER, local_address=CLIENT) as client,
    ):
        await client.send(b"x")
        await trio.testing.wait_all_tasks_blocked()
        connection = server.connections[CLIENT]
        await server.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await server.receive()
        with pytest.raises(trio.ClosedResourceError):
            await connection.receive()
        with pytest.raises(trio.ClosedResourceError):
            await server.send_to(CLIENT, b"y")
        with pytest.raises(trio.ClosedResourceError):
            server.local_address  # noqa: B018
        await server.aclose()


async def test_a_handler_may_close_its_own_connection(
    autojump_clock: trio.testing.MockClock, network: FakeNetwork
) -> None:
    """A serve() handler that closes its connection just ends; serve() goes on."""
    served: list[trioudp.Address] = []

    async def handler(connection: trioudp.Connection) -> None:
        served.append(connection.address)
        async with connection:  # aclose() at the end, as with any trio resource
            message = await connection.receive()
            await connection.send(message.payload.upper())

    async with trioudp.open_udp_server(*SERVER) as server, trio.open_nursery() as nursery:
        await nursery.start(server.serve, handler)
        for number in range(3):
            async with trioudp.open_udp_connection(
                *SERVER, local_address=(f"10.0.0.{number + 10}", 6000)
            ) as client:
                await client.send(b"hi")
                with trio.fail_after(1):
                    assert (await client.receive()).payload == b"HI"
        assert len(served) == 3
        assert server.statistics().peers_closed == 3
        nursery.cancel_scope.cancel()


async def test_closing_inside_the_block_cancels_nothing_of_it(
    autojump_clock: trio.testing.MockClock, network: FakeNetwork
) -> None:
    """aclose() (or ``async with`` on the channel) inside the endpoint's own block
    ends the endpoint's tasks, not the block: the code after it runs, and an
    exception raised in it propagates (it once vanished, cancelled)."""
    ran_on: list[str] = []

    async def client_block() -> None:
        async with trioudp.open_udp_connection(*SERVER) as client:
            try:
                await client.send(b"x")
            finally:
                await client.aclose()
                ran_on.append("client")
            raise KeyError("after the client")

    async def server_block() -> None:
        async with trioudp.open_udp_server(*SERVER) as server, server:
            ran_on.append("server")
            raise RuntimeError("inside the server")

    with pytest.raises(KeyError, match="after the client"):
        await client_block()
    with pytest.raises(RuntimeError, match="inside the server"):
        await server_block()
    async with trioudp.open_udp_server(*SERVER) as server:
        await server.aclose()
        ran_on.append("after aclose")
        await trio.sleep(1)  # a checkpoint like any other: nothing cancels it
        ran_on.append("after sleeping")
    assert ran_on == ["client", "server", "after aclose", "after sleeping"]


async def left_unread(server: trioudp.UDPServer, count: int) -> trioudp.Connection:
    """A client's connection read once (so its messages go to it), then sent
    ``count`` messages nobody reads; the client is gone."""
    async with trioudp.open_udp_connection(*SERVER, local_address=CLIENT) as client:
        await client.send(b"first")
        await trio.testing.wait_all_tasks_blocked()
        connection = server.connections[CLIENT]
        server.receive_nowait()
        with pytest.raises(trio.WouldBlock):
            connection.receive_nowait()  # read once: it has a channel of its own
        for number in range(count):
            await client.send(b"unread %d" % number)
        await trio.testing.wait_all_tasks_blocked()
    return connection


async def test_an_ended_connection_nobody_reads_lets_its_messages_go(
    autojump_clock: trio.testing.MockClock, network: FakeNetwork
) -> None:
    """A connection read once (so its messages go to it) and then left alone:
    after its peer is forgotten, what waits in it is let go idle_timeout later
    (counted as overflow), so it cannot hold the endpoint's budget for good
    (new clients were starved)."""
    async with trioudp.open_udp_server(*SERVER, idle_timeout=5) as server:
        connection = await left_unread(server, 20)
        held = server.statistics().bytes_buffered
        assert held > 0
        await trio.sleep(5.5)  # the peer is forgotten: its messages may still be read
        assert connection.ended is trioudp.LostReason.IDLE
        assert server.statistics().bytes_buffered == held
        assert connection.receive_nowait().payload == b"unread 0"
        await trio.sleep(5)  # nobody read the rest: let go
        stats = server.statistics()
        assert stats.bytes_buffered == 0
        assert stats.messages_overflow_dropped == 19
        assert stats.datagrams_received == stats.datagrams_accounted
        with pytest.raises(trio.EndOfChannel):
            connection.receive_nowait()


async def test_closing_the_server_lets_go_of_forgotten_peers_messages(
    autojump_clock: trio.testing.MockClock, network: FakeNetwork
) -> None:
    """Messages lingering in the connection of a peer already forgotten are let
    go when the server closes (they stayed charged), and that connection, like
    every other, raises ClosedResourceError (it once still gave them out)."""
    async with trioudp.open_udp_server(*SERVER, idle_timeout=5) as server:
        connection = await left_unread(server, 5)
        await trio.sleep(5.5)  # the peer is forgotten; its messages linger
        assert connection.ended is trioudp.LostReason.IDLE
        assert server.statistics().bytes_buffered > 0
    stats = server.statistics()
    assert stats.bytes_buffered == 0
    assert stats.messages_overflow_dropped == 5
    assert stats.datagrams_received == stats.datagrams_accounted
    with pytest.raises(trio.ClosedResourceError):
        connection.receive_nowait()
    with pytest.raises(trio.ClosedResourceError):
        await connection.receive()


async def test_a_task_waiting_on_a_connection_closed_by_another_gets_closed_resource(
    autojump_clock: trio.testing.MockClock, network: FakeNetwork
) -> None:
    async with (
        trioudp.open_udp_server(*SERVER, reliable=True) as server,
        trioudp.open_udp_connection(*SERVER, local_address=CLIENT, reliable=True) as client,
    ):
        await client.send(b"hello")
        await trio.testing.wait_all_tasks_blocked()
        connection = server.connections[CLIENT]
        network.set_faults(Faults(loss=1.0))  # nothing is acknowledged: flush() waits
        await connection.send(b"unacknowledged")
        outcome: list[Exception] = []

        async def flush() -> None:
            try:
                await connection.flush()
            except (trio.ClosedResourceError, trioudp.PeerLostError) as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush)
            await trio.testing.wait_all_tasks_blocked()
            await connection.aclose()
        assert len(outcome) == 1
        assert isinstance(outcome[0], trio.ClosedResourceError)


def _tasks_under(task: trio.lowlevel.Task) -> int:
    return 1 + sum(
        _tasks_under(child) for nursery in task.child_nurseries for child in nursery.child_tasks
    )


async def test_a_connection_runs_two_tasks() -> None:
    # Its receive task and its timer task; the backlog task only while
    # datagrams wait for room in the kernel (issue 14: thousands of client
    # connections in one process).
    async with trioudp.open_udp_server("127.0.0.1", 0) as server:
        root = trio.lowlevel.current_root_task()
        assert root is not None
        before = _tasks_under(root)
        async with (
            trioudp.open_udp_connection("127.0.0.1", server.local_address[1]) as first,
            trioudp.open_udp_connection("127.0.0.1", server.local_address[1]) as second,
        ):
            await first.send(b"a")
            await second.send(b"b")
            await server.receive_batch()
            await trio.testing.wait_all_tasks_blocked()
            assert _tasks_under(root) - before == 4
