"""One peer of an endpoint, as the application sees it."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import trio
from trio_util import AsyncValue  # type: ignore[attr-defined]  # pyright: ignore[reportMissingTypeStubs]

from ._channel import Inbox, Receiving
from ._state import ConnectionState, StateValue

if TYPE_CHECKING:
    from collections.abc import Iterable

    from typing_extensions import Buffer

    from ._endpoint import Endpoint
    from ._message import Address
    from ._peer import Peer
    from ._reasons import LostReason
    from ._statistics import PeerStatistics


class Connection(Receiving):
    """One peer: send to it, receive its messages, read its statistics. A trio
    ``ReceiveChannel[Message]``: pass it wherever a channel goes.

    ``open_udp_connection`` gives one for the peer it connects to; a server makes
    one for each peer it hears from (``server.connections``, ``serve()``).
    """

    def __init__(self, endpoint: Endpoint, peer: Peer) -> None:
        self._endpoint = endpoint
        self._peer = peer
        self._own: Inbox | None = None
        self._ended: LostReason | None = None
        #: Whether the application closed it (``aclose``).
        self._closed = False
        #: The state as an AsyncValue and the tasks waiting in send() or flush()
        #: for the reliable sender to move: made when first needed (a server may
        #: hold thousands of connections that never need them).
        self._state: AsyncValue[ConnectionState] | None = None
        self._waiters: trio.lowlevel.ParkingLot | None = None

    def __repr__(self) -> str:
        return f"<trioudp.Connection to {self._peer.address!r}>"

    @property
    def address(self) -> Address:
        """The peer's address."""
        return self._peer.address

    @property
    def local_address(self) -> Address:
        """The local address of the socket this connection uses."""
        return self._endpoint.local_address

    @property
    def ended(self) -> LostReason | None:
        """None while the connection is live; why it ended otherwise (a
        :class:`LostReason`, equal to its string): ``"idle"``, ``"replaced"``
        (the peer restarted), ``"evicted"``, ``"closed"``."""
        return self._ended

    def statistics(self) -> PeerStatistics:
        """What happened with this peer (a snapshot)."""
        return self._endpoint._engine.peer_statistics(self._peer)

    @property
    def state(self) -> StateValue:
        """The connection's :class:`ConnectionState` as a trio-util ``AsyncValue``:
        read ``state.value``, or wait for one without polling, e.g.
        ``await connection.state.wait_value(trioudp.ConnectionState.ESTABLISHED)``.
        ``CLOSED`` is final: a wait for another state that another task's
        ``aclose()`` may overtake should accept ``CLOSED`` too."""
        if self._state is None:
            engine = self._endpoint._engine
            now = ConnectionState.CLOSED if self._ended is not None else engine.state(self._peer)
            self._state = AsyncValue(now)
        return cast("StateValue", self._state)

    # -- sending --------------------------------------------------------------------

    async def send(self, payload: Buffer, *, topic: str = "", priority: int | None = None) -> None:
        """Send one message to the peer: framed, and fragmented if it is larger
        than one datagram, with an optional ``topic`` and ``priority`` (a
        :class:`Priority` or DSCP for this message only). Waits only while the
        kernel's buffer is full (reliable mode: while the peer's window is).

        Any C-contiguous bytes-like object is sent as its bytes (an
        ``array('I')`` of 1,000 items is 4,000 bytes); anything else is a
        TypeError. A cancellation point on every call; it lets other tasks run
        at least once per 16 system calls that sent datagrams (a GSO run of a
        large message's fragments is one), rather than after each one."""
        if self._closed:
            self._check_open()
        await self._endpoint._send(self._peer, [payload], topic=topic, priority=priority)

    async def send_batch(
        self, payloads: Iterable[Buffer], *, topic: str = "", priority: int | None = None
    ) -> None:
        """Send several messages to the peer, in order, each as ``send()`` would,
        with fewer system calls and less work per message: small ones share a
        datagram (up to ``max_datagram_size``, one header and one checksum;
        the receiver gets them one by one as usual), and datagrams of equal size
        go to the kernel together where it can segment them (``offload``).

        Every payload is checked before any is sent. In reliable mode it waits
        for room in the peer's window as often as needed; a cancellation while
        it waits leaves the messages before that point sent."""
        self._check_open()
        await self._endpoint._send(self._peer, batch(payloads), topic=topic, priority=priority)

    async def flush(self) -> None:
        """Wait until every message sent so far on a reliable connection is
        acknowledged by the peer (at once on an unreliable one, which has nothing
        to wait for). Raises :class:`PeerLostError` if the peer stops answering
        for ``give_up_timeout`` seconds or refuses reliable delivery. Cancel-safe:
        a timeout around it loses nothing; the messages stay queued."""
        self._check_open()
        await self._endpoint._flush(self._peer)

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self!r} was closed with aclose()")

    # -- receiving ------------------------------------------------------------------

    def _inbox(self) -> Inbox:
        self._check_open()
        endpoint = self._endpoint
        if endpoint._closed:
            raise trio.ClosedResourceError("this trioudp endpoint is closed")
        inbox = self._own
        if inbox is None:
            inbox = self._own = endpoint._inbox_for(endpoint._engine.claim(self._peer))
        return inbox

    async def aclose(self) -> None:
        """Close this connection: receiving from or sending on it raises
        ``trio.ClosedResourceError`` from now on, and what waits in it is let go.

        On a server, the peer is forgotten at once (as when a ``serve()``
        handler returns): its next datagram starts a new connection. Reliable
        messages the peer has not acknowledged are given up (``messages_failed``):
        ``flush()`` first to wait for them. On a client connection (from
        ``open_udp_connection``) it closes the endpoint: its socket and tasks.
        Closing twice does nothing; like every trio ``aclose``, it is a
        checkpoint and closes even when cancelled."""
        if not self._closed:
            self._closed = True
            self._endpoint._close_connection(self)
        await trio.lowlevel.checkpoint()

    # -- what the endpoint tells it ---------------------------------------------------

    def _set_state(self, state: ConnectionState) -> None:
        if self._state is not None and self._ended is None:
            self._state.value = state

    def _wake(self) -> None:
        if self._waiters is not None:
            self._waiters.unpark_all()

    async def _park(self) -> None:
        if self._waiters is None:
            self._waiters = trio.lowlevel.ParkingLot()
        await self._waiters.park()

    def _end(self, reason: LostReason) -> None:
        if self._ended is None:
            self._ended = reason
        if self._state is not None:
            self._state.value = ConnectionState.CLOSED
        self._wake()


def batch(payloads: Iterable[Buffer]) -> list[Buffer]:
    one = isinstance(payloads, (bytes, bytearray, memoryview, str))
    if not one and not isinstance(payloads, (list, tuple)):
        try:  # any other bytes-like object (an array, a NumPy array) is one payload too
            memoryview(payloads)  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            one = True
    if one:
        raise TypeError(
            "send_batch() takes an iterable of payloads, e.g. [b'one', b'two'], not one "
            "payload; use send() for a single message"
        )
    payloads_list = list(payloads)
    if not payloads_list:
        raise ValueError("send_batch() needs at least one payload")
    return payloads_list
