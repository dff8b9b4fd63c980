"""The trio shell around the engine: sockets, tasks, channels, cancel scopes.

Receive path. One task per socket drains it without awaiting: it reads
datagrams with ``recvfrom_into`` into one preallocated buffer until the kernel
has none left (BlockingIOError) or ``RECEIVE_BATCH`` were read, feeding each
to the engine; then it hands the batch's messages to the receive channels and
awaits ``wait_readable`` (or, after a full batch, one checkpoint so other tasks
run). A trip through trio's scheduler costs several microseconds, far more
than a datagram's own work, so paying it once per batch rather than once per
datagram is what makes this fast.

Delivery. Every peer has a Connection. A connection's messages go to its own
channel once something receives from it (``serve()`` hands it to a handler,
or the application calls its ``receive()``/iterates it); until then they go to
the server's shared channel, which ``async for message in server`` reads.
Channels are bounded and never block the reader: a full one applies
``overflow`` (drop the oldest or the newest message, counted), so one slow
consumer never stalls the socket for everyone else.

Send path. Datagrams go straight to the non-blocking socket; only when the
kernel's buffer is full does ``send()`` wait for it to drain (trio
backpressure), so it never raises EAGAIN at the caller. Every ``send()`` is a
cancellation point, but the sending task lets others run only once per
SEND_BATCH datagrams: a trip through trio's scheduler per datagram would cost
more than the send itself, and would wake the receiving side once per datagram,
which loses its batching (2.6x the messages per second between a trioudp
client and server on loopback, measured by bench/goodput.py).

Reliable mode. ``send()`` queues the message in the engine (waiting, while the
peer's send window is full, on the connection's parking lot, which every
acknowledgement wakes) and returns; the datagrams the engine produces (data,
retransmissions, ACKs, PINGs) are sent at once after each batch of engine work
by ``_flush_output``. What the kernel cannot take right now waits in a backlog
that one task sends once the socket is writable, in order.
"""

from __future__ import annotations

import errno
import logging
import math
import sys
import time
from collections import deque
from contextlib import asynccontextmanager
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn, cast

import trio
from trio_util import AsyncValue  # type: ignore[attr-defined]  # pyright: ignore[reportMissingTypeStubs]

from ._config import Config, make_config
from ._engine import (
    Engine,
    Peer,
    PeerClosed,
    PeerOpened,
    PeerState,
    PeerWakeup,
    encode_topic,
    keyed_session_id,
    random_session_id,
)
from ._errors import PeerLostError, UnreachableError
from ._frame import KEY_SIZES
from ._message import Message
from ._multicast import check_priority, priority_cmsg
from ._offload import (
    GRO_ANCILLARY_SIZE,
    GSO_UNSUPPORTED,
    enable_gro,
    gro_segment_size,
    gso_available,
    gso_runs,
    segment_cmsg,
    split_coalesced,
)
from ._sockethook import is_fake
from ._sockets import (
    AddressBook,
    adopt_socket,
    client_socket,
    is_unreachable,
    peer_name,
    server_socket,
)
from ._state import ConnectionState, StateValue

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    import socket as stdlib_socket
    from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence

    from typing_extensions import Buffer, Self, TypeVarTuple, Unpack

    from ._config import Options
    from ._message import Address
    from ._statistics import EndpointStatistics, PeerStatistics

    Ts = TypeVarTuple("Ts")

logger = logging.getLogger(__name__)

#: Datagrams read per batch before the receive task lets other tasks run.
RECEIVE_BATCH = 128
#: Datagrams sent (over any number of ``send()`` calls) before the sending
#: task lets other tasks run.
SEND_BATCH = 16
#: Messages received without waiting (over any number of ``receive()`` calls)
#: before the receiving task lets other tasks run.
RECEIVE_YIELD = 16
#: ENOBUFS back-off: the first wait, doubled up to the last (about 0.5 s in all).
NOBUFS_FIRST_WAIT = 0.001
NOBUFS_LAST_WAIT = 0.256
_RECEIVE_BUFFER = 65536
#: A datagram this large suggests a sender that segments (GSO): turn GRO on.
GRO_WORTHWHILE = 512


class _Unreachable:
    """Queued in a client's channel where an ICMP error arrived, so that the
    error is raised in order with the messages around it."""

    __slots__ = ("error",)

    def __init__(self, error: UnreachableError) -> None:
        self.error = error


_Item = Message | _Unreachable


class _Inbox:
    """A bounded receive channel with an overflow policy.

    Not a trio memory channel: the receive task puts a whole batch of messages
    at once and ``receive_batch()`` takes them all at once, so a message costs a
    deque append and a share of one list, not a channel operation on each side.
    Receivers wait in a parking lot; being cancelled while parked takes
    nothing, so every receive is cancel-safe.
    """

    def __init__(self, engine: Engine, config: Config) -> None:
        self._engine = engine
        self._drop_oldest = config.overflow == "drop_oldest"
        # A reliable endpoint's messages were acknowledged, so a channel must not
        # drop them: the engine bounds them instead (each peer's window counts
        # them until they are received, see count_consumed).
        self._capacity = math.inf if config.reliable else config.channel_capacity
        self._items: deque[_Item] = deque()
        self._waiters = trio.lowlevel.ParkingLot()
        #: Payload bytes waiting, and how many may.
        self._bytes = 0
        self._byte_limit = math.inf if config.reliable else config.channel_bytes
        #: "open", "ended" (EndOfChannel once empty) or "closed" (ClosedResourceError).
        self._state = "open"
        self._deferred: UnreachableError | None = None
        self._error_queued = False
        #: Called with each reliable message the application takes.
        self.on_consumed: Callable[[Message], None] | None = None
        #: Messages taken without waiting since the taker last let others run.
        self._unyielded = 0

    def put(self, item: _Item) -> None:
        engine = self._engine
        is_message = type(item) is Message
        if self._state != "open":
            if is_message:
                engine.count_dropped(item, was_delivered=False)  # type: ignore[arg-type]
            return
        size = len(item.payload) if is_message else 0  # type: ignore[union-attr]
        items = self._items
        if len(items) >= self._capacity or self._bytes + size > self._byte_limit:
            if not self._drop_oldest:
                if is_message:
                    engine.count_dropped(item, was_delivered=False)  # type: ignore[arg-type]
                return
            while (
                len(items) >= self._capacity or self._bytes + size > self._byte_limit
            ) and self._drop_one():
                pass
        items.append(item)
        if is_message:
            self._bytes += size
            engine.count_delivered(item)  # type: ignore[arg-type]
        if self._waiters:
            self._waiters.unpark()

    def _drop_one(self) -> bool:
        """Make room by dropping the oldest item; False if there was none."""
        if not self._items:
            return False
        oldest = self._items.popleft()
        if type(oldest) is Message:
            self._bytes -= len(oldest.payload)
            self._engine.count_dropped(oldest, was_delivered=True)
        else:
            self._error_queued = False
        return True

    def put_error(self, error: UnreachableError) -> None:
        if not self._error_queued:
            self._error_queued = True
            self.put(_Unreachable(error))

    def _take(self, item: _Item) -> Message:
        if type(item) is Message:
            self._bytes -= len(item.payload)
            if self.on_consumed is not None:
                self.on_consumed(item)
            return item
        self._error_queued = False
        raise item.error  # type: ignore[union-attr]

    def _pop_deferred(self) -> UnreachableError | None:
        error, self._deferred = self._deferred, None
        return error

    def _next_nowait(self) -> _Item:
        if self._state == "closed":
            raise trio.ClosedResourceError("this trioudp endpoint is closed")
        if self._items:
            return self._items.popleft()
        if self._state == "ended":
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def _next(self) -> _Item:
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            try:
                item = self._next_nowait()
            except trio.WouldBlock:
                await self._waiters.park()
                parked = True
                continue
            # Taken: from here on, a cancellation cannot lose it. A receive that
            # waited has let other tasks run already; one that did not lets them
            # run once per RECEIVE_YIELD messages (as send() does per SEND_BATCH
            # datagrams), shielded from cancellation.
            if parked:
                self._unyielded = 0
            else:
                self._unyielded += 1
                if self._unyielded >= RECEIVE_YIELD:
                    self._unyielded = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
            return item

    async def receive(self) -> Message:
        if self._deferred is not None:
            # Checkpoint before taking the error, so a cancellation cannot lose it
            # (and another receiver may have taken it meanwhile).
            await trio.lowlevel.checkpoint()
            error = self._pop_deferred()
            if error is not None:
                raise error
        return self._take(await self._next())

    def receive_nowait(self) -> Message:
        error = self._pop_deferred()
        if error is not None:
            raise error
        return self._take(self._next_nowait())

    async def receive_batch(self, max_messages: int) -> list[Message]:
        batch = [await self.receive()]
        items = self._items
        consumed = self.on_consumed
        while items and len(batch) < max_messages:
            item = items.popleft()
            if type(item) is not Message:
                self._error_queued = False
                self._deferred = item.error  # type: ignore[union-attr]
                break
            self._bytes -= len(item.payload)
            if consumed is not None:
                consumed(item)
            batch.append(item)
        return batch

    def end(self) -> None:
        """No more messages will come: receivers get EndOfChannel once it is empty."""
        if self._state == "open":
            self._state = "ended"
        self._waiters.unpark_all()

    def close(self) -> None:
        """The endpoint is closed: receivers get ClosedResourceError."""
        self._state = "closed"
        self._waiters.unpark_all()


class _Receiving:
    """The receive side shared by servers and connections."""

    def _inbox(self) -> _Inbox:
        raise NotImplementedError

    async def receive(self) -> Message:
        """The next message. Cancel-safe: if a timeout (a cancel scope) cancels the
        wait, no message is lost; the next call gets it.

        A cancellation point on every call; while messages are waiting it lets
        other tasks run once per 16 messages rather than after each one (as
        ``send()`` does), so ``async for`` over a busy peer stays fast.

        Raises ``trio.EndOfChannel`` when this connection has ended (the peer was
        idle, restarted, or its handler returned) and ``trio.ClosedResourceError``
        once the endpoint is closed.
        """
        return await self._inbox().receive()

    def receive_nowait(self) -> Message:
        """The next message if one is waiting, else raise ``trio.WouldBlock``."""
        return self._inbox().receive_nowait()

    async def receive_batch(self, max_messages: int = 1024) -> list[Message]:
        """Wait for one message, then take up to ``max_messages`` that are waiting,
        all for one trip through the scheduler. Cancel-safe like ``receive()``."""
        if type(max_messages) is not int or max_messages < 1:
            raise ValueError(f"max_messages must be a positive integer, got {max_messages!r}")
        return await self._inbox().receive_batch(max_messages)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._inbox().receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class _Endpoint(_Receiving):
    """One socket, its engine and its tasks."""

    #: Whether messages of peers nobody receives from directly go to a channel
    #: of the endpoint's own (servers), or to their connection's (a client).
    _SHARED_INBOX = False

    def __init__(
        self,
        sock: stdlib_socket.socket,
        config: Config,
        topics: Iterable[str] | None = None,
        *,
        key: bytes | None = None,
    ) -> None:
        try:
            self._setup(sock, config, topics, key)
        except BaseException:
            sock.close()
            raise

    def _setup(
        self,
        sock: stdlib_socket.socket,
        config: Config,
        topics: Iterable[str] | None,
        key: bytes | None,
    ) -> None:
        self._sock = sock
        #: The trio socket around ``sock``: closing it wakes any task waiting on
        #: it. A fake network's socket (trioudp.testing) waits by itself.
        self._trio_socket: trio.socket.SocketType | None = None
        self._wait_readable: Callable[[], Awaitable[None]]
        self._wait_writable: Callable[[], Awaitable[None]]
        if is_fake(sock):
            fake: Any = sock
            self._wait_readable, self._wait_writable = fake.wait_readable, fake.wait_writable
        else:
            self._trio_socket = trio.socket.from_stdlib_socket(sock)
            self._wait_readable = partial(trio.lowlevel.wait_readable, sock)
            self._wait_writable = partial(trio.lowlevel.wait_writable, sock)
        #: Segmentation offload (Linux): several datagrams per system call.
        real = self._trio_socket is not None
        self._gso = real and config.offload and gso_available(sock)
        #: GRO is turned on once a datagram of GRO_WORTHWHILE bytes arrives:
        #: reading with recvmsg costs more per call than recvfrom, which small
        #: datagrams (never coalesced on their own) should not pay.
        self._gro = False
        self._gro_possible = real and config.offload
        self._config = config
        self._remote = peer_name(sock)
        if key is not None and not config.framing:
            raise ValueError("raw mode (framing=False) has no frames to authenticate; drop key=")
        self._engine = Engine(
            config,
            now=trio.current_time(),
            connected_to=self._remote,
            key=key,
            new_session_id=random_session_id if key is None else _keyed_session_id,
        )
        self._addresses = AddressBook(sock.family)
        self._connections: dict[Address, Connection] = {}
        self._shared = self._new_inbox() if self._SHARED_INBOX else None
        self._send_lock = trio.Lock()
        #: Datagrams sent since the sending task last let others run.
        self._unyielded = 0
        #: Engine output the kernel had no room for yet, and the event that wakes
        #: the task sending it.
        self._backlog: deque[tuple[bytes, Address, int | None]] = deque()
        self._backlog_waiting = trio.Event()
        self._timer_scope = trio.CancelScope()
        self._closed = False
        self._serving: (
            tuple[trio.Nursery, Callable[..., Awaitable[object]], tuple[Any, ...]] | None
        ) = None
        self.subscriptions = topics
        peer = self._engine.client_peer
        if peer is not None:
            connection = Connection(self, peer)
            peer.handle = connection
            self._connections[peer.address] = connection

    def _new_inbox(self) -> _Inbox:
        inbox = _Inbox(self._engine, self._config)
        if self._config.reliable:
            inbox.on_consumed = self._consumed
        return inbox

    def _consumed(self, message: Message) -> None:
        if self._engine.count_consumed(message) and not self._closed:
            self._flush_output()

    @property
    def socket(self) -> trio.socket.SocketType:
        """The trio socket, for options trioudp does not set itself. Do not
        receive from it: that would take datagrams from trioudp."""
        if self._trio_socket is None:
            raise RuntimeError("an endpoint on a trioudp.testing.FakeNetwork has no real socket")
        return self._trio_socket

    @property
    def local_address(self) -> Address:
        """The address the socket is bound to (with the port picked for port 0)."""
        return self._sock.getsockname()  # type: ignore[no-any-return]

    @property
    def config(self) -> Config:
        """The options this endpoint runs with."""
        return self._config

    # -- topics -------------------------------------------------------------------

    @property
    def subscriptions(self) -> frozenset[str] | None:
        """The topics whose messages are delivered ("" stands for messages with
        no topic), or None for every message. Others are dropped before their
        payload is even copied, and counted as ``datagrams_filtered``."""
        topics = self._engine.topics
        return None if topics is None else frozenset(topic.decode() for topic in topics)

    @subscriptions.setter
    def subscriptions(self, topics: Iterable[str] | None) -> None:
        self._engine.subscribe(None if topics is None else frozenset(_topics(topics)))

    def subscribe(self, *topics: str) -> None:
        """Deliver messages of these topics too (the first call narrows delivery
        from every message to just these)."""
        self.subscriptions = (self.subscriptions or frozenset()) | frozenset(_topics(topics))

    def unsubscribe(self, *topics: str) -> None:
        """Stop delivering messages of these topics."""
        current = self.subscriptions
        if current is None:
            raise ValueError(
                "this endpoint delivers every topic; subscribe() to the ones you want instead"
            )
        self.subscriptions = current - frozenset(_topics(topics))

    # -- tasks --------------------------------------------------------------------

    async def _receive_loop(self, *, task_status: trio.TaskStatus[None]) -> None:
        buffer = bytearray(_RECEIVE_BUFFER)
        wait_readable = self._wait_readable
        checkpoint = trio.lowlevel.checkpoint
        task_status.started()
        while True:
            drain = self._drain_coalesced if self._gro else self._drain
            full = drain(buffer, trio.current_time())
            self._after_engine()
            if full:
                await checkpoint()
            else:
                await wait_readable()

    def _drain(self, buffer: bytearray, now: float) -> bool:
        """Read datagrams into the engine until the socket has none left (False)
        or RECEIVE_BATCH were read, or GRO was just turned on (True)."""
        receive_datagram = self._engine.receive_datagram
        recvfrom_into = self._sock.recvfrom_into
        view = memoryview(buffer)
        read = 0
        while read < RECEIVE_BATCH:
            try:
                size, address = recvfrom_into(buffer)
            except BlockingIOError:
                return False
            except OSError as exc:
                self._receive_error(exc)
            else:
                receive_datagram(view[:size], address, now)
                if size >= GRO_WORTHWHILE and self._gro_possible:
                    self._gro_possible = False
                    self._gro = enable_gro(self._sock)
                    if self._gro:
                        return True
            read += 1
        return True

    def _drain_coalesced(self, buffer: bytearray, now: float) -> bool:
        """_drain with GRO on: a read may bring several datagrams of one size
        (the last may be shorter), which go to the engine one by one."""
        engine = self._engine
        receive_datagram = engine.receive_datagram
        recvmsg_into = self._sock.recvmsg_into
        buffers = [buffer]
        view = memoryview(buffer)
        read = 0
        while read < RECEIVE_BATCH:
            try:
                size, ancillary, _flags, address = recvmsg_into(buffers, GRO_ANCILLARY_SIZE)
            except BlockingIOError:
                return False
            except OSError as exc:
                self._receive_error(exc)
            else:
                if ancillary and (segment := gro_segment_size(ancillary)):
                    for datagram in split_coalesced(view, size, segment):
                        engine.datagrams_coalesced += 1
                        receive_datagram(datagram, address, now)
                else:
                    receive_datagram(view[:size], address, now)
            read += 1
        return True

    def _receive_error(self, exc: OSError) -> None:
        if not is_unreachable(exc):
            raise exc
        engine = self._engine
        engine.receive_errors += 1
        peer = engine.client_peer
        engine.count_unreachable(peer)
        logger.debug("ICMP error on %s: %s", self.local_address, exc)
        if peer is not None:
            handle = peer.handle
            if isinstance(handle, Connection):
                handle._claim().put_error(
                    UnreachableError(exc.errno or 0, exc.strerror or str(exc), peer.address)
                )

    async def _timer_loop(self) -> None:
        engine = self._engine
        while True:
            with trio.CancelScope(deadline=engine.next_deadline()) as self._timer_scope:
                await trio.sleep_forever()
            engine.handle_timer(trio.current_time())
            self._after_engine()

    def _after_engine(self) -> None:
        """Hand out what the engine produced and keep the timer task's deadline
        up to date."""
        engine = self._engine
        events = engine.take_events()
        if events:
            self._dispatch(events)
        self._flush_output()
        deadline = engine.next_deadline()
        self._timer_scope.deadline = min(self._timer_scope.deadline, deadline)

    def _flush_output(self) -> None:
        """Send what the engine produced (acknowledgements, reliable data); what
        the kernel cannot take now goes to the backlog, behind what is there."""
        datagrams = self._engine.take_datagrams(trio.current_time())
        if not datagrams or self._closed:
            return
        backlog = self._backlog
        if backlog:
            backlog.extend(datagrams)
            return
        runs = self._runs(
            [len(datagram) for datagram, _, _ in datagrams],
            [(address, priority) for _, address, priority in datagrams],
        )
        for start, stop in runs:
            try:
                self._send_now(datagrams[start:stop])
            except BlockingIOError:
                backlog.extend(datagrams[start:])
                self._backlog_waiting.set()
                return

    def _send_now(self, run: Sequence[tuple[bytes, Address, int | None]]) -> None:
        """Send a run of engine output (one datagram, or a GSO run of several to
        one address with one priority). Raises BlockingIOError if the kernel
        has no room; other failures drop it (counted): reliable delivery sends
        again whatever is lost, as if the network had lost it."""
        if len(run) > 1 and not self._gso:
            # Segmentation was refused (by this run, or since it was cut).
            for index in range(len(run)):
                self._send_now(run[index : index + 1])
            return
        _, address, priority = run[0]
        marking: Sequence[tuple[int, int, bytes]] = ()
        if priority is not None and priority != self._config.priority:
            marking = [priority_cmsg(self._sock.family, priority)]
        connected = address == self._remote
        try:
            self._put_on_wire([datagram for datagram, _, _ in run], address, marking)
        except BlockingIOError:
            raise
        except OSError as exc:
            if self._closed:
                return
            if is_unreachable(exc) and connected:
                self._receive_error(exc)
                return
            if len(run) > 1 and self._offload_refused(exc):
                self._send_now(run)  # now one datagram per call
                return
            if exc.errno not in (errno.ENOBUFS, errno.EMSGSIZE, errno.EPERM):
                raise
            peer = self._engine.peers.get(address)
            if peer is not None:
                self._engine.count_send_dropped(peer, len(run))
            logger.debug("dropped %d datagram(s) to %s: %s", len(run), address, exc)

    async def _backlog_loop(self) -> None:
        backlog = self._backlog
        while True:
            await self._backlog_waiting.wait()
            self._backlog_waiting = trio.Event()
            while backlog:
                try:
                    self._send_now([backlog[0]])
                except BlockingIOError:
                    async with self._send_lock:
                        await self._wait_writable()
                    continue
                backlog.popleft()

    def _dispatch(self, events: list[object]) -> None:
        shared = self._shared
        for event in events:
            if type(event) is Message:
                connection: Connection = event._origin.handle  # type: ignore[union-attr,assignment]
                inbox = connection._own
                if inbox is None:
                    inbox = shared if shared is not None else connection._claim()
                inbox.put(event)
            elif type(event) is PeerOpened:
                connection = Connection(self, event.peer)
                event.peer.handle = connection
                self._connections[event.peer.address] = connection
                if self._serving is not None:
                    self._start_handler(connection)
            elif type(event) is PeerWakeup:
                handle = event.peer.handle
                if isinstance(handle, Connection):
                    handle._wake()
            elif type(event) is PeerState:
                handle = event.peer.handle
                if isinstance(handle, Connection) and handle._ended is None:
                    handle._set_state(event.state)
            elif type(event) is PeerClosed:
                connection = event.peer.handle  # type: ignore[assignment]
                connection._end(event.reason)
                if self._connections.get(event.peer.address) is connection:
                    del self._connections[event.peer.address]

    def _start_handler(self, connection: Connection) -> None:
        assert self._serving is not None
        nursery, handler, args = self._serving
        connection._claim()
        nursery.start_soon(self._run_handler, handler, connection, args)

    async def _run_handler(
        self,
        handler: Callable[..., Awaitable[object]],
        connection: Connection,
        args: tuple[Any, ...],
    ) -> None:
        try:
            await handler(connection, *args)
            if self._config.reliable:
                # What the handler sent is delivered before its peer is forgotten;
                # a peer gone meanwhile is counted (messages_failed), and must not
                # end serve() for everyone else.
                try:
                    await connection.flush()
                except PeerLostError as exc:
                    logger.debug("%s", exc)
        finally:
            if not self._closed:
                self._engine.close_peer(connection._peer)
                self._after_engine()

    # -- sending ------------------------------------------------------------------

    async def _send_to(
        self,
        peer: Peer,
        payloads: Sequence[Buffer],
        *,
        topic: str = "",
        priority: int | None = None,
        group: bool = False,
    ) -> None:
        """Send one message (``payloads`` of one) or a batch."""
        if self._closed:
            raise trio.ClosedResourceError("this trioudp endpoint is closed")
        if peer.failure is not None:
            raise self._lost(peer)
        if self._config.reliable and not group:
            await self._send_reliable(peer, payloads, topic, priority)
            return
        marking: list[tuple[int, int, bytes]] = []
        if priority is not None and check_priority(priority) != self._config.priority:
            marking.append(priority_cmsg(self._sock.family, priority))
        await trio.lowlevel.checkpoint_if_cancelled()
        now = trio.current_time()
        if len(payloads) == 1 and not topic and not group and not marking:
            # The commonest send: one small message, in one datagram.
            datagram = self._engine.encode_small(peer, payloads[0], now)
            if datagram is not None:
                try:
                    if peer.address == self._remote:
                        self._sock.send(datagram)
                    else:
                        self._sock.sendto(datagram, peer.address)
                except OSError as exc:
                    await self._send_run(peer, [datagram], marking, failed=exc)
                await self._yield_sometimes()
                return
        if len(payloads) == 1:
            datagrams = self._engine.encode(peer, payloads[0], now, topic=topic, group=group)
        else:
            datagrams = self._engine.encode_batch(peer, payloads, now, topic=topic, group=group)
        for start, stop in self._runs(list(map(len, datagrams))):
            await self._send_run(peer, datagrams[start:stop], marking)
            await self._yield_sometimes()

    def _runs(
        self, sizes: Sequence[int], keys: Sequence[object] | None = None
    ) -> Iterable[tuple[int, int]]:
        """``(start, stop)`` of the runs of datagrams (of these sizes, and
        ``keys`` that must match within a run) that go to the kernel in one
        call each: GSO runs, or one datagram each."""
        if self._gso and len(sizes) > 1:
            return gso_runs(sizes, keys)
        return ((index, index + 1) for index in range(len(sizes)))

    async def _send_run(
        self,
        peer: Peer,
        run: Sequence[bytes],
        marking: list[tuple[int, int, bytes]],
        *,
        failed: OSError | None = None,
    ) -> None:
        """Send a run of datagrams to ``peer`` in one call, waiting while the
        kernel has no room for them (``failed``: how a first try went)."""
        address = peer.address
        connected = address == self._remote
        backoff = NOBUFS_FIRST_WAIT
        while True:
            if len(run) > 1 and not self._gso:
                # Segmentation was refused (by this send, or since the run was cut).
                for datagram in run:
                    await self._send_run(peer, [datagram], marking)
                return
            try:
                if failed is not None:
                    error, failed = failed, None
                    raise error
                self._put_on_wire(run, address, marking)
                return
            except BlockingIOError:
                async with self._send_lock:
                    await self._wait_writable()
            except OSError as exc:
                if is_unreachable(exc) and connected:
                    # An earlier datagram's ICMP error, reported on this send; this
                    # datagram was not sent, so note the error and send it again.
                    self._receive_error(exc)
                    continue
                if len(run) > 1 and self._offload_refused(exc):
                    continue
                if exc.errno == errno.ENOBUFS:
                    # The kernel is out of buffers and says nothing when it has
                    # some again: back off, then give the datagrams up as a full
                    # router would. Never a busy loop.
                    if backoff > NOBUFS_LAST_WAIT:
                        self._engine.count_send_dropped(peer, len(run))
                        return
                    await trio.sleep(backoff)
                    backoff *= 2
                    continue
                raise self._send_error(exc, len(run[0]), address) from exc

    def _offload_refused(self, exc: OSError) -> bool:
        """Whether a GSO send failed because segmentation is not available (this
        device, route or kernel): if so, send one datagram per call from now on."""
        if exc.errno not in GSO_UNSUPPORTED:
            return False
        self._gso = False
        logger.debug("UDP GSO refused on %s (%s): one datagram per send", self.local_address, exc)
        return True

    def _put_on_wire(
        self,
        run: Sequence[bytes],
        address: Address,
        marking: Sequence[tuple[int, int, bytes]],
    ) -> None:
        """Hand one datagram, or a GSO run of several, to the socket: with a DSCP
        marking as ancillary data if there is one, without an address to the
        peer the socket is connected to."""
        sock = self._sock
        connected = address == self._remote
        if len(run) > 1:
            ancillary = [*marking, segment_cmsg(len(run[0]))]
            sock.sendmsg(run, ancillary, 0, *(() if connected else (address,)))
            self._engine.datagrams_offloaded += len(run)
        elif marking:
            sock.sendmsg(run, marking, 0, *(() if connected else (address,)))
        elif connected:
            sock.send(run[0])
        else:
            sock.sendto(run[0], address)

    async def _yield_sometimes(self) -> None:
        """Let other tasks run once per SEND_BATCH datagrams sent, not after every
        one: a trip through the scheduler costs more than a send, and a receiver
        woken per datagram loses its batching. Every send() is still a
        cancellation point (it checks before sending anything)."""
        self._unyielded += 1
        if self._unyielded >= SEND_BATCH:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _send_reliable(
        self, peer: Peer, payloads: Sequence[Buffer], topic: str, priority: int | None
    ) -> None:
        """Queue messages, waiting for room in the peer's window as needed; the
        engine sends them (small ones several to a datagram when they queue up)."""
        engine = self._engine
        if priority is not None:
            check_priority(priority)
        engine.check_payloads(payloads)
        waited = False
        for payload in payloads:
            while not engine.has_room(peer):
                self._after_engine()
                await self._wait_for(peer)
                waited = True
            if not waited:
                await trio.lowlevel.checkpoint_if_cancelled()
                waited = True
            engine.queue(peer, payload, trio.current_time(), topic=topic, priority=priority)
        self._after_engine()
        await self._yield_sometimes()

    async def _wait_for(self, peer: Peer) -> None:
        """Wait until ``peer``'s reliable sender changes (an acknowledgement came,
        or it failed); raise if it failed or the endpoint closed."""
        connection = cast("Connection", peer.handle)
        await connection._park()
        if self._closed:
            raise trio.ClosedResourceError("this trioudp endpoint is closed")
        if peer.failure is not None:
            raise self._lost(peer)

    def _lost(self, peer: Peer) -> PeerLostError:
        reason = peer.failure
        host, port = peer.address[0], peer.address[1]
        failed = peer.counters.messages_failed
        if reason == "not_reliable":
            text = (
                f"the peer at {host} port {port} does not take reliable messages (it was "
                f"opened without reliable=True) and dropped them; open both ends with "
                f"reliable=True"
            )
        elif reason == "reliable_only":
            text = (
                f"the peer at {host} port {port} takes only reliable messages (it was opened "
                f"with reliable=True) and dropped ours; open this end with reliable=True too"
            )
        elif reason == "timeout":
            text = (
                f"the peer at {host} port {port} answered nothing for "
                f"{self._config.give_up_timeout} s (give_up_timeout): it is gone or cut off"
            )
        else:
            text = f"the connection to {host} port {port} ended ({reason})"
        if failed:
            text += f"; {failed} message{'s' if failed > 1 else ''} not acknowledged"
        return PeerLostError(text, peer.address, failed)

    def _send_error(self, exc: OSError, size: int, address: Address) -> Exception:
        if exc.errno == errno.EMSGSIZE:
            return OSError(
                exc.errno,
                f"a {size}-byte datagram is too large to send to {address[0]}: lower "
                f"max_datagram_size (1200 crosses any Internet path)",
            )
        if self._closed:
            return trio.ClosedResourceError("this trioudp endpoint is closed")
        return exc

    # -- lifetime -----------------------------------------------------------------

    def _close(self) -> None:
        self._closed = True
        self._backlog.clear()
        if self._shared is not None:
            self._shared.close()
        for connection in self._connections.values():
            connection._close()
        client = self._engine.client_peer
        if client is not None and isinstance(client.handle, Connection):
            client.handle._close()
        if self._trio_socket is not None:
            self._trio_socket.close()
        else:
            self._sock.close()

    def statistics(self) -> EndpointStatistics:
        """Totals over every peer this endpoint has known (a snapshot)."""
        return self._engine.statistics()


class _Serving(_Endpoint):
    """An endpoint for any number of peers, with a shared receive channel."""

    _SHARED_INBOX = True

    def _inbox(self) -> _Inbox:
        assert self._shared is not None
        return self._shared

    @property
    def connections(self) -> Mapping[Address, Connection]:
        """The peers known right now, by address (a read-only live view)."""
        return MappingProxyType(self._connections)

    async def send_to(
        self, address: Any, payload: Buffer, *, topic: str = "", priority: int | None = None
    ) -> None:
        """Send one message to ``address`` (a ``(host, port)`` tuple; a name is
        resolved once and remembered), with an optional ``topic`` and
        ``priority`` (a :class:`Priority` or DSCP for this message only). Waits
        only while the kernel's buffer is full."""
        peer = await self._peer_at(address)
        await self._send_to(peer, [payload], topic=topic, priority=priority)

    async def send_batch_to(
        self,
        address: Any,
        payloads: Iterable[Buffer],
        *,
        topic: str = "",
        priority: int | None = None,
    ) -> None:
        """Send several messages to ``address``, in order, as ``send_to`` does
        each (see :meth:`Connection.send_batch`)."""
        peer = await self._peer_at(address)
        await self._send_to(peer, _batch(payloads), topic=topic, priority=priority)

    async def _peer_at(self, address: Any) -> Peer:
        """The peer to send to at ``address`` (resolved once and remembered)."""
        peer = self._engine.peer_for(await self._addresses.lookup(address), trio.current_time())
        self._after_engine()
        return peer

    async def serve(
        self,
        handler: Callable[[Connection, Unpack[Ts]], Awaitable[object]],
        *args: Unpack[Ts],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Run ``await handler(connection, *args)`` in a new task for every peer,
        the ones already known and each new one, until cancelled (the shape of
        trio's ``DTLSEndpoint.serve``). Iterate the connection for that peer's
        messages; the iteration ends when the peer goes idle or restarts.

        When a handler returns, the peer is forgotten: its next message starts a
        new connection and a new handler. An exception in a handler ends
        ``serve()`` (and the other handlers) and propagates from it; a lone one
        is raised as itself.
        """
        if self._serving is not None:
            raise trio.BusyResourceError("serve() is already running on this server")
        if self._closed:
            raise trio.ClosedResourceError("this trioudp server is closed")
        try:
            async with trio.open_nursery() as nursery:
                self._serving = (nursery, handler, args)
                try:
                    for connection in list(self._connections.values()):
                        if connection._own is None:
                            self._start_handler(connection)
                    task_status.started()
                    await trio.sleep_forever()
                finally:
                    self._serving = None
        except BaseExceptionGroup as group:
            raise_lone(group)
        raise AssertionError("unreachable")  # pragma: no cover


class UDPServer(_Serving):
    """A UDP socket that talks to any number of peers. Made by
    :func:`open_udp_server` or :func:`from_socket`; iterate it for the messages of
    every peer, or :meth:`serve` each peer in its own task.

    A message goes to its peer's Connection once something receives from that
    connection (``serve()`` hands it to a handler, or you call its
    ``receive()`` or iterate it), and to the server's own channel otherwise. So
    with ``serve()`` running, iterating the server yields nothing; messages
    already in the server's channel stay there.
    """

    async def send(
        self, address: Any, payload: Buffer, *, topic: str = "", priority: int | None = None
    ) -> None:
        """Send one message to ``address``: the same as :meth:`send_to`."""
        await self.send_to(address, payload, topic=topic, priority=priority)


class Connection(_Receiving):
    """One peer: send to it, receive its messages, read its statistics.

    ``open_udp_connection`` gives one for the peer it connects to; a server makes
    one for each peer it hears from (``server.connections``, ``serve()``).
    """

    def __init__(self, endpoint: _Endpoint, peer: Peer) -> None:
        self._endpoint = endpoint
        self._peer = peer
        self._own: _Inbox | None = None
        self._ended: str | None = None
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
    def ended(self) -> str | None:
        """None while the connection is live; why it ended otherwise: ``"idle"``,
        ``"replaced"`` (the peer restarted), ``"evicted"``, ``"closed"``."""
        return self._ended

    def statistics(self) -> PeerStatistics:
        """What happened with this peer (a snapshot)."""
        return self._peer.statistics()

    @property
    def state(self) -> StateValue:
        """The connection's :class:`ConnectionState` as a trio-util ``AsyncValue``:
        read ``state.value``, or wait for one without polling, e.g.
        ``await connection.state.wait_value(trioudp.ConnectionState.ESTABLISHED)``."""
        if self._state is None:
            now = ConnectionState.CLOSED if self._ended is not None else self._peer.state
            self._state = AsyncValue(now)
        return cast("StateValue", self._state)

    def _set_state(self, state: ConnectionState) -> None:
        if self._state is not None:
            self._state.value = state

    def _wake(self) -> None:
        if self._waiters is not None:
            self._waiters.unpark_all()

    async def _park(self) -> None:
        if self._waiters is None:
            self._waiters = trio.lowlevel.ParkingLot()
        await self._waiters.park()

    async def flush(self) -> None:
        """Wait until every message sent so far on a reliable connection is
        acknowledged by the peer (at once on an unreliable one, which has nothing
        to wait for). Raises :class:`PeerLostError` if the peer stops answering
        for ``give_up_timeout`` seconds or refuses reliable delivery. Cancel-safe:
        a timeout around it loses nothing; the messages stay queued."""
        endpoint = self._endpoint
        peer = self._peer
        if peer.failure is not None:
            raise endpoint._lost(peer)
        while endpoint._engine.unacknowledged(peer):
            if endpoint._closed:
                raise trio.ClosedResourceError("this trioudp endpoint is closed")
            await endpoint._wait_for(peer)
        await trio.lowlevel.checkpoint()

    async def send(self, payload: Buffer, *, topic: str = "", priority: int | None = None) -> None:
        """Send one message to the peer: framed, and fragmented if it is larger
        than one datagram, with an optional ``topic`` and ``priority`` (a
        :class:`Priority` or DSCP for this message only). Waits only while the
        kernel's buffer is full (reliable mode: while the peer's window is).

        A cancellation point on every call; it lets other tasks run at least
        once per 16 datagrams sent, rather than after each one."""
        await self._endpoint._send_to(self._live_peer(), [payload], topic=topic, priority=priority)

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
        await self._endpoint._send_to(
            self._live_peer(), _batch(payloads), topic=topic, priority=priority
        )

    def _live_peer(self) -> Peer:
        """The peer to send to: this connection's, or if it ended while the
        endpoint is open, whichever peer state the address has now (so one
        sequence space is used)."""
        peer = self._peer
        if peer.closed:
            peer = self._endpoint._engine.peer_for(peer.address, trio.current_time())
            self._endpoint._after_engine()
        return peer

    def _inbox(self) -> _Inbox:
        return self._claim()

    def _claim(self) -> _Inbox:
        inbox = self._own
        if inbox is None:
            inbox = self._own = self._endpoint._new_inbox()
            if self._endpoint._closed:
                inbox.close()
            elif self._ended is not None:
                inbox.end()
        return inbox

    def _end(self, reason: str) -> None:
        self._ended = reason
        self._set_state(ConnectionState.CLOSED)
        self._wake()
        if self._own is not None:
            self._own.end()

    def _close(self) -> None:
        if self._ended is None:
            self._ended = "closed"
        self._set_state(ConnectionState.CLOSED)
        self._wake()
        if self._own is not None:
            self._own.close()


def _batch(payloads: Iterable[Buffer]) -> list[Buffer]:
    if isinstance(payloads, (bytes, bytearray, memoryview, str)):
        raise TypeError(
            "send_batch() takes an iterable of payloads, e.g. [b'one', b'two'], not one "
            "payload; use send() for a single message"
        )
    batch = list(payloads)
    if not batch:
        raise ValueError("send_batch() needs at least one payload")
    return batch


def check_key(key: Buffer | None) -> bytes | None:
    """The ``key=`` of an ``open_*`` call, checked."""
    if key is None:
        return None
    try:
        secret = bytes(key)
    except TypeError:
        raise TypeError(f"key must be bytes, got {type(key).__name__}") from None
    if len(secret) not in KEY_SIZES:
        raise ValueError(
            f"key must be {KEY_SIZES.start} to {KEY_SIZES.stop - 1} bytes, got {len(secret)}: "
            f"a random secret shared by both ends, such as secrets.token_bytes(32)"
        )
    return secret


def _keyed_session_id() -> int:
    return keyed_session_id(time.time())


def _topics(topics: Iterable[str]) -> list[str]:
    if isinstance(topics, str):
        raise TypeError(f"topics is a collection of strings; for one topic pass [{topics!r}]")
    checked = list(topics)
    for topic in checked:
        encode_topic(topic)
    return checked


def raise_lone(group: BaseExceptionGroup[Any]) -> NoReturn:
    """Re-raise the one real exception in ``group`` as itself (keeping its own
    context), as trio's ``as_safe_channel`` does; a group of several stays one."""
    lone: BaseException = group
    while isinstance(lone, BaseExceptionGroup):
        members = cast("BaseExceptionGroup[BaseException]", lone).exceptions
        others = [e for e in members if not isinstance(e, trio.Cancelled)]
        if len(others) > 1 or any(isinstance(e, (KeyboardInterrupt, SystemExit)) for e in others):
            raise lone
        lone = others[0] if others else members[0]
    context = lone.__context__
    try:
        raise lone
    finally:
        lone.__context__ = context
        del lone, context


@asynccontextmanager
async def _running(endpoint: _Endpoint) -> AsyncGenerator[None, None]:
    try:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(endpoint._receive_loop)
                nursery.start_soon(endpoint._timer_loop)
                nursery.start_soon(endpoint._backlog_loop)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            endpoint._close()
    except BaseExceptionGroup as group:
        raise_lone(group)


@asynccontextmanager
async def open_udp_server(
    host: str | None,
    port: int,
    *,
    topics: Iterable[str] | None = None,
    key: Buffer | None = None,
    config: Config | None = None,
    **options: Unpack[Options],
) -> AsyncGenerator[UDPServer, None]:
    """Bind a UDP socket to ``host``:``port`` and serve every peer that sends to it.

    ``host`` None or ``""`` binds every interface (IPv4 and IPv6 where the system
    allows one socket for both); port 0 picks a free port (see
    ``server.local_address``). ``topics`` subscribes to just those topics (see
    ``subscriptions``). ``key`` (16 to 64 secret bytes shared by every peer)
    authenticates every frame; frames without it are dropped. Options are :class:`Config`'s fields, as keywords or as
    ``config=``. Leaving the block stops the server's tasks and closes its
    socket; an error in them is raised here.
    """
    chosen = make_config(config, options)
    secret = check_key(key)
    server = UDPServer(await server_socket(host, port, chosen), chosen, topics, key=secret)
    async with _running(server):
        yield server


@asynccontextmanager
async def open_udp_connection(
    host: str,
    port: int,
    *,
    local_address: tuple[str, int] | None = None,
    topics: Iterable[str] | None = None,
    key: Buffer | None = None,
    config: Config | None = None,
    **options: Unpack[Options],
) -> AsyncGenerator[Connection, None]:
    """Connect a UDP socket to ``host``:``port`` (resolved once) and talk to that
    one peer. The socket only takes datagrams from the peer, and the kernel's
    ICMP errors for it are raised by ``receive()`` as :class:`UnreachableError`.
    ``local_address`` binds the local end first. Leaving the block closes it.
    """
    chosen = make_config(config, options)
    secret = check_key(key)
    endpoint = _Endpoint(
        await client_socket(host, port, local_address, chosen), chosen, topics, key=secret
    )
    connection = endpoint._connections[endpoint._remote]  # type: ignore[index]
    connection._claim()
    async with _running(endpoint):
        yield connection


@asynccontextmanager
async def from_socket(
    sock: stdlib_socket.socket | trio.socket.SocketType,
    *,
    topics: Iterable[str] | None = None,
    key: Buffer | None = None,
    config: Config | None = None,
    **options: Unpack[Options],
) -> AsyncGenerator[UDPServer, None]:
    """Serve on a UDP socket that is already bound (Twisted's
    ``adoptDatagramPort``; a socket inherited from systemd). trioudp takes it over
    and closes it when the block ends; pass ``sock.dup()`` to keep your own."""
    chosen = make_config(config, options)
    secret = check_key(key)
    server = UDPServer(adopt_socket(sock), chosen, topics, key=secret)
    async with _running(server):
        yield server
