"""The sans-IO engine: datagrams in, messages and peer events out.

Nothing here does I/O, imports trio or reads a clock: the trio layer calls
``receive_datagram(data, address, now)`` for each datagram it drains from the
socket, then takes the events the batch produced with ``take_events()``;
``encode(peer, payload, now)`` gives the datagrams to send; ``next_deadline()``
and ``handle_timer(now)`` drive every timeout (the shape of aioquic's
``QuicConnection``). Tests drive it with an explicit ``now``.

Peers and streams. The engine keeps one ``Peer`` per remote address that has
sent it a valid frame (any datagram in raw mode), up to ``max_peers``. A peer
has a send session (our random id towards it and the next sequence number) and
receive streams: one sequence space each, with its window and partial
messages. Unicast frames from a peer form one stream; a frame with a new
session id there means the peer restarted: a server closes the old Peer (event
``PeerClosed(reason "replaced")``) and opens a new one; a client, whose socket
is connected to one peer, just starts over with the new session. Frames of the
previous few sessions are dropped as stale, so a restart is never undone by
reordering. GROUP frames (sent to a multicast or broadcast address) form a
stream per session id, since one sender may feed several groups and unicast
at once; the least recently active of more than MAX_GROUP_STREAMS gives way.
Our own GROUP frames, looped back, are recognised by session id and dropped.

Topics. With a subscription set (``topics``), a frame whose topic is not in it
is dropped before its payload is copied; its sequence number still counts as
received, so it leaves no gap for ordered delivery to wait on.

Timers. Each peer has at most one live entry in a heap of deadlines (the
earliest of its reorder, reassembly and idle deadlines); entries that no longer
match are skipped when they come up. So ``next_deadline`` is O(1) and a busy
peer costs no heap work per datagram.

Reliable delivery (``config.reliable``; the algorithms are in _reliable.py).
A peer's send side gets a ``Sender`` when the first message is queued for it
(``queue``), and each reliable unicast stream an ``Acknowledger``. Reliable
streams never give a gap up and never drop what they have acknowledged: data
beyond the window they advertised, or over the buffer limits, is refused
without an acknowledgement and comes again. Their whole messages count
against the peer's window and buffers until the application receives them
(``count_consumed``). Control frames (ACK, PING, REJECT) are produced into an
outgoing queue that ``take_datagrams(now)`` empties, together with the
reliable data the senders may send. An endpoint that gets reliable frames
without ``reliable=True``, or the reverse, answers with a REJECT, which makes
the other side's sender fail at once with a clear error.

Accounting. Every datagram ends in exactly one ``datagrams_*`` outcome of its
peer's counters (or of the endpoint's own, for datagrams no peer owns), or is
still pending; see _statistics.py. Delivery and channel overflow are counted
when the trio layer reports them with ``count_delivered``/``count_dropped``.
"""

from __future__ import annotations

import heapq
import logging
import random
import secrets
from itertools import count as _count
from math import inf
from typing import TYPE_CHECKING, Literal, NamedTuple, cast

from ._frame import (
    ACK_FIXED_SIZE,
    ACK_RANGE_SIZE,
    KIND_ACK,
    KIND_PING,
    KIND_REJECT,
    MAX_ACK_RANGES,
    MAX_TOPIC,
    OVERHEAD,
    PART_OVERHEAD,
    REJECT_NOT_RELIABLE,
    REJECT_RELIABLE_ONLY,
    Ack,
    BadFrame,
    Frame,
    byte_view,
    control_size,
    decode_ack_untrusted,
    decode_frame_untrusted,
    encode_ack_body,
    encode_bundle,
    encode_control,
    encode_message,
    encode_plain,
    frame_overhead,
    sealer,
    sequence_difference,
)
from ._message import Message
from ._ordering import DUPLICATE, NEW, OrderedWindow, UnorderedWindow
from ._reliable import Acknowledger, Sender
from ._state import ConnectionState
from ._statistics import (
    COUNTERS,
    Counters,
    EndpointStatistics,
    PeerStatistics,
    endpoint_statistics,
    peer_statistics,
)

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from typing_extensions import Buffer

    from ._config import Config
    from ._message import Address, Replier

#: Bytes charged to the buffer budget for each stored fragment on top of its
#: payload, so that many tiny fragments cannot hide their real cost.
FRAGMENT_COST = 64
#: How many earlier session ids of a peer are remembered as stale.
RETIRED_SESSIONS = 4
#: How many GROUP streams (multicast/broadcast senders' sessions) one peer keeps.
MAX_GROUP_STREAMS = 4
#: RFC 9000 §8.1: bytes of acknowledgements and REJECTs sent to a peer the
#: application never sent to, per byte received from it.
AMPLIFICATION = 3
#: Ranges an ACK carries at most: the newest; a packet whose ACK was lost and
#: whose range has dropped out is taken for lost and sent again.
ACK_RANGES_SENT = 8
#: Seconds between two REJECTs to one peer (and to unknown addresses together).
REJECT_INTERVAL = 1.0
#: Keepalive PINGs go after this share (drawn at random) of ``keepalive``.
KEEPALIVE_JITTER = (0.8, 1.0)
#: How soon a receiver answers data it had to refuse (its window or buffers were full).
MAX_ACK_DELAY_REFUSED = 0.025
#: Counters the endpoint keeps itself rather than summing its peers': delivery
#: and overflow are reported after the engine's work, possibly for a peer that
#: is already gone.
_ENDPOINT_OWNED = frozenset(
    {
        "datagrams_delivered",
        "messages_delivered",
        "datagrams_overflow_dropped",
        "messages_overflow_dropped",
    }
)
_SUMMED = tuple(name for name in COUNTERS if name not in _ENDPOINT_OWNED)


def random_session_id() -> int:
    return secrets.randbits(64)


def keyed_session_id(seconds: float) -> int:
    """A session id for an endpoint with a key: the wall-clock second it was
    made in the top 32 bits (authenticated with every frame), 32 random bits
    below. Receivers refuse a unicast session older than the one they have."""
    return (int(seconds) & 0xFFFFFFFF) << 32 | secrets.randbits(32)


class PeerOpened(NamedTuple):
    """A new peer: the trio layer makes its Connection."""

    peer: Peer


class PeerState(NamedTuple):
    """A peer's connection state changed."""

    peer: Peer
    state: ConnectionState


class PeerWakeup(NamedTuple):
    """A peer's reliable sender made progress or failed: whoever waits for room
    or for acknowledgements should look again."""

    peer: Peer


class PeerClosed(NamedTuple):
    """A peer is gone; ``reason`` is ``"idle"``, ``"replaced"`` (it restarted),
    ``"evicted"`` (room was needed) or ``"closed"`` (the application ended it)."""

    peer: Peer
    reason: str


class _Partial:
    """A fragmented message being reassembled."""

    __slots__ = ("chunks", "count", "last_seen", "length", "received", "topic")

    def __init__(self, length: int, count: int, topic: bytes, now: float) -> None:
        self.length = length
        self.count = count
        self.topic = topic
        self.chunks: dict[int, bytes] = {}
        self.received = 0
        self.last_seen = now


class _Stream:
    """One sequence space of one peer: a sender's session towards us."""

    __slots__ = (
        "acks",
        "last_activity",
        "partial_bytes",
        "partial_datagrams",
        "partials",
        "session",
        "window",
    )

    def __init__(self, session: int, window: OrderedWindow | UnorderedWindow, now: float) -> None:
        self.session: int = session
        self.window: OrderedWindow | UnorderedWindow = window
        self.partials: dict[int, _Partial] = {}
        self.partial_bytes: int = 0
        self.partial_datagrams: int = 0
        self.last_activity: float = now
        #: What to acknowledge (reliable streams only).
        self.acks: Acknowledger | None = None

    @property
    def buffered_bytes(self) -> int:
        window = self.window
        pending = window.pending_bytes if isinstance(window, OrderedWindow) else 0
        return self.partial_bytes + pending

    @property
    def pending_datagrams(self) -> int:
        window = self.window
        pending = window.pending_datagrams if isinstance(window, OrderedWindow) else 0
        return self.partial_datagrams + pending


class Peer:
    """Everything the engine knows about one remote address."""

    __slots__ = (
        "address",
        "closed",
        "control_bytes",
        "counters",
        "failure",
        "groups",
        "handle",
        "heard",
        "keepalive_at",
        "last_activity",
        "last_sent",
        "ping_due",
        "reject_at",
        "retired",
        "send_sequence",
        "send_session",
        "sender",
        "state",
        "timer_at",
        "unconsumed",
        "unconsumed_bytes",
        "unicast",
        "validated",
    )

    def __init__(self, address: Address, send_session: int, now: float) -> None:
        self.address: Address = address
        #: The trio layer's Connection for this peer (what messages reply through).
        self.handle: Replier | None = None
        self.counters: Counters = Counters()
        self.send_session: int = send_session
        self.send_sequence: int = 0
        self.unicast: _Stream | None = None
        self.groups: dict[int, _Stream] = {}
        #: Its last RETIRED_SESSIONS unicast session ids (a tuple: no memory
        #: while there are none, as with most peers).
        self.retired: tuple[int, ...] = ()
        self.last_activity: float = now
        self.timer_at: float = inf
        self.closed: bool = False
        #: The reliable send side, made when the first reliable message is queued.
        self.sender: Sender | None = None
        self.state: ConnectionState = ConnectionState.ESTABLISHED
        #: When a valid frame last came from the peer, and when we last sent to it.
        self.heard: float = now
        self.last_sent: float = now
        self.keepalive_at: float = inf
        self.ping_due: bool = False
        #: Why sending to the peer failed for good (None: it has not).
        self.failure: str | None = None
        #: Reliable messages delivered to a channel, not yet received by the application.
        self.unconsumed: int = 0
        self.unconsumed_bytes: int = 0
        #: Bytes of ACKs and REJECTs sent, and whether the application chose this
        #: address (sent to it first) so the amplification limit does not apply.
        self.control_bytes: int = 0
        self.validated: bool = False
        self.reject_at: float = -inf

    def streams(self) -> list[_Stream]:
        streams = list(self.groups.values())
        if self.unicast is not None:
            streams.append(self.unicast)
        return streams

    @property
    def buffered_bytes(self) -> int:
        return sum(stream.buffered_bytes for stream in self.streams())

    @property
    def pending_datagrams(self) -> int:
        return sum(stream.pending_datagrams for stream in self.streams())

    def statistics(self) -> PeerStatistics:
        sender = self.sender
        if sender is None:
            return peer_statistics(self.counters, self.pending_datagrams)
        rtt = sender.rtt
        return peer_statistics(
            self.counters,
            self.pending_datagrams,
            messages_unacknowledged=sender.unacknowledged,
            bytes_in_flight=sender.bytes_in_flight,
            congestion_window=sender.window,
            rtt_smoothed=rtt.smoothed if rtt.latest else 0.0,
            rtt_variation=rtt.variation if rtt.latest else 0.0,
            rtt_min=rtt.minimum,
        )


class Engine:
    """The protocol state of one socket. ``connected_to`` makes it a client's:
    one peer, made at once, never forgotten, whose restarts keep it."""

    def __init__(
        self,
        config: Config,
        *,
        now: float,
        connected_to: Address | None = None,
        new_session_id: Callable[[], int] = random_session_id,
        key: bytes | None = None,
    ) -> None:
        self.config = config
        #: The shared key that authenticates every frame, if any.
        self.key = key
        self._seal = sealer(key)
        self.framing = config.framing
        self.reliable = config.reliable
        #: The largest payload ``encode_small`` takes: one plain frame's worth,
        #: within max_message_size.
        self._small_limit = min(config.max_datagram_size - OVERHEAD, config.max_message_size)
        #: Datagrams the engine itself has to send: (datagram, address, DSCP or None).
        self._outgoing: list[tuple[bytes, Address, int | None]] = []
        #: Peers with output to produce at the next ``take_datagrams``.
        self._ready: dict[Peer, None] = {}
        self._reject_at = -inf
        self.random = random.Random()
        self._new_session_id = new_session_id
        self.peers: dict[Address, Peer] = {}
        self._events: list[object] = []
        #: Datagrams no peer owns, and the endpoint-owned counters.
        self._own = Counters()
        #: Counters of peers already forgotten.
        self._retired = Counters()
        self._buffered_total = 0
        self._timers: list[tuple[float, int, Peer]] = []
        self._tiebreak = _count()
        #: Session ids of our own GROUP sends, to recognise them looped back.
        self._own_sessions: set[int] = set()
        #: Send state for group destinations (multicast groups, broadcast addresses).
        self._destinations: dict[Address, Peer] = {}
        #: The subscription: topics (UTF-8) to deliver; None delivers every topic.
        self.topics: frozenset[bytes] | None = None
        self.peers_opened = 0
        self.peers_closed = 0
        self.receive_errors = 0
        #: Datagrams the shell sent in GSO runs, and received in GRO reads.
        self.datagrams_offloaded = 0
        self.datagrams_coalesced = 0
        self.connected = connected_to is not None
        self.client_peer: Peer | None = None
        if connected_to is not None:
            self.client_peer = self._open_peer(connected_to, now)
            assert self.client_peer is not None
            self.client_peer.state = ConnectionState.CONNECTING
            self.client_peer.validated = True

    # -- receiving ------------------------------------------------------------

    def receive_datagram(
        self, data: bytes | bytearray | memoryview, address: Address, now: float
    ) -> None:
        """Take one datagram (``data`` may be a view of a buffer that is reused
        afterwards: whatever is kept is copied)."""
        peer = self.peers.get(address)
        size = len(data)
        if not self.framing:
            if peer is None:
                peer = self._open_peer(address, now)
                if peer is None:
                    self._count_unowned_over_limit(size)
                    return
            counters = peer.counters
            counters.datagrams_received += 1
            counters.bytes_received += size
            peer.last_activity = now
            self._events.append(Message(bytes(data), address, None, "", peer, 1))
            return
        try:
            frame = decode_frame_untrusted(data, self.key)
        except BadFrame as exc:
            counters = self._own if peer is None else peer.counters
            counters.datagrams_received += 1
            counters.bytes_received += size
            if exc.crc:
                counters.datagrams_crc_error += 1
            elif exc.auth:
                counters.datagrams_unauthenticated += 1
            else:
                counters.datagrams_malformed += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("dropped a %d-byte datagram from %s: %s", size, address, exc)
            return
        # One unpacking rather than an attribute lookup at each use: this runs
        # for every datagram.
        (session, sequence, payload, length, _, count, topic, group, packet, _, kind, parts) = frame
        if kind:
            self._control(peer, frame, address, size, now)
            return
        if (packet >= 0) is not self.reliable:
            self._mismatch(peer, frame, address, size, now)
            return
        if group and session in self._own_sessions:
            counters = self._own if peer is None else peer.counters
            counters.datagrams_received += 1
            counters.bytes_received += size
            counters.datagrams_own += 1
            return
        stream = None if peer is None else peer.unicast
        if peer is None or (
            not group
            and (stream is None or stream.session != session)
            and self._restarted(peer, session)
        ):
            retired = None
            if peer is not None:
                retired = _retire(peer.retired, peer.unicast.session)  # type: ignore[union-attr]
                self._close_peer(peer, "replaced")
            peer = self._open_peer(address, now)
            if peer is None:
                self._count_unowned_over_limit(size)
                return
            if retired is not None:
                peer.retired = retired
                peer.counters.session_changes += 1
        counters = peer.counters
        # Each message of a bundle counts as a datagram in the outcomes.
        counters.datagrams_received += len(parts) or 1
        counters.bytes_received += size
        peer.last_activity = peer.heard = now
        if peer.state is not ConnectionState.ESTABLISHED:
            self._heard(peer)
        stream = peer.unicast
        if (
            count == 1
            and stream is not None
            and stream.session == session
            and stream.acks is None
            and not group
            and self.topics is None
        ):
            # The common case, without the general path's calls: the next
            # message of a known unicast session, in order, with nothing waiting.
            ordered = stream.window
            limit = self.config.max_message_size
            if (
                type(ordered) is OrderedWindow
                and sequence == ordered.base
                and not ordered.pending
                and length <= limit
                and (not parts or max(map(len, parts)) <= limit)
            ):
                stream.last_activity = now
                text = topic.decode() if topic else ""
                if not parts:
                    self._events.append(Message(bytes(payload), address, sequence, text, peer, 1))
                    ordered.step()
                    return
                self._events.extend(
                    [
                        Message(bytes(part), address, (sequence + i) & 0xFFFFFFFF, text, peer, 1)
                        for i, part in enumerate(parts)
                    ]
                )
                ordered.step(len(parts))
                return
        first = frame.oldest if self.reliable else sequence
        stream = self._stream(peer, group, session, first, now)
        if stream is None:
            if parts:
                counters.datagrams_stale_session += len(parts) - 1
            return
        if stream.acks is not None:
            self._reliable_data(peer, stream, frame, now)
            return
        stream.last_activity = now
        if not parts:
            self._message(peer, stream, sequence, payload, length, topic, frame, now)
            return
        for part in parts:
            self._message(peer, stream, sequence, part, len(part), topic, None, now)
            sequence = (sequence + 1) & 0xFFFFFFFF

    def _message(
        self,
        peer: Peer,
        stream: _Stream,
        sequence: int,
        payload: memoryview,
        length: int,
        topic: bytes,
        frame: Frame | None,
        now: float,
    ) -> None:
        """One message of an unreliable stream, or with a ``frame`` whose
        fragment_count is above 1, one fragment of it."""
        counters = peer.counters
        window = stream.window
        verdict = window.classify(sequence)
        topics = self.topics
        if topics is not None and topic not in topics:
            counters.datagrams_filtered += 1
            if verdict == NEW:
                self._accept(peer, stream, sequence, None, now)
            return
        if verdict != NEW:
            if verdict == DUPLICATE:
                counters.datagrams_duplicate += 1
            else:
                counters.datagrams_late += 1
            return
        whole = frame is None or frame.fragment_count == 1
        if length > self.config.max_message_size:
            counters.datagrams_over_limit += 1
            if whole:
                # Known to be dropped: the messages after it need not wait for it.
                self._accept(peer, stream, sequence, None, now)
            return
        if frame is None or whole:
            text = topic.decode() if topic else ""
            message = Message(bytes(payload), peer.address, sequence, text, peer, 1)
        else:
            assembled = self._add_fragment(peer, stream, frame, now)
            if not assembled:
                return
            message = assembled
        self._accept(peer, stream, sequence, message, now)

    def _reliable_data(self, peer: Peer, stream: _Stream, frame: Frame, now: float) -> None:
        """A RELIABLE data frame: stored or delivered and acknowledged, or refused
        (counted, not acknowledged: the sender sends it again). A bundle is
        acknowledged only if each of its messages was taken."""
        window = cast("OrderedWindow", stream.window)
        acks = cast("Acknowledger", stream.acks)
        if sequence_difference(frame.oldest, window.base) > 0:
            self._catch_up(peer, stream, frame.oldest)
        topic = frame.topic
        if frame.parts:
            taken = True
            sequence = frame.sequence
            for part in frame.parts:
                taken = (
                    self._reliable_message(peer, stream, sequence, part, topic, None, now) and taken
                )
                sequence = (sequence + 1) & 0xFFFFFFFF
        else:
            fragment = frame if frame.fragment_count > 1 else None
            taken = self._reliable_message(
                peer, stream, frame.sequence, frame.payload, topic, fragment, now
            )
        if taken:
            self._acknowledge(peer, acks, frame.packet, now)
        else:
            self._refused(peer, acks, now)

    def _reliable_message(
        self,
        peer: Peer,
        stream: _Stream,
        sequence: int,
        payload: memoryview,
        topic: bytes,
        fragment: Frame | None,
        now: float,
    ) -> bool:
        """One message (or with ``fragment``, one fragment) of a reliable stream:
        True if it was taken (delivered, stored, or a copy of one delivered
        before), False if refused for want of room (counted)."""
        counters = peer.counters
        window = cast("OrderedWindow", stream.window)
        if window.classify(sequence) != NEW:
            # Nothing before the window's base is ever given up in reliable mode,
            # so a message behind it was delivered: acknowledge the copy again.
            counters.datagrams_duplicate += 1
            return True
        config = self.config
        length = len(payload) if fragment is None else fragment.message_length
        if (
            sequence_difference(sequence, window.base) >= config.reorder_window - peer.unconsumed
            or length > config.max_message_size
        ):
            counters.datagrams_over_limit += 1
            return False
        topics = self.topics
        message: Message | None = None
        if topics is not None and topic not in topics:
            counters.datagrams_filtered += 1
        elif fragment is None:
            if sequence != window.base and not self._within_budget(peer, length):
                counters.datagrams_over_limit += 1
                return False
            text = topic.decode() if topic else ""
            message = Message(bytes(payload), peer.address, sequence, text, peer, 1)
        else:
            assembled = self._add_fragment(peer, stream, fragment, now)
            if assembled is False:
                return False
            if assembled is None:
                return True
            message = assembled
        before = len(self._events)
        self._accept(peer, stream, sequence, message, now)
        self._count_unconsumed(peer, before)
        return True

    def _count_unconsumed(self, peer: Peer, before: int) -> None:
        """The messages a reliable stream delivered since ``len(events)`` was
        ``before`` count against the peer's window until received."""
        events = self._events
        for index in range(before, len(events)):
            size = len(cast("Message", events[index]).payload)
            peer.unconsumed += 1
            peer.unconsumed_bytes += size
            self._buffered_total += size

    def _catch_up(self, peer: Peer, stream: _Stream, oldest: int) -> None:
        """The sender's oldest unacknowledged message is past this stream's base:
        a receiver before us (this endpoint before it restarted or forgot the
        peer) acknowledged the ones between, and they will never come again."""
        window = cast("OrderedWindow", stream.window)
        before = len(self._events)
        pending = window.pending_bytes
        window.catch_up(oldest, self._events)
        self._buffered_total += window.pending_bytes - pending
        self._count_unconsumed(peer, before)

    def _acknowledge(self, peer: Peer, acks: Acknowledger, packet: int, now: float) -> None:
        acks.record(packet, now)
        if acks.due <= now:
            self._ready[peer] = None
        else:
            self._arm(peer)

    def _refused(self, peer: Peer, acks: Acknowledger, now: float) -> None:
        """Data was refused for want of room: acknowledge nothing new, but answer
        soon so the sender knows this end is alive and how far it may go."""
        acks.due = min(acks.due, now + MAX_ACK_DELAY_REFUSED)
        self._arm(peer)

    def _control(
        self, peer: Peer | None, frame: Frame, address: Address, size: int, now: float
    ) -> None:
        """An ACK, PING or REJECT frame."""
        kind = frame.kind
        ack: Ack | None = None
        if kind == KIND_ACK:
            try:
                ack = decode_ack_untrusted(frame.payload)
            except BadFrame:
                counters = self._own if peer is None else peer.counters
                counters.datagrams_received += 1
                counters.bytes_received += size
                counters.datagrams_malformed += 1
                return
        if peer is None and kind == KIND_PING:
            peer = self._open_peer(address, now)
            if peer is None:
                self._count_unowned_over_limit(size)
                return
        if peer is None:
            own = self._own
            own.datagrams_received += 1
            own.bytes_received += size
            own.datagrams_stale_session += 1
            return
        counters = peer.counters
        counters.datagrams_received += 1
        counters.bytes_received += size
        session = frame.session
        if kind != KIND_PING and session != peer.send_session:
            counters.datagrams_stale_session += 1
            return
        counters.datagrams_control += 1
        peer.last_activity = peer.heard = now
        if peer.state is not ConnectionState.ESTABLISHED:
            self._heard(peer)
        if kind == KIND_PING:
            stream = peer.unicast
            if stream is not None and stream.session == session and stream.acks is not None:
                window = cast("OrderedWindow", stream.window)
                if sequence_difference(frame.sequence, window.base) > 0:
                    self._catch_up(peer, stream, frame.sequence)
                stream.acks.due = now
            else:
                limit = (frame.sequence + self.config.reorder_window - 1) & 0xFFFFFFFF
                body = encode_ack_body(0.0, peer.send_session, frame.sequence, [])
                self._send_control(peer, KIND_ACK, session, limit, body)
            self._ready[peer] = None
        elif ack is not None:
            sender = peer.sender
            if sender is not None:
                if ack.ranges:
                    # It acknowledges what we sent to this address: it is really there.
                    peer.validated = True
                sender.on_ack(ack, frame.sequence, now)
                self._events.append(PeerWakeup(peer))
                self._ready[peer] = None
        else:
            reason = {
                REJECT_NOT_RELIABLE: "not_reliable",
                REJECT_RELIABLE_ONLY: "reliable_only",
            }.get(frame.sequence, "rejected")
            self._fail(peer, reason)

    def _mismatch(
        self, peer: Peer | None, frame: Frame, address: Address, size: int, now: float
    ) -> None:
        """A reliable frame at an unreliable endpoint, or the reverse: not
        delivered (the sender's guarantees would not hold), answered with a
        REJECT at most once a second, never to a group frame."""
        counters = self._own if peer is None else peer.counters
        counters.datagrams_received += 1
        counters.bytes_received += size
        counters.datagrams_mismatched += 1
        if frame.group:
            return
        last = self._reject_at if peer is None else peer.reject_at
        if now - last < REJECT_INTERVAL:
            counters.control_suppressed += 1
            return
        reason = REJECT_NOT_RELIABLE if frame.packet >= 0 else REJECT_RELIABLE_ONLY
        datagram = encode_control(
            KIND_REJECT, frame.session, reason, b"", self._seal, authenticated=self.key is not None
        )
        if peer is None:
            self._reject_at = now
        else:
            peer.reject_at = now
            peer.control_bytes += len(datagram)
        counters.datagrams_sent += 1
        counters.bytes_sent += len(datagram)
        self._outgoing.append((datagram, address, None))

    def _send_control(self, peer: Peer, kind: int, session: int, value: int, body: bytes) -> bool:
        """Queue an ACK or a REJECT to ``peer`` unless the amplification limit
        forbids it (False: suppressed, counted)."""
        datagram = encode_control(
            kind, session, value, body, self._seal, authenticated=self.key is not None
        )
        counters = peer.counters
        if (
            not peer.validated
            and peer.control_bytes + len(datagram) > AMPLIFICATION * counters.bytes_received
        ):
            counters.control_suppressed += 1
            return False
        peer.control_bytes += len(datagram)
        counters.datagrams_sent += 1
        counters.bytes_sent += len(datagram)
        if kind == KIND_ACK:
            counters.acks_sent += 1
        self._outgoing.append((datagram, peer.address, None))
        return True

    def _heard(self, peer: Peer) -> None:
        """A valid frame came from ``peer``, whose state was not ESTABLISHED."""
        if peer.failure is None and not peer.closed:
            self._set_state(peer, ConnectionState.ESTABLISHED)

    def _set_state(self, peer: Peer, state: ConnectionState) -> None:
        if peer.state is not state:
            peer.state = state
            self._events.append(PeerState(peer, state))

    def _fail(self, peer: Peer, reason: str) -> None:
        """Sending to ``peer`` failed for good."""
        if peer.failure is not None:
            return
        peer.failure = reason
        if peer.sender is not None:
            peer.sender.fail(reason)
        self._set_state(peer, ConnectionState.LOST)
        self._events.append(PeerWakeup(peer))

    def _restarted(self, peer: Peer, session: int) -> bool:
        """Whether a unicast frame of ``session`` means a server's peer restarted."""
        stream = peer.unicast
        return (
            not self.connected
            and stream is not None
            and session != stream.session
            and session not in peer.retired
            and not self._older(session, stream.session)
        )

    def _older(self, session: int, current: int) -> bool:
        """With a key, session ids start with the second they were made (see
        keyed_session_id), so an authenticated session older than the current
        one is a recording played back: refused as stale."""
        return self.key is not None and session >> 32 < current >> 32

    def _stream(
        self, peer: Peer, group: bool, session: int, sequence: int, now: float
    ) -> _Stream | None:
        """The stream a frame belongs to, started if new; None (counted) if the
        frame is from a stale session."""
        config = self.config
        window_class = OrderedWindow if config.ordered else UnorderedWindow
        if group:
            stream = peer.groups.get(session)
            if stream is None:
                if len(peer.groups) >= MAX_GROUP_STREAMS:
                    oldest = min(peer.groups.values(), key=lambda s: s.last_activity)
                    self._end_stream(peer, oldest, stale=False)
                    del peer.groups[oldest.session]
                window = window_class(sequence, config.reorder_window)
                stream = peer.groups[session] = _Stream(session, window, now)
            return stream
        stream = peer.unicast
        if stream is None or stream.session != session:
            if session in peer.retired or (
                stream is not None and self._older(session, stream.session)
            ):
                peer.counters.datagrams_stale_session += 1
                return None
            if stream is not None:  # a client's peer restarted
                self._end_stream(peer, stream, stale=True)
                peer.retired = _retire(peer.retired, stream.session)
                peer.counters.session_changes += 1
            window = window_class(sequence, config.reorder_window)
            stream = peer.unicast = _Stream(session, window, now)
            if self.reliable:
                stream.acks = Acknowledger()
        return stream

    def _accept(
        self, peer: Peer, stream: _Stream, sequence: int, message: Message | None, now: float
    ) -> None:
        """Hand a new message (None: one filtered out) to its stream's window."""
        window = stream.window
        if isinstance(window, UnorderedWindow):
            window.accept(sequence, message, now, self._events, peer.counters)
            return
        before = window.pending_bytes
        window.accept(sequence, message, now, self._events, peer.counters)
        self._buffered_total += window.pending_bytes - before
        if window.pending and stream.acks is None:
            self._arm(peer)
            if not self._within_budget(peer, 0):
                self._relieve(peer, 0, keep=None)

    def _add_fragment(
        self, peer: Peer, stream: _Stream, frame: Frame, now: float
    ) -> Message | Literal[False] | None:
        """Store a fragment: the whole message once it completes, None while it
        does not (or for a copy of a fragment held already), False if the
        fragment was dropped (counted)."""
        counters = peer.counters
        partials = stream.partials
        sequence, length, count = frame.sequence, frame.message_length, frame.fragment_count
        # A reliable stream never drops what it acknowledged, so it refuses new
        # data instead; the message it delivers next always gets room.
        reliable = stream.acks is not None
        first = reliable and sequence == cast("OrderedWindow", stream.window).base
        partial = partials.get(sequence)
        if partial is None:
            if len(partials) >= self.config.max_partial_messages:
                if reliable and not first:
                    counters.datagrams_over_limit += 1
                    return False
                if not reliable:
                    self._drop_partial(peer, stream, next(iter(partials)), expired=False)
            partial = _Partial(length, count, frame.topic, now)
            partials[sequence] = partial
            self._arm(peer)
        elif partial.length != length or partial.count != count or partial.topic != frame.topic:
            counters.datagrams_malformed += 1
            return False
        index = frame.fragment_index
        payload = frame.payload
        if index in partial.chunks:
            counters.datagrams_duplicate += 1
            return None
        if partial.received + len(payload) > length:
            counters.datagrams_malformed += 1
            return False
        cost = len(payload) + FRAGMENT_COST
        if not self._within_budget(peer, cost) and not (
            first and peer.unconsumed_bytes < self.config.peer_buffer_bytes
        ):
            if not reliable:
                self._relieve(peer, cost, keep=partial)
            if reliable or not self._within_budget(peer, cost):
                counters.datagrams_over_limit += 1
                if not partial.chunks:
                    del partials[sequence]
                return False
        partial.chunks[index] = bytes(payload)
        partial.received += len(payload)
        partial.last_seen = now
        stream.partial_bytes += cost
        stream.partial_datagrams += 1
        self._buffered_total += cost
        # Most recently active last: the front of `partials` expires first.
        del partials[sequence]
        partials[sequence] = partial
        if len(partial.chunks) < count:
            return None
        self._drop_partial(peer, stream, sequence, expired=None)
        if partial.received != length:
            counters.datagrams_malformed += count
            return None
        chunks = partial.chunks
        whole = b"".join([chunks[i] for i in range(count)])
        topic = partial.topic.decode() if partial.topic else ""
        return Message(whole, peer.address, sequence, topic, peer, count)

    def _drop_partial(
        self, peer: Peer, stream: _Stream, sequence: int, *, expired: bool | None
    ) -> None:
        """Forget a partial message; its fragments count as expired (True), over a
        limit (False) or, when it just completed, nothing yet (None)."""
        partial = stream.partials.pop(sequence)
        held = len(partial.chunks)
        cost = partial.received + FRAGMENT_COST * held
        stream.partial_bytes -= cost
        stream.partial_datagrams -= held
        self._buffered_total -= cost
        if expired:
            peer.counters.datagrams_reassembly_expired += held
        elif expired is False:
            peer.counters.datagrams_over_limit += held

    def _within_budget(self, peer: Peer, extra: int) -> bool:
        config = self.config
        total = self._buffered_total + extra
        if total > config.total_buffer_bytes:
            return False
        # The total includes every peer's share: while it fits one peer's budget
        # (the usual case), no peer's own bytes need adding up.
        return (
            total <= config.peer_buffer_bytes
            or peer.buffered_bytes + peer.unconsumed_bytes + extra <= config.peer_buffer_bytes
        )

    def _relieve(self, peer: Peer, extra: int, *, keep: _Partial | None) -> None:
        """Make room in ``peer``'s own buffers: deliver past reorder gaps first
        (no data is lost by that), then drop its least recently active partial
        messages other than ``keep``. Other peers' buffers are never touched."""
        streams = peer.streams()
        for stream in streams:
            window = stream.window
            if isinstance(window, OrderedWindow):
                while window.pending and not self._within_budget(peer, extra):
                    self._skip_gap(peer, window)
        candidates = sorted(
            (
                (partial.last_seen, stream, sequence)
                for stream in streams
                for sequence, partial in stream.partials.items()
                if partial is not keep
            ),
            key=lambda item: item[0],
        )
        for _last_seen, stream, sequence in candidates:
            if self._within_budget(peer, extra):
                return
            self._drop_partial(peer, stream, sequence, expired=False)

    def _skip_gap(self, peer: Peer, window: OrderedWindow) -> None:
        before = window.pending_bytes
        window.skip_gap(self._events, peer.counters)
        self._buffered_total += window.pending_bytes - before

    def _count_unowned_over_limit(self, size: int) -> None:
        own = self._own
        own.datagrams_received += 1
        own.bytes_received += size
        own.datagrams_over_limit += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "dropped a %d-byte datagram from a new peer: max_peers=%d are known",
                size,
                self.config.max_peers,
            )

    # -- peers ------------------------------------------------------------------

    def _open_peer(self, address: Address, now: float) -> Peer | None:
        if len(self.peers) >= self.config.max_peers:
            return None
        peer = Peer(address, self._new_session_id(), now)
        self._schedule_keepalive(peer)
        self.peers[address] = peer
        self.peers_opened += 1
        if not self.connected:
            self._events.append(PeerOpened(peer))
        self._arm(peer)
        return peer

    def _end_stream(self, peer: Peer, stream: _Stream, *, stale: bool) -> None:
        """Settle a stream: whole messages waiting for a gap are delivered, partial
        ones counted (stale for a restart, else expired)."""
        window = stream.window
        if isinstance(window, OrderedWindow) and window.pending:
            self._buffered_total -= window.pending_bytes
            window.flush(self._events, peer.counters)
        for sequence in list(stream.partials):
            held = len(stream.partials[sequence].chunks)
            self._drop_partial(peer, stream, sequence, expired=None)
            if stale:
                peer.counters.datagrams_stale_session += held
            else:
                peer.counters.datagrams_reassembly_expired += held

    def _close_peer(self, peer: Peer, reason: str) -> None:
        if peer.closed:
            return
        for stream in peer.streams():
            self._end_stream(peer, stream, stale=reason == "replaced" and stream is peer.unicast)
        peer.unicast = None
        peer.groups = {}
        peer.closed = True
        if peer.sender is not None:
            if peer.sender.unacknowledged and peer.failure is None:
                peer.failure = reason
            peer.sender.fail(reason)
        self._buffered_total -= peer.unconsumed_bytes
        peer.unconsumed = peer.unconsumed_bytes = 0
        peer.state = ConnectionState.CLOSED
        peer.keepalive_at = inf
        if self.peers.get(peer.address) is peer:
            del self.peers[peer.address]
        self._own_sessions.discard(peer.send_session)
        self._retired.add(peer.counters, _SUMMED)
        self.peers_closed += 1
        self._events.append(PeerClosed(peer, reason))

    def close_peer(self, peer: Peer) -> None:
        """The application is done with ``peer`` (its handler returned): forget
        it, so that its next datagram starts a new connection."""
        if peer is not self.client_peer:
            self._close_peer(peer, "closed")

    def peer_for(self, address: Address, now: float) -> Peer:
        """The peer to send to at ``address``, made if new; when ``max_peers``
        are known, the least recently active one is forgotten to make room."""
        peer = self.peers.get(address)
        if peer is None:
            if len(self.peers) >= self.config.max_peers:
                victim = min(self.peers.values(), key=lambda p: p.last_activity)
                self._close_peer(victim, "evicted")
            peer = self._open_peer(address, now)
            assert peer is not None
            peer.state = ConnectionState.CONNECTING
        peer.validated = True
        return peer

    def destination(self, address: Address, now: float) -> Peer:
        """The send state for a group destination (a multicast group or a
        broadcast address): no receive state, no events, never idle."""
        peer = self._destinations.get(address)
        if peer is None:
            peer = self._destinations[address] = Peer(address, self._new_session_id(), now)
        return peer

    # -- sending ----------------------------------------------------------------

    def encode(
        self, peer: Peer, payload: Buffer, now: float, *, topic: str = "", group: bool = False
    ) -> list[bytes]:
        """The datagrams that carry ``payload`` to ``peer`` (``group``: a multicast
        or broadcast address); raises ValueError if it is larger than the
        configured limits allow, or TypeError if it is not bytes."""
        config = self.config
        payload = self._checked(payload)
        size = payload.nbytes
        if self.framing:
            datagrams = encode_message(
                peer.send_session,
                peer.send_sequence,
                payload,
                config.max_datagram_size,
                topic=encode_topic(topic),
                group=group,
                key=self.key,
            )
            peer.send_sequence = (peer.send_sequence + 1) & 0xFFFFFFFF
            if group:
                self._own_sessions.add(peer.send_session)
        else:
            if topic:
                raise ValueError("raw mode (framing=False) has no header to carry a topic")
            if size > config.max_datagram_size:
                raise ValueError(
                    f"a {size}-byte datagram is larger than max_datagram_size="
                    f"{config.max_datagram_size}; raw mode does not fragment, so raise "
                    f"max_datagram_size (up to 65507) or send less"
                )
            datagrams = [bytes(payload)]
        self._count_sent(peer, 1, datagrams, now)
        return datagrams

    def encode_small(self, peer: Peer, payload: Buffer, now: float) -> bytes | None:
        """``encode`` for the commonest case, the fast way: a bytes payload that
        fits one plain frame (no topic, group or key). None for anything else,
        which ``encode`` then takes (and checks)."""
        if type(payload) is not bytes or not self.framing or self.key is not None:
            return None
        if len(payload) > self._small_limit:
            return None
        sequence = peer.send_sequence
        datagram = encode_plain(peer.send_session, sequence, payload)
        peer.send_sequence = (sequence + 1) & 0xFFFFFFFF
        counters = peer.counters
        counters.messages_sent += 1
        counters.datagrams_sent += 1
        counters.bytes_sent += len(datagram)
        peer.last_activity = peer.last_sent = now
        return datagram

    def encode_batch(
        self,
        peer: Peer,
        payloads: Sequence[Buffer],
        now: float,
        *,
        topic: str = "",
        group: bool = False,
    ) -> list[bytes]:
        """The datagrams that carry ``payloads`` to ``peer``, in order: small
        messages share BUNDLE frames up to ``max_datagram_size`` (one header and
        one checksum), larger ones go as ``encode`` sends them. Every payload is
        checked before anything is encoded."""
        payloads = self.check_payloads(payloads)
        if not self.framing or len(payloads) == 1:
            datagrams: list[bytes] = []
            for payload in payloads:
                datagrams.extend(self.encode(peer, payload, now, topic=topic, group=group))
            return datagrams
        config = self.config
        topic_bytes = encode_topic(topic)
        room = config.max_datagram_size - frame_overhead(
            topic=topic_bytes, key=self.key, reliable=False
        )
        datagrams = []
        bundle: list[Buffer] = []
        used = 0
        sequence = peer.send_sequence

        def close_bundle() -> None:
            nonlocal sequence, used
            if len(bundle) == 1:
                one = encode_message(
                    peer.send_session,
                    sequence,
                    bundle[0],
                    config.max_datagram_size,
                    topic=topic_bytes,
                    group=group,
                    key=self.key,
                )
                datagrams.extend(one)
            elif bundle:
                datagrams.append(
                    encode_bundle(
                        peer.send_session,
                        sequence,
                        bundle,
                        topic=topic_bytes,
                        group=group,
                        key=self.key,
                    )
                )
            sequence = (sequence + len(bundle)) & 0xFFFFFFFF
            bundle.clear()
            used = 0

        for payload in payloads:
            size = memoryview(payload).nbytes + PART_OVERHEAD
            if used + size > room:
                close_bundle()
            if size > room:
                bundle.append(payload)
                close_bundle()
            else:
                bundle.append(payload)
                used += size
        close_bundle()
        peer.send_sequence = sequence
        if group:
            self._own_sessions.add(peer.send_session)
        self._count_sent(peer, len(payloads), datagrams, now)
        return datagrams

    def _count_sent(self, peer: Peer, messages: int, datagrams: list[bytes], now: float) -> None:
        counters = peer.counters
        counters.messages_sent += messages
        counters.datagrams_sent += len(datagrams)
        counters.bytes_sent += sum(map(len, datagrams))
        peer.last_activity = peer.last_sent = now

    def check_payloads(self, payloads: Sequence[Buffer]) -> list[memoryview]:
        """Each of ``payloads`` as a view of its bytes; raises as ``encode`` would
        if any of them cannot be sent."""
        return [self._checked(payload) for payload in payloads]

    def _checked(self, payload: Buffer) -> memoryview:
        view = byte_view(payload)
        size = view.nbytes
        limit = self.config.max_message_size
        if self.framing and size > limit:
            raise ValueError(
                f"a {size}-byte message is larger than max_message_size={limit}; "
                f"raise max_message_size on both ends"
            )
        return view

    # -- reliable sending -------------------------------------------------------

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
        ``take_datagrams``); check ``failure`` and ``has_room`` first. Raises
        like ``encode`` for a payload the limits do not allow."""
        payload = self._checked(payload)
        sender = peer.sender
        if sender is None:
            config = self.config
            sender = peer.sender = Sender(
                peer.send_session,
                max_datagram_size=config.max_datagram_size,
                receive_window=config.reorder_window,
                give_up_timeout=config.give_up_timeout,
                key=self.key,
                counters=peer.counters,
            )
        sender.queue(payload, encode_topic(topic), priority)
        peer.counters.messages_sent += 1
        peer.last_activity = now
        self._ready[peer] = None

    def has_room(self, peer: Peer) -> bool:
        """Whether ``peer``'s reliable sender takes another message now."""
        sender = peer.sender
        config = self.config
        return sender is None or sender.has_room(config.reorder_window, config.peer_buffer_bytes)

    def unacknowledged(self, peer: Peer) -> int:
        """Reliable messages to ``peer`` not yet acknowledged."""
        return 0 if peer.sender is None else peer.sender.unacknowledged

    def take_datagrams(self, now: float) -> list[tuple[bytes, Address, int | None]]:
        """What the engine itself has to send now: acknowledgements, PINGs,
        REJECTs and reliable data, as ``(datagram, address, DSCP or None)``."""
        ready = self._ready
        if ready:
            self._ready = {}
            for peer in ready:
                if not peer.closed:
                    self._produce(peer, now)
        outgoing = self._outgoing
        self._outgoing = []
        return outgoing

    def _produce(self, peer: Peer, now: float) -> None:
        stream = peer.unicast
        if stream is not None and stream.acks is not None and stream.acks.due <= now:
            window = cast("OrderedWindow", stream.window)
            credit = max(self.config.reorder_window - peer.unconsumed, 0)
            limit = (window.base - 1 + credit) & 0xFFFFFFFF
            most = MAX_ACK_RANGES
            if not peer.validated:
                # Fewer ranges rather than no ACK within the amplification limit.
                room = AMPLIFICATION * peer.counters.bytes_received - peer.control_bytes
                empty = control_size(ACK_FIXED_SIZE, self.key)
                most = max(min(most, (room - empty) // ACK_RANGE_SIZE), 0)
            body = stream.acks.body(
                now, limit, peer.send_session, window.base, ACK_RANGES_SENT, most
            )
            self._send_control(peer, KIND_ACK, stream.session, limit, body)
        sender = peer.sender
        if peer.ping_due:
            peer.ping_due = False
            if sender is not None:
                sender.ping()
            elif peer.failure is None:
                ping = encode_control(
                    KIND_PING,
                    peer.send_session,
                    peer.send_sequence,
                    b"",
                    self._seal,
                    authenticated=self.key is not None,
                )
                peer.counters.pings_sent += 1
                self._note_sent(peer, [(ping, None)], now)
        if sender is not None:
            out: list[tuple[bytes, int | None]] = []
            sender.transmit(now, out)
            if out:
                self._note_sent(peer, out, now)
        self._arm(peer)

    def _note_sent(self, peer: Peer, out: list[tuple[bytes, int | None]], now: float) -> None:
        counters = peer.counters
        address = peer.address
        outgoing = self._outgoing
        for datagram, priority in out:
            counters.datagrams_sent += 1
            counters.bytes_sent += len(datagram)
            outgoing.append((datagram, address, priority))
        peer.last_sent = now

    def _schedule_keepalive(self, peer: Peer) -> None:
        keepalive = self.config.keepalive
        if keepalive is not None:
            # Never before last_sent + 0.8 x keepalive, which _peer_timers finds due.
            peer.keepalive_at = peer.last_sent + keepalive * self.random.uniform(*KEEPALIVE_JITTER)

    def count_consumed(self, message: Message) -> bool:
        """The application received ``message`` (reliable mode): it no longer
        counts against its peer's window. True if an acknowledgement should go
        now to tell the peer its window opened (call ``take_datagrams``)."""
        peer = cast("Peer", message._origin)
        size = len(message.payload)
        peer.unconsumed -= 1
        peer.unconsumed_bytes -= size
        self._buffered_total -= size
        stream = peer.unicast
        acks = None if stream is None else stream.acks
        if peer.closed or acks is None or acks.limit_sent < 0:
            return False
        window = cast("OrderedWindow", stream.window)  # type: ignore[union-attr]
        window_size = self.config.reorder_window
        limit = window.base - 1 + max(window_size - peer.unconsumed, 0)
        if sequence_difference(limit & 0xFFFFFFFF, acks.limit_sent) >= max(window_size // 4, 1):
            acks.due = 0.0
            self._ready[peer] = None
            return True
        return False

    def subscribe(self, topics: frozenset[str] | None) -> None:
        """Deliver only messages with these topics ("" is no topic), or every
        message (None)."""
        if topics is not None and not self.framing:
            raise ValueError("raw mode (framing=False) has no topics to subscribe to")
        self.topics = None if topics is None else frozenset(map(encode_topic, topics))

    def count_send_dropped(self, peer: Peer, count: int = 1) -> None:
        """The kernel had no buffer for ``count`` datagrams to ``peer``, even
        after backing off; they were dropped."""
        peer.counters.datagrams_send_dropped += count

    def count_unreachable(self, peer: Peer | None) -> None:
        """The kernel reported an ICMP error (for ``peer`` if it knows which)."""
        (self._own if peer is None else peer.counters).unreachable_errors += 1

    # -- delivery accounting ----------------------------------------------------

    def count_delivered(self, message: Message) -> None:
        """``message`` was put into a receive channel."""
        datagrams = message._datagrams
        for counters in (self._own, cast("Peer", message._origin).counters):
            counters.datagrams_delivered += datagrams
            counters.messages_delivered += 1

    def count_dropped(self, message: Message, *, was_delivered: bool) -> None:
        """A full receive channel dropped ``message``: the new one, or (when
        ``was_delivered``) one it already held."""
        datagrams = message._datagrams
        for counters in (self._own, cast("Peer", message._origin).counters):
            if was_delivered:
                counters.datagrams_delivered -= datagrams
                counters.messages_delivered -= 1
            counters.datagrams_overflow_dropped += datagrams
            counters.messages_overflow_dropped += 1

    # -- timers -----------------------------------------------------------------

    def _deadline(self, peer: Peer) -> float:
        config = self.config
        deadline = inf
        if config.idle_timeout is not None and not self.connected:
            deadline = peer.last_activity + config.idle_timeout
        if peer.sender is not None:
            deadline = min(deadline, peer.sender.deadline())
        deadline = min(deadline, peer.keepalive_at)
        if config.keepalive is not None and peer.state is ConnectionState.ESTABLISHED:
            deadline = min(deadline, peer.heard + config.keepalive)
        if config.dead_timeout is not None and peer.state is not ConnectionState.LOST:
            deadline = min(deadline, peer.heard + config.dead_timeout)
        for stream in peer.streams():
            if stream.acks is not None:
                if peer not in self._ready:  # else the ACK goes with the next output
                    deadline = min(deadline, stream.acks.due)
                continue
            window = stream.window
            if isinstance(window, OrderedWindow):
                arrival = window.oldest_arrival()
                if arrival is not None:
                    deadline = min(deadline, arrival + config.reorder_timeout)
            for partial in stream.partials.values():
                deadline = min(deadline, partial.last_seen + config.reassembly_timeout)
                break
        return deadline

    def _peer_timers(self, peer: Peer, now: float) -> None:
        """The reliable, keepalive and liveness timers of ``peer``."""
        config = self.config
        stream = peer.unicast
        if stream is not None and stream.acks is not None and stream.acks.due <= now:
            self._ready[peer] = None
        sender = peer.sender
        if sender is not None and sender.deadline() <= now:
            sender.on_timer(now)
            if sender.failure is not None:
                self._fail(peer, sender.failure)
            self._ready[peer] = None
        if peer.keepalive_at <= now:
            keepalive = cast("float", config.keepalive)
            if peer.last_sent + keepalive * KEEPALIVE_JITTER[0] <= now:
                peer.ping_due = True
                self._ready[peer] = None
                peer.last_sent = now
            self._schedule_keepalive(peer)
        # The same sums as in _deadline, so that a timer set for one finds it due.
        if config.dead_timeout is not None and now >= peer.heard + config.dead_timeout:
            self._set_state(peer, ConnectionState.LOST)
        elif (
            config.keepalive is not None
            and now >= peer.heard + config.keepalive
            and peer.state is ConnectionState.ESTABLISHED
        ):
            self._set_state(peer, ConnectionState.IDLE)

    def _arm(self, peer: Peer) -> None:
        deadline = self._deadline(peer)
        if deadline < peer.timer_at:
            peer.timer_at = deadline
            heapq.heappush(self._timers, (deadline, next(self._tiebreak), peer))

    def next_deadline(self) -> float:
        """When ``handle_timer`` should next be called (inf: not until more data)."""
        return self._timers[0][0] if self._timers else inf

    def handle_timer(self, now: float) -> None:
        """Run every timeout that is due at ``now``."""
        timers = self._timers
        config = self.config
        while timers and timers[0][0] <= now:
            deadline, _, peer = heapq.heappop(timers)
            if peer.closed or deadline != peer.timer_at:
                continue
            peer.timer_at = inf
            self._peer_timers(peer, now)
            for stream in peer.streams():
                if stream.acks is not None:
                    continue
                window = stream.window
                if isinstance(window, OrderedWindow):
                    while True:
                        arrival = window.oldest_arrival()
                        if arrival is None or arrival + config.reorder_timeout > now:
                            break
                        self._skip_gap(peer, window)
                for sequence, partial in list(stream.partials.items()):
                    if partial.last_seen + config.reassembly_timeout > now:
                        break
                    self._drop_partial(peer, stream, sequence, expired=True)
            if (
                config.idle_timeout is not None
                and not self.connected
                and peer.last_activity + config.idle_timeout <= now
            ):
                self._close_peer(peer, "idle")
            else:
                self._arm(peer)

    # -- output -----------------------------------------------------------------

    def take_events(self) -> list[object]:
        """The messages and peer events produced since the last call, in order:
        ``Message``, ``PeerOpened`` and ``PeerClosed`` objects."""
        events = self._events
        self._events = []
        return events

    def statistics(self) -> EndpointStatistics:
        total = Counters()
        total.add(self._own)
        total.add(self._retired)
        pending = unacknowledged = in_flight = 0
        for peer in self.peers.values():
            total.add(peer.counters, _SUMMED)
            pending += peer.pending_datagrams
            if peer.sender is not None:
                unacknowledged += peer.sender.unacknowledged
                in_flight += peer.sender.bytes_in_flight
        for destination in self._destinations.values():
            total.add(destination.counters, _SUMMED)
        return endpoint_statistics(
            total,
            pending,
            peers=len(self.peers),
            peers_opened=self.peers_opened,
            peers_closed=self.peers_closed,
            receive_errors=self.receive_errors,
            datagrams_offloaded=self.datagrams_offloaded,
            datagrams_coalesced=self.datagrams_coalesced,
            messages_unacknowledged=unacknowledged,
            bytes_in_flight=in_flight,
        )


def _retire(retired: tuple[int, ...], session: int) -> tuple[int, ...]:
    return (*retired, session)[-RETIRED_SESSIONS:]


def encode_topic(topic: str) -> bytes:
    """A topic's wire form, checked: UTF-8, at most MAX_TOPIC bytes."""
    if not isinstance(topic, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"a topic is a str, got {type(topic).__name__}")
    encoded = topic.encode()
    if len(encoded) > MAX_TOPIC:
        raise ValueError(f"a topic is at most {MAX_TOPIC} bytes of UTF-8, got {len(encoded)}")
    return encoded
