"""Every errno of the send policy (trioudp/_transport.py POLICY, the table in
docs/design.md) on every path a datagram takes to the wire: the application's
unreliable send, a reliable first send and its retransmissions, ACKs, PINGs,
and GSO runs. Whatever the kernel says about one peer, the endpoint keeps
serving the others, and a server never stops."""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

import trioudp
from trioudp._offload import SOL_UDP, UDP_SEGMENT, gso_available
from trioudp._transport import POLICY, Action, classify
from trioudp.testing import FakeNetwork, Faults

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SERVER = ("10.0.0.1", 5000)
VICTIM = ("10.0.0.2", 6000)
HEALTHY = ("10.0.0.3", 6000)
#: Every errno the table names, and one it does not (REFUSED, as unknown ones are).
ERRNOS = [*sorted(POLICY), errno.EIO]
#: The ones that say the socket itself is gone.
CLOSING = [code for code in ERRNOS if POLICY.get(code) is Action.CLOSED]
#: Every other one: about the address, the route, or the kernel's room.
ABOUT_THE_PEER = [code for code in ERRNOS if code not in CLOSING]


def action(code: int) -> Action:
    return classify(code, connected=False, run=1, reported=False)


def ids(code: int) -> str:
    return errno.errorcode[code]


class Lab:
    """A server on the fake network, a healthy client it keeps echoing, and a
    link from the server to the victim's host that fails with one errno."""

    def __init__(self, network: FakeNetwork, server: trioudp.UDPServer) -> None:
        self.network = network
        self.server = server

    def break_link(self, code: int) -> None:
        self.network.set_faults(Faults(send_error=code), source=SERVER[0], destination=VICTIM[0])

    def mend_link(self) -> None:
        self.network.set_faults(Faults(), source=SERVER[0], destination=VICTIM[0])

    async def still_serving(self, **options: Any) -> None:
        """A client on another host gets its echo: the server is alive and
        serving its other peers."""
        async with trioudp.open_udp_connection(
            *SERVER, local_address=HEALTHY, **options
        ) as healthy:
            for number in range(3):
                await healthy.send(b"ping %d" % number)
                with trio.fail_after(5):
                    assert (await healthy.receive()).payload == b"ping %d" % number


async def echo(server: trioudp.UDPServer) -> None:
    async for message in server:
        if message.address[0] == HEALTHY[0]:
            await message.reply(message.payload)


async def lab(**options: Any) -> AsyncIterator[Lab]:
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER, **options) as server,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(echo, server)
            yield Lab(network, server)
            nursery.cancel_scope.cancel()


@pytest.fixture
async def unreliable() -> AsyncIterator[Lab]:
    async for made in lab(keepalive=15):
        yield made


@pytest.fixture
async def reliable() -> AsyncIterator[Lab]:
    async for made in lab(reliable=True, give_up_timeout=2.0):
        yield made


@pytest.mark.parametrize("code", ABOUT_THE_PEER, ids=ids)
async def test_unreliable_send(
    autojump_clock: trio.testing.MockClock, unreliable: Lab, code: int
) -> None:
    """The application's own send: the error goes to the caller who asked where
    the table says so, else the datagram is a counted drop, after waiting for
    room where the kernel might make some."""
    server = unreliable.server
    unreliable.break_link(code)
    start = trio.current_time()
    if action(code) is Action.REFUSED:
        with pytest.raises(OSError, match=rf"\[Errno {code}\]|too large") as info:
            await server.send_to(VICTIM, b"x")
        assert info.value.errno == code
    else:
        await server.send_to(VICTIM, b"x")
    if action(code) in (Action.BACK_OFF, Action.WAIT_WRITABLE):
        # Waited for room about half a second (1 + 2 + ... + 256 ms), then gave up.
        assert trio.current_time() - start == pytest.approx(0.511)
    assert server.statistics().datagrams_send_dropped == 1
    await unreliable.still_serving()


@pytest.mark.parametrize("code", CLOSING, ids=ids)
async def test_a_socket_that_is_gone_closes_its_endpoint(
    autojump_clock: trio.testing.MockClock, code: int
) -> None:
    """EBADF or ENOTSOCK: the socket is gone under the endpoint, which closes
    (what waited to be sent is counted dropped); its block ends quietly."""
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_server(*SERVER) as server:
            network.set_faults(Faults(send_error=code), source=SERVER[0], destination=VICTIM[0])
            with pytest.raises(trio.ClosedResourceError, match="socket is gone"):
                await server.send_to(VICTIM, b"x")
            with pytest.raises(trio.ClosedResourceError):
                await server.receive()
            with pytest.raises(trio.ClosedResourceError):
                await server.send_to(HEALTHY, b"y")
            assert server.statistics().datagrams_send_dropped == 1


@pytest.mark.parametrize("code", ABOUT_THE_PEER, ids=ids)
async def test_reliable_first_send(
    autojump_clock: trio.testing.MockClock, reliable: Lab, code: int
) -> None:
    """A reliable message's first datagram goes out in the caller's send: an
    error the table gives the caller is raised there, and its peer fails at
    once. Any other error is a loss that retransmission meets again, and the
    peer fails when its sender gives up, with the errno as the reason. The
    server never stops (it once died of its own retransmission a second later)."""
    server = reliable.server
    reliable.break_link(code)
    if action(code) is Action.REFUSED:
        with pytest.raises(OSError, match=rf"\[Errno {code}\]") as info:
            await server.send_to(VICTIM, b"x")
        assert info.value.errno == code
    else:
        await server.send_to(VICTIM, b"x")
    connection = server.connections[VICTIM]
    with pytest.raises(trioudp.PeerLostError) as lost:
        await connection.flush()
    assert lost.value.reason is trioudp.LostReason.UNREACHABLE
    assert lost.value.errno == code
    assert lost.value.unacknowledged == 1
    assert f"[Errno {lost.value.errno}]" in str(lost.value)
    assert connection.state.value is trioudp.ConnectionState.LOST
    await trio.sleep(5)  # past every retransmission and probe
    await reliable.still_serving(reliable=True)
    assert server.statistics().datagrams_send_dropped >= 1


@pytest.mark.parametrize("code", ABOUT_THE_PEER, ids=ids)
async def test_reliable_retransmission(
    autojump_clock: trio.testing.MockClock, reliable: Lab, code: int
) -> None:
    """The first datagram leaves (and is lost); the route then fails, so the
    retransmission, made by the timer task, meets the error: counted against
    the peer, which fails alone; the timer task, and the server, go on."""
    network, server = reliable.network, reliable.server
    network.set_faults(Faults(loss=1.0), source=SERVER[0], destination=VICTIM[0])
    await server.send_to(VICTIM, b"x")
    reliable.break_link(code)
    await trio.sleep(2)  # the probe timeout (about 1 s), and half a second of waiting for room
    assert server.statistics().datagrams_retransmitted >= 1
    assert server.statistics().datagrams_send_dropped >= 1
    connection = server.connections[VICTIM]
    with pytest.raises(trioudp.PeerLostError) as lost:
        await connection.flush()
    assert lost.value.reason is trioudp.LostReason.UNREACHABLE
    await reliable.still_serving(reliable=True)


@pytest.mark.parametrize("code", ABOUT_THE_PEER, ids=ids)
async def test_acknowledgements(
    autojump_clock: trio.testing.MockClock, reliable: Lab, code: int
) -> None:
    """The victim sends reliable messages; the server's ACKs to it fail (made
    in the receive task). The server takes the messages all the same and keeps
    serving; the victim, hearing nothing, gives up on its own side."""
    network, server = reliable.network, reliable.server
    reliable.break_link(code)
    async with trioudp.open_udp_connection(
        *SERVER, local_address=VICTIM, reliable=True, give_up_timeout=2.0
    ) as victim:
        await victim.send(b"one")
        await victim.send(b"two")
        with pytest.raises(trioudp.PeerLostError) as lost:
            await victim.flush()
        assert lost.value.reason is trioudp.LostReason.TIMEOUT
    assert server.statistics().datagrams_send_dropped >= 1
    assert network.statistics.refused >= 1
    await reliable.still_serving(reliable=True)


@pytest.mark.parametrize("code", ABOUT_THE_PEER, ids=ids)
async def test_keepalive_pings(
    autojump_clock: trio.testing.MockClock, unreliable: Lab, code: int
) -> None:
    """A keepalive PING to a peer the kernel will not send to (made by the
    timer task) is a counted drop; the server goes on."""
    network, server = unreliable.network, unreliable.server
    async with trioudp.open_udp_connection(*SERVER, local_address=VICTIM) as victim:
        await victim.send(b"hello")
        await trio.testing.wait_all_tasks_blocked()
        assert VICTIM in server.connections
        unreliable.break_link(code)
        await trio.sleep(40)  # two keepalive periods of silence towards it
        stats = server.connections[VICTIM].statistics()
        assert stats.pings_sent >= 1
        assert stats.datagrams_send_dropped >= 1
        assert network.statistics.refused >= 1
    await unreliable.still_serving()


@pytest.mark.parametrize("code", [errno.ECONNREFUSED, errno.ENETUNREACH], ids=ids)
async def test_a_connected_socket_reports_an_icmp_error_once_and_sends_again(
    autojump_clock: trio.testing.MockClock, code: int
) -> None:
    """On a connected socket the kernel reports an earlier datagram's ICMP error
    on the next send: that send is made again, and receive() raises the error
    once. A route that stays gone is a counted drop, not a loop."""
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_connection(*SERVER, local_address=VICTIM) as client:
            network.set_faults(Faults(send_error=code), source=VICTIM[0])
            await client.send(b"x")  # reported, sent again, refused again: dropped
            assert client.statistics().unreachable_errors == 1
            assert client.statistics().datagrams_send_dropped == 1
            with pytest.raises(trioudp.UnreachableError) as info:
                client.receive_nowait()
            assert info.value.errno == code
            with pytest.raises(trio.WouldBlock):
                client.receive_nowait()


@pytest.mark.parametrize("reliable", [False, True], ids=["unreliable", "reliable"])
async def test_an_icmp_error_reported_by_a_send_wakes_a_parked_receiver(
    autojump_clock: trio.testing.MockClock, reliable: bool
) -> None:
    """The error a send takes from the kernel is queued for receive(): a task
    already waiting in receive() raises it at once. It once stayed parked,
    with the error queued, until some datagram came."""
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_connection(*SERVER, local_address=VICTIM, reliable=reliable) as client,
            trio.open_nursery() as nursery,
        ):
            raised: list[int] = []

            async def receive() -> None:
                with pytest.raises(trioudp.UnreachableError) as info:
                    await client.receive()
                raised.append(info.value.errno or 0)

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            network.set_faults(Faults(send_error=errno.ECONNREFUSED), source=VICTIM[0])
            before = trio.current_time()
            await client.send(b"x")
            await trio.testing.wait_all_tasks_blocked()
            # Woken by the send itself, not by a timer or a datagram.
            assert trio.current_time() == before
            assert raised == [errno.ECONNREFUSED]
            nursery.cancel_scope.cancel()


class _FailingSegmentation:
    """A real socket whose segmented sends (GSO runs) fail with one errno:
    ``times`` times (the kernel's transient refusals), or always."""

    def __init__(self, sock: socket.socket, error: int, times: int | None) -> None:
        self._sock = sock
        self._error = error
        self._times = times
        self.failed = 0

    def sendmsg(self, buffers: Any, ancillary: Any = (), *rest: Any) -> int:
        segmented = any(level == SOL_UDP and kind == UDP_SEGMENT for level, kind, _ in ancillary)
        if segmented and (self._times is None or self.failed < self._times):
            self.failed += 1
            raise OSError(self._error, "refused by the test")
        return self._sock.sendmsg(buffers, ancillary, *rest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _gso_works() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return gso_available(sock)


@pytest.mark.skipif(not _gso_works(), reason="this kernel has no UDP GSO (UDP_SEGMENT)")
@pytest.mark.parametrize("reliable", [False, True], ids=["unreliable", "reliable"])
@pytest.mark.parametrize("code", ABOUT_THE_PEER, ids=ids)
async def test_gso_runs(code: int, reliable: bool) -> None:
    """A large message goes to the kernel in GSO runs, and a run that fails is
    handled as one: segmentation refused turns GSO off and sends the run one
    by one; a full buffer (three times, as the kernel's are) is waited out;
    any other errno is the policy's, for every datagram of the run. Nothing is
    lost but what the policy drops, and the endpoint goes on serving others."""
    options: dict[str, Any] = {"reliable": reliable, "give_up_timeout": 1.0}
    expected = classify(code, connected=False, run=2, reported=False)
    transient = expected in (Action.WAIT_WRITABLE, Action.BACK_OFF)
    async with (
        trioudp.open_udp_server("127.0.0.1", 0, **options) as receiver,
        trioudp.open_udp_server("127.0.0.1", 0, **options) as other,
        trioudp.open_udp_server("127.0.0.1", 0, **options) as sender,
    ):
        failing = _FailingSegmentation(sender._transport._sock, code, 3 if transient else None)
        sender._transport._sock = failing  # type: ignore[assignment]
        payload = bytes(range(256)) * 100  # 22 datagrams of up to 1,200 bytes
        with trio.fail_after(5):
            if expected is Action.REFUSED:
                with pytest.raises(OSError, match=rf"\[Errno {code}\]"):
                    await sender.send_to(receiver.local_address, payload)
            else:
                await sender.send_to(receiver.local_address, payload)
        if expected is Action.UNSEGMENTED or transient:
            with trio.fail_after(5):
                assert (await receiver.receive()).payload == payload
            assert failing.failed == (1 if expected is Action.UNSEGMENTED else 3)
        else:
            assert failing.failed >= 1
            assert sender.statistics().datagrams_send_dropped >= 10  # (reliable: its first window)
        # Another peer is served as ever (small messages go unsegmented).
        await sender.send_to(other.local_address, b"after")
        with trio.fail_after(5):
            assert (await other.receive()).payload == b"after"


async def test_a_reliable_server_outlives_its_own_retransmission_of_a_refused_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The kernel refuses a datagram to a broadcast address (EACCES: the socket
    has no SO_BROADCAST), on loopback only. The caller who asked gets the
    PermissionError; the server once died of the same error a second later,
    raised by its timer task as it sent the message again."""
    async with (
        trioudp.open_udp_server("127.0.0.1", 0, reliable=True) as server,
        trio.open_nursery() as nursery,
    ):

        async def echo() -> None:
            async for message in server:
                await message.reply(message.payload)

        nursery.start_soon(echo)
        with pytest.raises(PermissionError):
            await server.send_to(("127.255.255.255", 9), b"to nobody")
        await trio.sleep(30)  # past every retransmission and give-up time
        host, port = server.local_address[:2]
        async with trioudp.open_udp_connection(host, port, reliable=True) as client:
            await client.send(b"still there?")
            with trio.fail_after(5):
                assert (await client.receive()).payload == b"still there?"
        nursery.cancel_scope.cancel()


async def test_a_refused_send_raises_in_its_callers_task_whoever_sent_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Task 1 waits for room in the kernel; task 2's datagram, behind it, is
    refused (EACCES) when task 1 hands them over: the error is still task 2's."""
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_server(*SERVER) as server:
            network.set_faults(
                Faults(send_error=errno.EACCES), source=SERVER[0], destination=VICTIM[0]
            )
            network.refuse_sends(2, errno.EAGAIN)
            errors: dict[str, BaseException | None] = {}

            async def send(name: str, address: tuple[str, int]) -> None:
                try:
                    await server.send_to(address, name.encode())
                except OSError as exc:
                    errors[name] = exc
                else:
                    errors[name] = None

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, "first", HEALTHY)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(send, "second", VICTIM)
            assert errors["first"] is None
            assert isinstance(errors["second"], PermissionError)


async def test_a_send_cancelled_while_it_waits_for_room_still_goes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled while the kernel has no room, a send leaves its datagram to the
    backlog task: it goes once there is room (it once waited for the next send)."""
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER) as server,
            trioudp.open_udp_connection(*SERVER, local_address=HEALTHY) as client,
        ):
            network.refuse_sends(3, errno.EAGAIN)  # writable again 1 ms after each
            with trio.move_on_after(0.0005):
                await client.send(b"late but sent")
            with trio.fail_after(1):
                assert (await server.receive()).payload == b"late but sent"


async def test_a_socket_that_never_has_room_is_not_spun_on() -> None:
    """A socket that says it is writable yet takes nothing (EAGAIN every time),
    on a real clock: the send backs off and gives the datagram up in about half
    a second, rather than spinning forever."""
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_server(*SERVER) as server:
            network.set_faults(
                Faults(send_error=errno.EAGAIN), source=SERVER[0], destination=VICTIM[0]
            )
            with trio.fail_after(5):
                await server.send_to(VICTIM, b"x")
            assert server.statistics().datagrams_send_dropped == 1


class _Picky:
    """A socket that the socket module's own checks refuse an address of."""

    def __init__(self, sock: Any, error: type[Exception]) -> None:
        self._sock = sock
        self._error = error

    def sendto(self, data: Any, address: Any) -> int:
        if address[0] == VICTIM[0]:
            raise self._error("the socket module refuses this address")
        return int(self._sock.sendto(data, address))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest.mark.parametrize("error", [TypeError, ValueError, OverflowError])
async def test_an_address_the_socket_module_refuses_fails_its_peer_alone(
    autojump_clock: trio.testing.MockClock, error: type[Exception]
) -> None:
    """Not an errno, but the same case as EINVAL: the caller gets the error, a
    reliable peer fails, and the server (its timer task included) goes on."""
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_server(*SERVER, reliable=True, keepalive=15) as server:
            server._transport._sock = _Picky(server._transport._sock, error)  # type: ignore[assignment]
            with pytest.raises(error, match="refuses this address"):
                await server.send_to(VICTIM, b"x")
            await trio.sleep(60)  # retransmissions, probes, keepalives: none may escape
            async with trioudp.open_udp_connection(
                *SERVER, local_address=HEALTHY, reliable=True
            ) as client:
                await client.send(b"hello")
                with trio.fail_after(1):
                    assert (await server.receive()).payload == b"hello"


async def test_ipv6_flowinfo_and_scope_id_are_checked_when_given() -> None:
    async with trioudp.open_udp_server("127.0.0.1", 0) as server:
        with pytest.raises(TypeError, match=r"\(host, port\) tuple"):
            await server.send_to(("127.0.0.1", 9, 0), b"x")
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_server("::1", 5000) as server:
            with pytest.raises(ValueError, match="flowinfo is an integer from 0 to 0xFFFFF"):
                await server.send_to(("::1", 9, 2**21, 0), b"x")
            with pytest.raises(ValueError, match="scope_id is an interface index"):
                await server.send_to(("::1", 9, 0, "eth0"), b"x")
            assert server.statistics().peers == 0
