"""The trio shell around the engine: sockets, tasks, channels, cancel scopes.

An endpoint owns one socket (through its ``Transport``), one ``Engine``, and
two tasks in a nursery that its ``async with`` block scopes: the receive task
drains the socket in batches into the engine, and the timer task sleeps until
the engine's next deadline; a third, the backlog task, runs only while
datagrams wait for room in the kernel. After each piece of engine work the
shell does the same three things (``_after_engine``): it reads the engine's
events (waking receivers, making connections, moving states), hands the
engine's output to the transport, and moves the timer task's deadline. It
makes no protocol decision of its own.

A trip through trio's scheduler costs several microseconds, far more than a
datagram's own work, so the receive task pays it once per batch of up to 128
datagrams, and ``send()`` and ``receive()`` let other tasks run once per 16
datagrams or messages (see docs/design.md).

Reliable mode. ``send()`` queues the message in the engine (waiting, while the
peer's send window is full, on the connection's parking lot, which every
acknowledgement wakes) and puts what the engine then has to send on the wire.
"""

from __future__ import annotations

import math
import sys
from contextlib import suppress
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn, cast

import trio

from ._channel import Inbox, Receiving
from ._connection import Connection, batch
from ._engine import Engine, random_session_id
from ._errors import PeerLostError, awaitable, check_handler
from ._events import (
    Event,
    MessagesWaiting,
    PeerClosed,
    PeerMoved,
    PeerOpened,
    SendProgress,
    StateChanged,
    assert_never,
)
from ._keys import session_id_now
from ._multicast import check_priority
from ._peer import LostPeer
from ._reasons import LostReason
from ._sending import encode_topic
from ._sockethook import is_fake
from ._sockets import AddressBook, peer_name, probing
from ._transport import Drained, Sent, Transport

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    import socket as stdlib_socket
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
    from typing import TypeVar

    from typing_extensions import Buffer, TypeVarTuple, Unpack

    from ._config import Config
    from ._delivery import Queue, Unreachable
    from ._message import Address, Message
    from ._peer import Loss, Peer
    from ._statistics import EndpointStatistics

    Ts = TypeVarTuple("Ts")
    K = TypeVar("K")
    V = TypeVar("V")

#: System calls that sent datagrams (over any number of ``send()`` calls)
#: before the sending task lets other tasks run.
SEND_BATCH = 16
#: Scheduler turns the receive task waits, after a message filled its queue,
#: for a consumer to take from it, so that the socket is read as fast as
#: consumers take: enough for one that awaits a few times per message (sends
#: a reply, passes it on through a memory channel), given that trio runs each
#: batch's tasks in random order. A consumer that does not take by then
#: (stalled, or waiting on something else) holds nothing up: the socket is read
#: on for the other peers, and its full queue applies its overflow policy.
FILLED_TURNS = 8


class Endpoint:
    """One socket, its engine and its tasks."""

    def __init__(
        self,
        sock: stdlib_socket.socket,
        config: Config,
        topics: Iterable[str] | None = None,
        *,
        key: tuple[bytes, ...] | None = None,
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
        key: tuple[bytes, ...] | None,
    ) -> None:
        self._sock = sock
        #: The trio socket around ``sock``: closing it wakes any task waiting on
        #: it. A fake network's socket (trioudp.testing) waits by itself.
        self._trio_socket: trio.socket.SocketType | None = None
        self._wait_readable: Callable[[], Awaitable[None]]
        wait_writable: Callable[[], Awaitable[None]]
        if is_fake(sock):
            fake: Any = sock
            self._wait_readable, wait_writable = fake.wait_readable, fake.wait_writable
        else:
            self._trio_socket = trio.socket.from_stdlib_socket(sock)
            self._wait_readable = partial(trio.lowlevel.wait_readable, sock)
            wait_writable = partial(trio.lowlevel.wait_writable, sock)
        if self._trio_socket is not None:
            config = probing(sock, config)
        self._config = config
        self._reliable = config.reliable
        self._remote = peer_name(sock)
        _check_key_framing(config, key)
        self._engine = Engine(
            config,
            now=trio.current_time(),
            connected_to=self._remote,
            key=None if key is None else key[0],
            previous_keys=() if key is None else key[1:],
            new_session_id=random_session_id if key is None else session_id_now,
        )
        self._transport = Transport(
            sock,
            config,
            self._engine,
            remote=self._remote,
            real=self._trio_socket is not None,
            wait_writable=wait_writable,
            on_gone=self._close,
            on_engine=self._engine_changed,
        )
        self._addresses = AddressBook(sock.family)
        self._connections: dict[Address, Connection] = {}
        #: Datagrams sent since the sending task last let others run.
        self._unyielded = 0
        self._timer_scope = trio.CancelScope()
        #: The deadline the timer task sleeps until (reading a cancel scope's
        #: deadline back costs more than a send).
        self._wake_at = math.inf
        #: The scope of the endpoint's tasks, while they run.
        self._tasks: trio.CancelScope | None = None
        self._closed = False
        self._serving: (
            tuple[trio.Nursery, Callable[..., Awaitable[object]], tuple[Any, ...]] | None
        ) = None
        #: The cancel scope of each serve() handler, oldest first; how many run
        #: (a new one waits while max_peers do); set when one returns.
        self._handlers: dict[Connection, trio.CancelScope] = {}
        self._running = 0
        self._handler_returned = trio.Event()
        self.subscriptions = topics
        peer = self._engine.client_peer
        if peer is not None:
            self._connection_for(peer)

    @property
    def socket(self) -> trio.socket.SocketType:
        """The trio socket, for options trioudp does not set itself. Do not
        receive from it: that would take datagrams from trioudp."""
        self._check_open()
        if self._trio_socket is None:
            raise RuntimeError("an endpoint on a trioudp.testing.FakeNetwork has no real socket")
        return self._trio_socket

    @property
    def local_address(self) -> Address:
        """The address the socket is bound to (with the port picked for port 0)."""
        self._check_open()
        return self._sock.getsockname()  # type: ignore[no-any-return]

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this trioudp endpoint is closed")

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
        self._check_open()
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
        wait_readable = self._wait_readable
        drain = self._transport.drain
        delivery = self._engine.delivery
        checkpoint = trio.lowlevel.checkpoint
        task_status.started()
        while True:
            drained = drain(trio.current_time())
            self._after_engine()
            if drained is Drained.EMPTY:
                await wait_readable()
            elif drained is Drained.MORE:
                await checkpoint()
            else:  # A message filled its queue: its consumer runs first.
                takes = delivery.takes
                for _ in range(FILLED_TURNS):
                    await checkpoint()
                    if delivery.takes != takes:
                        break

    async def _timer_loop(self) -> None:
        engine = self._engine
        while True:
            self._wake_at = engine.next_deadline()
            with trio.CancelScope(deadline=self._wake_at) as self._timer_scope:
                await trio.sleep_forever()
            engine.handle_timer(trio.current_time())
            self._after_engine()

    def _after_engine(self) -> None:
        """Hand out what the engine produced: events to their connections and
        receivers, datagrams to the transport; keep the timer task's deadline
        up to date."""
        engine = self._engine
        events = engine.events()
        if events:
            self._dispatch(events)
        if engine.has_output:
            self._transport.push(engine.datagrams_to_send(trio.current_time()))
        self._update_deadline()

    def _engine_changed(self) -> None:
        """The transport told the engine a send failed (from whichever task
        sent): hand out the events, so that a receiver parked for the error
        report, or a flush waiting on a peer that failed, wakes now. Its
        datagrams wait: the transport is in the middle of sending."""
        engine = self._engine
        if engine.has_events:
            self._dispatch(engine.events())
        self._update_deadline()

    def _update_deadline(self) -> None:
        deadline = self._engine.next_deadline()
        if deadline < self._wake_at:
            self._wake_at = self._timer_scope.deadline = deadline

    def _dispatch(self, events: Sequence[Event]) -> None:
        for event in events:
            match event:
                case MessagesWaiting(queue=queue):
                    inbox = queue.handle
                    if isinstance(inbox, Inbox):
                        inbox.wake()
                case PeerOpened(peer=peer):
                    connection = self._connection_for(peer)
                    if self._serving is not None:
                        self._start_handler(connection)
                case SendProgress(peer=peer):
                    if isinstance(peer.handle, Connection):
                        peer.handle._wake()
                case StateChanged(peer=peer, state=state):
                    if isinstance(peer.handle, Connection):
                        peer.handle._set_state(state)
                case PeerMoved(peer=peer, before=before):
                    if isinstance(peer.handle, Connection):
                        if self._connections.get(before) is peer.handle:
                            del self._connections[before]
                        self._connections[peer.address] = peer.handle
                case PeerClosed(peer=peer, reason=reason):
                    if isinstance(peer.handle, Connection):
                        peer.handle._end(reason)
                        if self._connections.get(peer.address) is peer.handle:
                            del self._connections[peer.address]
                case _:
                    assert_never(event)

    def _connection_for(self, peer: Peer) -> Connection:
        connection = Connection(self, peer)
        peer.handle = connection
        self._connections[peer.address] = connection
        return connection

    def _inbox_for(self, queue: Queue) -> Inbox:
        inbox = queue.handle
        return inbox if isinstance(inbox, Inbox) else Inbox(self, queue)

    def _take(self, queue: Queue, limit: int) -> list[Message] | Unreachable:
        taken = self._engine.take(queue, limit)
        if self._reliable and self._engine.has_output and not self._closed:
            self._transport.push(self._engine.datagrams_to_send(trio.current_time()))
        return taken

    def _take_one(self, queue: Queue) -> Message | Unreachable | None:
        taken = self._engine.take_one(queue)
        if self._reliable and self._engine.has_output and not self._closed:
            # The peer's window opened: an ACK tells it so.
            self._transport.push(self._engine.datagrams_to_send(trio.current_time()))
        return taken

    def _start_handler(self, connection: Connection) -> None:
        """A handler for a new peer. serve() runs at most max_peers: the peers
        are at most that many, and handlers still running for peers already
        gone (restarted, idle) are cancelled, oldest first, to make room."""
        assert self._serving is not None
        nursery, handler, args = self._serving
        handlers = self._handlers
        limit = self._config.max_peers
        if len(handlers) >= limit:
            live = sum(not each.cancel_called for each in handlers.values())
            for running, scope in handlers.items():
                if live < limit:
                    break
                if running.ended is not None and not scope.cancel_called:
                    scope.cancel()
                    live -= 1
        connection._inbox()
        scope = handlers[connection] = trio.CancelScope()
        nursery.start_soon(self._run_handler, handler, connection, args, scope)

    async def _run_handler(
        self,
        handler: Callable[..., Awaitable[object]],
        connection: Connection,
        args: tuple[Any, ...],
        scope: trio.CancelScope,
    ) -> None:
        try:
            with scope:
                while self._running >= self._config.max_peers:
                    await self._handler_returned.wait()  # a cancelled one is leaving
                self._running += 1
                try:
                    await awaitable("serve()", handler, handler(connection, *args))
                finally:
                    self._running -= 1
                    self._handler_returned.set()
                    self._handler_returned = trio.Event()
                if self._config.reliable and not connection._closed:
                    # What the handler sent is delivered before its peer is
                    # forgotten; a peer gone meanwhile is counted
                    # (messages_failed), and must not end serve() for the rest.
                    with suppress(PeerLostError):
                        await connection.flush()
        finally:
            del self._handlers[connection]
            if not self._closed:
                self._engine.close_peer(connection._peer, trio.current_time())
                self._after_engine()

    # -- sending ------------------------------------------------------------------

    async def _send(
        self,
        peer: Peer,
        payloads: Sequence[Buffer],
        *,
        topic: str = "",
        priority: int | None = None,
    ) -> None:
        """Send one message (``payloads`` of one) or a batch to ``peer``; then
        what the engine has to send now (these messages' datagrams, and what
        came before them) goes on the wire in this task, waiting while the
        kernel has no room, and an error the policy gives to the caller who
        asked is raised here."""
        if self._closed:
            raise trio.ClosedResourceError("this trioudp endpoint is closed")
        engine = self._engine
        if priority is not None and check_priority(priority) == self._config.priority:
            priority = None
        try:
            if self._reliable and not engine.is_destination(peer):
                peer = await self._queue_reliable(peer, payloads, topic, priority)
                now = trio.current_time()
                settled = False
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
                now = trio.current_time()
                settled = engine.send(peer, payloads, now, topic, priority)
        except LostPeer as lost:
            raise self._lost(peer, lost.loss) from None
        if not settled and engine.has_events:
            self._dispatch(engine.events())
        datagrams = engine.datagrams_to_send(now)
        if not settled and engine.next_deadline() < self._wake_at:
            self._update_deadline()
        transport = self._transport
        calls = transport.calls
        sent = transport.offer(datagrams, peer.address)
        count = transport.calls - calls or 1  # system calls: a GSO run is one
        if sent is None and self._unyielded + count < SEND_BATCH:
            self._unyielded += count  # the commonest send: nothing to wait for
        else:
            await self._finish_sending(count, sent, peer.address)

    async def _finish_sending(self, count: int, sent: Sent | None, asker: Address) -> None:
        """Wait while the kernel has no room for what ``offer`` left (an error
        for ``asker`` is raised here), and let other tasks run once per
        SEND_BATCH system calls that sent datagrams, not after every one: a trip through the
        scheduler costs more than a send, and a receiver woken per datagram
        loses its batching. Every send() is still a cancellation point (it
        checks before sending anything)."""
        if sent is not None:
            await self._transport.complete(sent, asker)
        self._unyielded += count
        if self._unyielded >= SEND_BATCH:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _queue_reliable(
        self, peer: Peer, payloads: Sequence[Buffer], topic: str, priority: int | None
    ) -> Peer:
        """Queue reliable messages, waiting for room in the peer's window as
        needed; the engine sends them (small ones several to a datagram when
        they queue up). Gives the peer they went to."""
        engine = self._engine
        views = engine.check(payloads)
        encode_topic(topic)
        live = engine.live(peer, trio.current_time())
        if live is not peer:
            self._after_engine()  # a new peer for the address: its Connection
            peer = live
        waited = False
        for view in views:
            while not engine.has_room(peer, view.nbytes):
                self._after_engine()
                await self._wait_for(peer)
                waited = True
            if not waited:
                await trio.lowlevel.checkpoint_if_cancelled()
                waited = True
            engine.queue(peer, view, trio.current_time(), topic=topic, priority=priority)
        return peer

    async def _flush(self, peer: Peer) -> None:
        engine = self._engine
        self._check_open()
        self._raise_if_lost(peer)
        while engine.unacknowledged(peer):
            await self._wait_for(peer)  # raises once the endpoint is closed
        await trio.lowlevel.checkpoint()

    async def _wait_for(self, peer: Peer) -> None:
        """Wait until ``peer``'s reliable sender changes (an acknowledgement came,
        or it failed); raise if it failed or the endpoint closed."""
        connection = peer.handle
        assert isinstance(connection, Connection)
        await connection._park()
        self._check_open()
        if connection._closed:
            raise trio.ClosedResourceError(f"{connection!r} was closed with aclose()")
        self._raise_if_lost(peer)

    def _raise_if_lost(self, peer: Peer) -> None:
        loss = self._engine.loss(peer)
        if loss is not None:
            raise self._lost(peer, loss)

    def _lost(self, peer: Peer, loss: Loss) -> PeerLostError:
        return PeerLostError(
            peer.address,
            loss.reason,
            loss.unacknowledged,
            errno=loss.errno,
            give_up_timeout=self._config.give_up_timeout,
        )

    # -- lifetime -----------------------------------------------------------------

    def _close_connection(self, connection: Connection) -> None:
        """The application closed ``connection`` (``aclose``)."""
        if self._closed:
            return
        if connection._peer is self._engine.client_peer:
            self._close()
            return
        self._engine.close_peer(connection._peer, trio.current_time(), closed=True)
        self._after_engine()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        LIVE.pop(self, None)
        if self._reliable:
            self._transport.push(self._engine.last_acknowledgements(trio.current_time()))
        self._transport.close()
        self._engine.close()
        events = self._engine.events()
        for connection in self._connections.values():
            connection._end(LostReason.CLOSED)
        self._dispatch(events)
        if self._serving is not None:
            self._serving[0].cancel_scope.cancel()
        if self._tasks is not None:
            self._tasks.cancel()
        if self._trio_socket is not None:
            self._trio_socket.close()
        else:
            self._sock.close()

    def statistics(self) -> EndpointStatistics:
        """Totals over every peer this endpoint has known (a snapshot)."""
        return self._engine.statistics(**self._transport.figures())


class Serving(Endpoint, Receiving):
    """An endpoint for any number of peers, with a shared receive channel."""

    def _setup(
        self,
        sock: stdlib_socket.socket,
        config: Config,
        topics: Iterable[str] | None,
        key: tuple[bytes, ...] | None,
    ) -> None:
        super()._setup(sock, config, topics, key)
        self._shared = Inbox(self, self._engine.shared_queue())

    def _inbox(self) -> Inbox:
        if self._closed:
            raise trio.ClosedResourceError("this trioudp endpoint is closed")
        return self._shared

    async def aclose(self) -> None:
        """Close the endpoint now: its socket and tasks (the ``async with`` block
        then ends quietly). Receiving from or sending on it, or on any of its
        connections, raises ``trio.ClosedResourceError`` from then on. Closing
        twice does nothing."""
        self._close()
        await trio.lowlevel.checkpoint()

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
        await self._send(peer, [payload], topic=topic, priority=priority)

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
        await self._send(peer, batch(payloads), topic=topic, priority=priority)

    async def _peer_at(self, address: Any) -> Peer:
        """The peer to send to at ``address`` (resolved once and remembered)."""
        if self._closed:
            raise trio.ClosedResourceError("this trioudp endpoint is closed")
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
        new connection and a new handler, and messages of its still waiting
        in the connection are let go (counted as overflow; in reliable mode
        they were acknowledged already, as closing a connection with unread
        messages does: a handler that must not lose any reads until the
        iteration ends). An exception in a handler ends
        ``serve()`` (and the other handlers) and propagates from it; a lone one
        is raised as itself. Closing the server (``aclose()``, from any task)
        cancels the handlers and ends ``serve()`` with ``trio.ClosedResourceError``.

        No more than ``max_peers`` handlers run at once: a handler still
        running for a peer that is gone (idle, restarted) is cancelled, oldest
        first, when a new peer needs its place.
        """
        check_handler("serve()", handler)
        if self._serving is not None:
            raise trio.BusyResourceError("serve() is already running on this server")
        if self._closed:
            raise trio.ClosedResourceError("this trioudp server is closed")
        try:
            async with trio.open_nursery() as nursery:
                self._serving = (nursery, handler, args)
                self._engine.claim_new_peers = True
                try:
                    for connection in list(self._connections.values()):
                        if connection._own is None and not connection._closed:
                            self._start_handler(connection)
                    task_status.started()
                    await trio.sleep_forever()  # until _close cancels the handlers
                finally:
                    self._serving = None
                    self._engine.claim_new_peers = False
        except BaseExceptionGroup as group:
            raise_lone(group)
        raise trio.ClosedResourceError("this trioudp server was closed while serve() ran")


class UDPServer(Serving):
    """A UDP socket that talks to any number of peers. Made by
    :func:`open_udp_server` or :func:`from_socket`; iterate it (it is a trio
    ``ReceiveChannel[Message]``) for the messages of every peer, or
    :meth:`serve` each peer in its own task.

    A message goes to its peer's Connection once something receives from that
    connection (``serve()`` hands it to a handler, or you call its
    ``receive()`` or iterate it), and to the server's own channel otherwise. So
    with ``serve()`` running, iterating the server yields nothing; a peer's
    messages still waiting in the server's channel when its connection is
    first received from move to the connection, in order.
    """

    async def send(
        self, address: Any, payload: Buffer, *, topic: str = "", priority: int | None = None
    ) -> None:
        """Send one message to ``address``: the same as :meth:`send_to`."""
        await self.send_to(address, payload, topic=topic, priority=priority)


def _check_key_framing(config: Config, key: tuple[bytes, ...] | None) -> None:
    if key is not None and not config.framing:
        raise ValueError("raw mode (framing=False) has no frames to authenticate; drop key=")


def _topics(topics: Iterable[str]) -> list[str]:
    if isinstance(topics, str):
        raise TypeError(f"topics is a collection of strings; for one topic pass [{topics!r}]")
    try:
        checked = list(topics)
    except TypeError:
        raise TypeError(
            f"topics is a collection of strings such as ['alerts', 'status'], "
            f"got {type(topics).__name__}"
        ) from None
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


#: Every endpoint whose block is running, oldest first, with the token of the
#: trio run it lives in (for monitoring from another thread: trioudp.prometheus).
LIVE: dict[Endpoint, trio.lowlevel.TrioToken] = {}


def live_endpoints() -> list[tuple[Endpoint, trio.lowlevel.TrioToken]]:
    """The endpoints open right now, oldest first, each with its trio run's token
    (a copy: safe to take from any thread)."""
    return copy_items(LIVE)


def copy_items(registry: Mapping[K, V]) -> list[tuple[K, V]]:
    """A registry's items, copied from any thread while its own changes it."""
    while True:
        try:
            return list(registry.items())
        except RuntimeError:  # changed size during the copy, from another thread
            continue
