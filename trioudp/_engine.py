"""The sans-IO engine: datagrams in, messages, events and datagrams out.

Nothing here does I/O, imports trio or reads a clock (the shape of aioquic's
``QuicConnection`` and h11's ``Connection``); tests drive it with an explicit
``now``. The engine coordinates; each decision lives in one module:

- ``_receiving.py``: per-peer receive state (streams, reorder windows,
  reassembly) and the budget it is charged to (``_budget.py``);
- ``_delivery.py``: the queues messages wait in for the application;
- ``_control.py``: ACK, PING and REJECT frames, and the amplification limit;
- ``_sending.py``: encoding and bundling, and the one output list;
- ``_reliable.py``: the reliable sender and acknowledger;
- ``_timers.py``: every peer's timeouts, from one table.

The boundary, as the trio shell sees it. In: ``receive_datagram(data,
address, now)``, ``handle_timer(now)``, the application's calls (``send``,
``queue``, ``claim``, ``take``, ``close_peer``, ...) and the transport's
reports (``send_failed``, ``unreachable``). Out: ``datagrams_to_send(now)``,
the one list of everything to put on the wire; ``events()``, typed events;
``next_deadline()``. ``take`` is the one call that tells the engine what the
application consumed.

Peers. The engine keeps one ``Peer`` per remote address that has sent it a
valid frame (any datagram in raw mode), up to ``max_peers``. A peer has a send
session (our random id towards it and the next sequence number) and receive
streams. A unicast frame with a new session id may mean the peer restarted
(``PeerTable.restarted`` says when: not while the current session is still
talking, without a key): a server closes the old Peer (``PeerClosed``,
REPLACED) and opens a new one; a client, whose socket is connected to one
peer, just starts over with the new session. Frames of the previous few
sessions are dropped as stale, so a restart is never undone by reordering.
Our own frames (group sends looped back, or any frame of ours reflected to
us) are recognised by session id and dropped. With a key, a peer is known by
its session wherever it comes from: a frame received before is a duplicate
from any address, and a fresh one from a new address moves the peer there
(``PeerMoved``).

Topics. With a subscription set, a frame whose topic is not in it is dropped
before its payload is copied; its sequence number still counts as received,
so it leaves no gap for ordered delivery to wait on.

Reliable delivery (``config.reliable``; _reliable.py has the algorithms). An
endpoint that gets reliable frames without ``reliable=True``, or the
reverse, answers with a REJECT, which makes the other side's sender fail at
once with a clear error.

Accounting. Every datagram ends in exactly one ``datagrams_*`` outcome of its
peer's counters (or of the endpoint's own, for datagrams no peer owns), or is
still pending; see _statistics.py.
"""

from __future__ import annotations

import logging
import secrets
from errno import EMSGSIZE
from math import inf
from typing import TYPE_CHECKING

from ._budget import Budget
from ._control import Control
from ._delivery import Delivery, QueueState, Unreachable
from ._events import (
    Event,
    MessagesWaiting,
    SendProgress,
    StateChanged,
    assert_never,
)
from ._frame import KIND_PING, OVERHEAD, BadFrame, decode_frame_untrusted, encode_plain
from ._message import Message
from ._peer import Loss, LostPeer, Peer
from ._peers import PeerTable
from ._reasons import DropReason, LostReason
from ._receiving import Reception
from ._reliable import Sender
from ._sending import Encoder, Output, encode_topic
from ._state import ConnectionState
from ._statistics import Counters
from ._timers import KEEPALIVE_JITTER, Timer, Timers

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from typing_extensions import Buffer

    from ._config import Config
    from ._delivery import Queue
    from ._frame import Frame
    from ._message import Address
    from ._receiving import Stream
    from ._sending import Datagram
    from ._statistics import EndpointStatistics, PeerStatistics

logger = logging.getLogger(__name__)


def random_session_id() -> int:
    return secrets.randbits(64)


#: Why a datagram from a new address opens no peer.
_FULL = "from a new peer: max_peers=%d are known"


def refuse(
    counters: Counters,
    size: int,
    reason: DropReason,
    why: str = "",
    *args: object,
    parts: int = 0,
) -> None:
    """Count a datagram (a bundle of ``parts`` messages: as many) dropped
    before any stream saw it (``counters``: its peer's, or the endpoint's own
    if it has none) and say ``why`` at DEBUG (nothing: a normal event, only
    counted)."""
    counters.datagrams_received += parts or 1
    counters.bytes_received += size
    counters.drop(reason, parts or 1)
    if why and logger.isEnabledFor(logging.DEBUG):
        logger.debug("dropped a %d-byte datagram " + why, size, *args)


class Engine:
    """The protocol state of one socket. ``connected_to`` makes it a client's:
    one peer, made at once, never forgotten, whose restarts keep it.
    ``fast_paths=False`` takes the general path for everything (the fast paths
    are proven to give the same results against it)."""

    def __init__(
        self,
        config: Config,
        *,
        now: float,
        connected_to: Address | None = None,
        new_session_id: Callable[[], int] = random_session_id,
        key: bytes | None = None,
        previous_keys: tuple[bytes, ...] = (),
        fast_paths: bool = True,
    ) -> None:
        self.config = config
        #: The shared key that authenticates every frame, if any, and others
        #: accepted from peers too (while a key is rotated).
        self.key = key
        self._previous_keys = previous_keys
        self.framing = config.framing
        self.reliable = config.reliable
        self._fast = fast_paths
        self._events: list[Event] = []
        #: Peers with output to produce at the next ``datagrams_to_send``.
        self._ready: dict[Peer, None] = {}
        #: Datagrams no peer owns, and the endpoint-owned counters.
        self._own = Counters()
        self.connected = connected_to is not None
        self._budget = Budget(config)
        self._output = Output()
        #: The receive queues; the shell reads their pacing figures (``filled``,
        #: ``takes``, ``kernel_dropping``).
        self.delivery = self._delivery = Delivery(
            config, self._budget, self._own, shared=not self.connected
        )
        self._reception = Reception(
            config, self._budget, self._delivery, self.arm, reliable=config.reliable
        )
        self._control = Control(config, key, self._output, self._reception, self, self._own)
        self._timers = Timers(config, self._reception, client=self.connected)
        self._encoder = Encoder(config, key)
        #: The largest payload the fast way of ``send`` takes: one plain frame's
        #: worth, within max_message_size (-1: none, with a key or in raw mode).
        self._plain_limit = (
            min(config.max_datagram_size - OVERHEAD, config.max_message_size)
            if config.framing and key is None
            else -1
        )
        self._table = PeerTable(
            config,
            client=self.connected,
            key=key,
            new_session_id=new_session_id,
            reception=self._reception,
            delivery=self._delivery,
            emit=self._events_append,
            arm=self.arm,
            disarm=self._timers.disarm,
        )
        #: The known peers by address (a client's one peer, a server's many).
        self.peers = self._table.peers
        self.client_peer: Peer | None = None
        if connected_to is not None:
            peer = self._table.open(connected_to, now)
            assert peer is not None
            peer.state = ConnectionState.CONNECTING
            peer.validated = True
            self._delivery.claim(peer)
            self.client_peer = peer

    def _events_append(self, event: Event) -> None:
        self._events.append(event)

    # -- datagrams in ------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes | bytearray | memoryview, address: Address, now: float
    ) -> None:
        """Take one datagram (``data`` may be a view of a buffer that is reused
        afterwards: whatever is kept is copied)."""
        peer = self.peers.get(address)
        size = len(data)
        if peer is None and not address[1]:
            # UDP port 0: no reply, acknowledgement or rejection can go back, so
            # it opens no peer (a spoofed source, most likely).
            refuse(self._own, size, DropReason.MALFORMED, "from %s: port 0", address)
            return
        if not self.framing:
            self._raw(peer, data, address, size, now)
            return
        try:
            frame = decode_frame_untrusted(data, self.key, self._previous_keys)
        except BadFrame as exc:
            counters = self._own if peer is None else peer.counters
            refuse(counters, size, exc.reason, "from %s: %s", address, exc)
            return
        if frame.kind:
            self._control_frame(peer, frame, address, size, now)
            return
        if (frame.packet >= 0) is not self.reliable:
            counters = self._own if peer is None else peer.counters
            refuse(counters, size, DropReason.MISMATCHED, "from %s: reliable mode differs", address)
            self._control.reject(peer, frame, address, now)
            return
        session = frame.session
        group = frame.group
        table = self._table
        if session in table.own_sessions:
            # Our own frame: a group send looped back, or a frame of ours
            # reflected to us (valid as ever with a key, but not from a peer).
            counters = self._own if peer is None else peer.counters
            refuse(counters, size, DropReason.OWN)
            return
        parts = frame.parts
        if (
            self.key is not None
            and not group
            and (peer is None or peer.unicast is None or peer.unicast.session != session)
            and (owner := table.by_session.get(session)) is not None
            and owner is not peer
        ):
            # A keyed session known at another address: followed there, or not.
            reason = table.follow(owner, peer, frame, address, now)
            if reason is not None:
                refuse(
                    owner.counters, size, reason, "from %s: %s", address, reason, parts=len(parts)
                )
                return
            peer = owner
        elif peer is None:
            peer = table.open(address, now)
            if peer is None:
                self._over_max_peers(size)
                return
        elif not group and (stream := peer.unicast) is not None and stream.session != session:
            if not table.restarted(peer, stream, session, now):
                refuse(peer.counters, size, DropReason.STALE_SESSION, parts=len(parts))
                return
            if not self.connected:  # a client's peer starts over in Reception.stream
                peer = table.reopen(peer, address, now)
                if peer is None:
                    self._over_max_peers(size)
                    return
        counters = peer.counters
        # Each message of a bundle counts as a datagram in the outcomes.
        counters.datagrams_received += len(parts) or 1
        counters.bytes_received += size
        reception = self._reception
        if frame.fragment_count == 1 and self._fast:
            if reception.in_order(peer, frame, now):
                self._alive(peer, now)
                return
            if self.reliable and reception.reliable_in_order(peer, frame, now):
                self._alive(peer, now)
                self._control.acknowledge(peer, frame.packet, True, now)
                return
        first = frame.oldest if self.reliable else frame.sequence
        stream = reception.stream(peer, group, session, first, now)
        if self.key is not None and not group and peer.known_as != session:
            table.known(peer, session)
        # Only a frame of a session still accepted keeps the peer alive (a
        # stream of stale ones would keep a restarted peer out for good).
        stream.last_activity = now
        self._alive(peer, now)
        if stream.acks is not None:
            taken = reception.reliable_data(peer, stream, frame, now)
            self._control.acknowledge(peer, frame.packet, taken, now)
            return
        if not parts:
            fragment = frame if frame.fragment_count > 1 else None
            reception.message(
                peer, stream, frame.sequence, frame.payload, frame.topic, fragment, now
            )
            return
        sequence = frame.sequence
        for part in parts:
            reception.message(peer, stream, sequence, part, frame.topic, None, now)
            sequence = (sequence + 1) & 0xFFFFFFFF

    def _raw(
        self,
        peer: Peer | None,
        data: bytes | bytearray | memoryview,
        address: Address,
        size: int,
        now: float,
    ) -> None:
        """Raw mode: every datagram is a message."""
        if peer is None:
            peer = self._table.open(address, now)
            if peer is None:
                self._over_max_peers(size)
                return
        counters = peer.counters
        counters.datagrams_received += 1
        counters.bytes_received += size
        peer.last_activity = peer.heard = now
        if peer.state is not ConnectionState.ESTABLISHED:
            self.heard(peer, now)
        self._delivery.put(peer, Message(bytes(data), address, None, "", peer, 1))

    def _control_frame(
        self, peer: Peer | None, frame: Frame, address: Address, size: int, now: float
    ) -> None:
        """An ACK, PING or REJECT frame. A PING from a new address opens a peer;
        a PING of one of our own sessions is ours, reflected. With a key, a
        PING of a session known at another address opens nothing (a recording,
        or a peer whose next data frame or ACK moves it), and an ACK from a new
        address that names our session towards a peer and acknowledges
        something new moves that peer there, as a fresh data frame does."""
        table = self._table
        if frame.kind == KIND_PING and frame.session in table.own_sessions:
            counters = self._own if peer is None else peer.counters
            refuse(counters, size, DropReason.OWN)
            return
        if peer is None and self.key is not None:
            owner, moved = table.control_owner(frame, address, now, self._control.acknowledges_new)
            if owner is not None and not moved:
                refuse(owner.counters, size, DropReason.STALE_SESSION)
                return
            peer = owner
        if peer is None and frame.kind == KIND_PING:
            peer = table.open(address, now)
            if peer is None:
                self._over_max_peers(size)
                return
            table.known(peer, frame.session)
        if peer is None:
            self._control.unknown(frame, size)
            return
        counters = peer.counters
        counters.datagrams_received += 1
        counters.bytes_received += size
        self._control.receive(peer, frame, now)

    def _alive(self, peer: Peer, now: float) -> None:
        """A frame of ``peer``'s current session came."""
        peer.last_activity = peer.heard = now
        if peer.state is not ConnectionState.ESTABLISHED:
            self.heard(peer, now)

    # -- what the other modules ask of the engine (control.Coordinator) --------------

    def ready(self, peer: Peer) -> None:
        self._ready[peer] = None

    def arm(self, peer: Peer) -> None:
        self._timers.arm(peer, self._ready)

    def heard(self, peer: Peer, now: float) -> None:
        peer.heard = now
        if peer.state is not ConnectionState.ESTABLISHED and peer.lost is None and not peer.closed:
            self._set_state(peer, ConnectionState.ESTABLISHED)
            self.arm(peer)  # its silence timers start again

    def fail(self, peer: Peer, reason: LostReason, errno: int = 0) -> None:
        if peer.lost is not None:
            return
        peer.lost = reason
        if errno:
            peer.errno = errno
        if peer.sender is not None:
            peer.sender.fail(reason)
        self._set_state(peer, ConnectionState.LOST)
        self._events.append(SendProgress(peer))

    def progress(self, peer: Peer) -> None:
        self._events.append(SendProgress(peer))

    def _set_state(self, peer: Peer, state: ConnectionState) -> None:
        if peer.state is not state:
            peer.state = state
            self._events.append(StateChanged(peer, state))

    # -- peers --------------------------------------------------------------------------

    def peer_for(self, address: Address, now: float) -> Peer:
        """The peer to send to at ``address``, made if new (see PeerTable.peer_for)."""
        return self._table.peer_for(address, now)

    def destination(self, address: Address, now: float) -> Peer:
        """The send state for a group destination (a multicast group or a
        broadcast address)."""
        return self._table.destination(address, now)

    def is_destination(self, peer: Peer) -> bool:
        """Whether ``peer`` is a group destination's send state."""
        return self._table.is_destination(peer)

    def live(self, peer: Peer, now: float) -> Peer:
        """The peer to send to for ``peer`` (see PeerTable.live)."""
        return self._table.live(peer, now)

    @property
    def claim_new_peers(self) -> bool:
        """Whether every new peer gets its own queue at once (``serve()`` runs)."""
        return self._table.claim_new_peers

    @claim_new_peers.setter
    def claim_new_peers(self, value: bool) -> None:
        self._table.claim_new_peers = value

    def _over_max_peers(self, size: int) -> None:
        """A datagram from a new address while max_peers are known: counted."""
        refuse(self._own, size, DropReason.OVER_LIMIT, _FULL, self.config.max_peers)

    def close_peer(self, peer: Peer, now: float, *, closed: bool = False) -> None:
        """The application is done with ``peer`` (its handler returned, or it
        closed the connection): forget it, so that its next datagram starts a
        new connection, and let go of what waits in its queue (receivers then
        get EndOfChannel, or with ``closed`` ClosedResourceError). A client's
        peer is never forgotten."""
        if peer is not self.client_peer:
            self._acknowledge_owed(peer, now)
            self._table.close(peer, LostReason.CLOSED, now)
        if peer.queue is not None:
            state = QueueState.CLOSED if closed else QueueState.ENDED
            self._delivery.discard(peer.queue, state)

    def last_acknowledgements(self, now: float) -> list[Datagram]:
        """The endpoint is closing: every ACK a reliable receiver still owes,
        made now (with what else waits to go), so that its peers' senders learn
        what arrived rather than send it again (to a new receiver, which would
        deliver it again) or until they give up."""
        for peer in (*self.peers.values(), *([self.client_peer] if self.client_peer else ())):
            self._acknowledge_owed(peer, now)
        output = self._output
        datagrams, output.datagrams = output.datagrams, []
        return datagrams

    def _acknowledge_owed(self, peer: Peer, now: float) -> None:
        """Send the ACK ``peer``'s reliable stream owes now, not after the usual
        delay: the peer is about to be forgotten, or the endpoint to close."""
        stream = peer.unicast
        acks = None if stream is None else stream.acks
        if acks is not None and acks.due != inf and not peer.closed:
            acks.due = now
            self._control.ack_if_due(peer, now)

    def close(self) -> None:
        """The endpoint is closed: every queue too (ClosedResourceError)."""
        delivery = self._delivery
        if delivery.shared is not None:
            delivery.discard(delivery.shared, QueueState.CLOSED)
        for peer in (*self.peers.values(), *([self.client_peer] if self.client_peer else ())):
            if peer.queue is not None:
                delivery.discard(peer.queue, QueueState.CLOSED)
        while delivery.lingering:  # forgotten peers' messages, not taken yet
            delivery.discard(delivery.lingering.popleft()[1], QueueState.CLOSED)

    # -- the application's messages -----------------------------------------------------

    def send(
        self,
        peer: Peer,
        payloads: Sequence[Buffer],
        now: float,
        topic: str = "",
        priority: int | None = None,
    ) -> bool:
        """Send unreliable messages to ``peer`` (a group destination's, too): their
        datagrams come out of the next ``datagrams_to_send``. Raises TypeError
        or ValueError, before anything is sent, for a payload that cannot be,
        and LostPeer for a peer sending to failed for good. True when the output
        is all that changed (no event to read, no timer moved), so the caller
        may skip looking."""
        if peer.lost is not None:
            raise LostPeer(self._loss(peer))
        table = self._table
        if peer.closed:
            peer = table.live(peer, now)
        group = bool(table.destinations) and table.is_destination(peer)
        if len(payloads) == 1 and topic == "" and not group and self._fast:
            payload = payloads[0]
            if type(payload) is bytes and len(payload) <= self._plain_limit:
                # The commonest send, the fast way: one small bytes payload in
                # one plain frame, as the general way below would make it
                # (tests/test_fast_paths.py).
                sequence = peer.send_sequence
                peer.send_sequence = (sequence + 1) & 0xFFFFFFFF
                datagram = encode_plain(peer.send_session, sequence, payload)
                counters = peer.counters  # Output.add's counting, with the message's
                counters.messages_sent += 1
                counters.datagrams_sent += 1
                counters.bytes_sent += len(datagram)
                peer.last_activity = peer.last_sent = now
                self._output.datagrams.append((datagram, peer.address, priority))
                return not (self._events or self._ready)
        encoder = self._encoder
        views = encoder.checked(payloads)
        made = encoder.encode(peer, views, encode_topic(topic), group=group)
        self._output.extend(peer, made, now, priority)
        if group and self.framing:
            table.own_sessions[peer.send_session] = peer
        peer.counters.messages_sent += len(payloads)
        peer.last_activity = now
        return False

    def queue(
        self,
        peer: Peer,
        payload: Buffer,
        now: float,
        *,
        topic: str = "",
        priority: int | None = None,
    ) -> None:
        """Queue a reliable message to ``peer`` (its datagrams come out of
        ``datagrams_to_send``); check ``has_room`` first. Raises like ``send``."""
        if peer.lost is not None:
            raise LostPeer(self._loss(peer))
        (view,) = self._encoder.checked([payload])
        peer = self.live(peer, now)
        sender = peer.sender
        if sender is None:
            sender = peer.sender = Sender.for_peer(peer, self.config, self.key, self._budget)
        sender.queue(view, encode_topic(topic), priority)
        peer.counters.messages_sent += 1
        peer.last_activity = now
        self._ready[peer] = None

    def check(self, payloads: Sequence[Buffer]) -> list[memoryview]:
        """Raise as ``send`` would if any of ``payloads`` cannot be sent; else
        each one's bytes."""
        return self._encoder.checked(payloads)

    def has_room(self, peer: Peer, payload: int) -> bool:
        """Whether ``peer``'s reliable sender takes another message of
        ``payload`` bytes now."""
        sender = peer.sender
        config = self.config
        return sender is None or sender.has_room(
            config.reorder_window, config.peer_buffer_bytes, payload
        )

    def unacknowledged(self, peer: Peer) -> int:
        """Reliable messages to ``peer`` not yet acknowledged."""
        return 0 if peer.sender is None else peer.sender.unacknowledged

    def loss(self, peer: Peer) -> Loss | None:
        """Why sending to ``peer`` failed for good (None: it has not)."""
        return None if peer.lost is None else self._loss(peer)

    def _loss(self, peer: Peer) -> Loss:
        assert peer.lost is not None
        errno = peer.errno if peer.lost is LostReason.UNREACHABLE else 0
        return Loss(peer.lost, errno, peer.counters.messages_failed)

    def claim(self, peer: Peer) -> Queue:
        """``peer``'s own queue: its messages go there from now on."""
        return self._delivery.claim(peer)

    def shared_queue(self) -> Queue:
        """A server's queue for the peers nobody receives from directly."""
        assert self._delivery.shared is not None, "a client has no shared queue"
        return self._delivery.shared

    def take(self, queue: Queue, limit: int) -> list[Message] | Unreachable:
        """The application takes up to ``limit`` messages waiting in ``queue``
        (or the error report at its front): their memory is let go and, in
        reliable mode, their peers' windows open (an ACK may be due: see
        ``datagrams_to_send``)."""
        taken = self._delivery.take(queue, limit)
        if self.reliable and isinstance(taken, list) and taken:
            opened: Peer | None = None
            for message in taken:
                peer: Peer = message._origin  # type: ignore[assignment]
                if peer is not opened:
                    self._control.window_opened(peer)
                    opened = peer
        return taken

    def take_one(self, queue: Queue) -> Message | Unreachable | None:
        """``take(queue, 1)``, the quick way for one message: the message, the
        error report at the front, or None when nothing waits."""
        taken = self._delivery.take_one(queue)
        if self.reliable and type(taken) is Message:
            self._control.window_opened(taken._origin)  # type: ignore[arg-type]
        return taken

    @property
    def has_output(self) -> bool:
        """Whether ``datagrams_to_send`` would give anything."""
        return bool(self._ready or self._output.datagrams)

    def subscribe(self, topics: frozenset[str] | None) -> None:
        """Deliver only messages with these topics ("" is no topic), or every
        message (None)."""
        if topics is not None and not self.framing:
            raise ValueError("raw mode (framing=False) has no topics to subscribe to")
        self._reception.topics = None if topics is None else frozenset(map(encode_topic, topics))

    @property
    def topics(self) -> frozenset[bytes] | None:
        return self._reception.topics

    def state(self, peer: Peer) -> ConnectionState:
        return peer.state

    # -- the transport's reports ---------------------------------------------------------

    def send_failed(
        self,
        address: Address,
        errno: int,
        datagrams: int,
        now: float,
        *,
        permanent: bool,
        size: int = 0,
    ) -> bool:
        """The kernel refused ``datagrams`` datagrams (the first ``size`` bytes)
        to ``address`` (counted as dropped against its peer). ``permanent``: the
        address can never be sent to (not permitted, too large...), which fails
        a reliable peer at once; otherwise a reliable peer that stays
        unreachable fails when its sender gives up, with this error as the
        reason. Gives whether it was permanent after all: a path MTU probe
        refused as too large (EMSGSIZE) only ends the search for larger datagrams."""
        peer = self.peers.get(address) or self._table.destinations.get(address)
        if peer is None:
            self._own.datagrams_send_dropped += datagrams
            return permanent
        peer.counters.datagrams_send_dropped += datagrams
        sender = peer.sender
        if errno == EMSGSIZE and sender is not None and sender.path.refused(size):
            return False
        peer.errno = errno
        peer.send_error_at = now
        if permanent and sender is not None:
            self.fail(peer, LostReason.UNREACHABLE, errno)
        return permanent

    def unreachable(self, errno: int, strerror: str, now: float) -> None:
        """The kernel reported an ICMP error for the connected peer: counted, and
        queued for its ``receive()`` in order with its messages."""
        peer = self.client_peer
        if peer is None:
            self._own.unreachable_errors += 1
            return
        peer.counters.unreachable_errors += 1
        if peer.queue is not None:
            self._delivery.put_error(peer.queue, Unreachable(errno, strerror, peer.address))

    # -- datagrams out ------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """Everything to put on the wire now, in order: the application's
        datagrams, and what the engine makes by itself (ACKs, PINGs, REJECTs,
        reliable data and retransmissions), as ``(datagram, address, DSCP or None)``."""
        ready = self._ready
        if ready:
            self._ready = {}
            for peer in ready:
                if not peer.closed:
                    self._produce(peer, now)
        output = self._output
        datagrams, output.datagrams = output.datagrams, []
        return datagrams

    def _produce(self, peer: Peer, now: float) -> None:
        control = self._control
        control.ack_if_due(peer, now)
        sender = peer.sender
        if peer.ping_due:
            peer.ping_due = False
            if sender is not None:
                sender.ping()
            elif peer.lost is None:
                control.ping(peer, now)
        if sender is not None:
            out: list[tuple[bytes, int | None]] = []
            spent = sender.transmit(now, out, control.room(peer))
            if not peer.validated:
                peer.control_bytes += spent
            add = self._output.add
            for datagram, priority in out:
                add(peer, datagram, now, priority)
        self.arm(peer)

    @property
    def has_events(self) -> bool:
        """Whether ``events`` would give anything."""
        return bool(self._events or self._delivery.waking)

    def events(self) -> list[Event]:
        """What happened since the last call, in order."""
        events = self._events
        self._events = []
        if self._delivery.waking:
            events.extend([MessagesWaiting(queue) for queue in self._delivery.woken()])
        return events

    # -- timers -------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When ``handle_timer`` should next be called (inf: not until more data)."""
        heap = self._timers.heap
        deadline = heap[0][0] if heap else inf
        lingering = self._delivery.lingering
        return min(deadline, lingering[0][0]) if lingering else deadline

    def handle_timer(self, now: float) -> None:
        """Run every timeout that is due at ``now``, each peer's once (a timer
        its own action left due would come up again at the next call, not in
        a loop here: tests/test_timers.py holds that none does)."""
        self._delivery.expire(now)
        timers = self._timers
        due: list[Peer] = []
        while (peer := timers.pop_due(now)) is not None:
            due.append(peer)
        for peer in due:
            if peer.closed:
                continue
            for deadline, timer, stream in timers.table(peer, self._ready):
                if deadline <= now:
                    self._fire(peer, timer, stream, now)
                    if peer.closed:
                        break
            if not peer.closed:
                self.arm(peer)

    def _fire(self, peer: Peer, timer: Timer, stream: Stream | None, now: float) -> None:
        config = self.config
        match timer:
            case Timer.ACK:
                self._ready[peer] = None
            case Timer.SENDER:
                sender = peer.sender
                assert sender is not None
                sender.on_timer(now)
                if sender.failure is LostReason.TIMEOUT and peer.send_error_at >= peer.heard:
                    # Silent because the kernel would not send to it: say so.
                    self.fail(peer, LostReason.UNREACHABLE, peer.errno)
                elif sender.failure is not None:
                    self.fail(peer, sender.failure)
                self._ready[peer] = None
            case Timer.KEEPALIVE:
                keepalive = config.keepalive
                assert keepalive is not None
                if peer.last_sent + keepalive * KEEPALIVE_JITTER[0] <= now:
                    peer.ping_due = True
                    self._ready[peer] = None
                    peer.last_sent = now
                self._table.schedule_keepalive(peer)
            case Timer.DEAD:
                self._set_state(peer, ConnectionState.LOST)
            case Timer.QUIET:
                if peer.state is ConnectionState.ESTABLISHED:
                    self._set_state(peer, ConnectionState.IDLE)
            case Timer.REORDER:
                assert stream is not None
                self._reception.give_up_gaps(peer, stream, now)
            case Timer.REASSEMBLY:
                assert stream is not None
                self._reception.expire_partials(peer, stream, now)
            case Timer.FORGET:
                self._table.close(peer, LostReason.IDLE, now)
            case _:
                assert_never(timer)

    # -- statistics ---------------------------------------------------------------------

    def statistics(self, **transport: int) -> EndpointStatistics:
        """Totals over every peer, with the transport's own figures (``Transport.figures``)."""
        return self._table.statistics(self._own, bytes_buffered=self._budget.total, **transport)

    def peer_statistics(self, peer: Peer) -> PeerStatistics:
        return peer.statistics()

    @property
    def buffered_bytes(self) -> int:
        """What the endpoint holds now, as charged (see _budget.py)."""
        return self._budget.total
