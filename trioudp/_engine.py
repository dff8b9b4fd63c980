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

Accounting. Every datagram ends in exactly one ``datagrams_*`` outcome of its
peer's counters (or of the endpoint's own, for datagrams no peer owns), or is
still pending; see _statistics.py. Delivery and channel overflow are counted
when the trio layer reports them with ``count_delivered``/``count_dropped``.
"""

from __future__ import annotations

import heapq
import secrets
from collections import deque
from itertools import count as _count
from math import inf
from typing import TYPE_CHECKING, NamedTuple, cast

from ._frame import MAX_TOPIC, BadFrame, Frame, decode_frame_untrusted, encode_message
from ._message import Message
from ._ordering import DUPLICATE, NEW, OrderedWindow, UnorderedWindow
from ._statistics import (
    COUNTERS,
    Counters,
    EndpointStatistics,
    PeerStatistics,
    endpoint_statistics,
    peer_statistics,
)

if TYPE_CHECKING:
    from collections.abc import Callable

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
        "last_activity",
        "partial_bytes",
        "partial_datagrams",
        "partials",
        "session",
        "window",
    )

    def __init__(self, session: int, window: OrderedWindow | UnorderedWindow, now: float) -> None:
        self.session = session
        self.window = window
        self.partials: dict[int, _Partial] = {}
        self.partial_bytes = 0
        self.partial_datagrams = 0
        self.last_activity = now

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
        "counters",
        "groups",
        "handle",
        "last_activity",
        "retired",
        "send_sequence",
        "send_session",
        "timer_at",
        "unicast",
    )

    def __init__(self, address: Address, send_session: int, now: float) -> None:
        self.address = address
        #: The trio layer's Connection for this peer (what messages reply through).
        self.handle: Replier | None = None
        self.counters = Counters()
        self.send_session = send_session
        self.send_sequence = 0
        self.unicast: _Stream | None = None
        self.groups: dict[int, _Stream] = {}
        self.retired: deque[int] = deque(maxlen=RETIRED_SESSIONS)
        self.last_activity = now
        self.timer_at = inf
        self.closed = False

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
        return peer_statistics(self.counters, self.pending_datagrams)


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
        self.framing = config.framing
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
        self.connected = connected_to is not None
        self.client_peer: Peer | None = None
        if connected_to is not None:
            self.client_peer = self._open_peer(connected_to, now)

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
            return
        session = frame.session
        if frame.group and session in self._own_sessions:
            counters = self._own if peer is None else peer.counters
            counters.datagrams_received += 1
            counters.bytes_received += size
            counters.datagrams_own += 1
            return
        if peer is None or (not frame.group and self._restarted(peer, session)):
            retired = None
            if peer is not None:
                retired = peer.retired
                retired.append(peer.unicast.session)  # type: ignore[union-attr]
                self._close_peer(peer, "replaced")
            peer = self._open_peer(address, now)
            if peer is None:
                self._count_unowned_over_limit(size)
                return
            if retired is not None:
                peer.retired = retired
                peer.counters.session_changes += 1
        counters = peer.counters
        counters.datagrams_received += 1
        counters.bytes_received += size
        peer.last_activity = now
        stream = self._stream(peer, frame.group, session, frame.sequence, now)
        if stream is None:
            return
        stream.last_activity = now
        window = stream.window
        sequence = frame.sequence
        verdict = window.classify(sequence)
        topics = self.topics
        if topics is not None and frame.topic not in topics:
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
        if frame.message_length > self.config.max_message_size:
            counters.datagrams_over_limit += 1
            return
        if frame.fragment_count == 1:
            topic = frame.topic.decode() if frame.topic else ""
            message = Message(bytes(frame.payload), address, sequence, topic, peer, 1)
        else:
            assembled = self._add_fragment(peer, stream, frame, now)
            if assembled is None:
                return
            message = assembled
        self._accept(peer, stream, sequence, message, now)

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
                peer.retired.append(stream.session)
                peer.counters.session_changes += 1
            window = window_class(sequence, config.reorder_window)
            stream = peer.unicast = _Stream(session, window, now)
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
        if window.pending:
            self._arm(peer)
            if not self._within_budget(peer, 0):
                self._relieve(peer, 0, keep=None)

    def _add_fragment(
        self, peer: Peer, stream: _Stream, frame: Frame, now: float
    ) -> Message | None:
        counters = peer.counters
        partials = stream.partials
        sequence, length, count = frame.sequence, frame.message_length, frame.fragment_count
        partial = partials.get(sequence)
        if partial is None:
            if len(partials) >= self.config.max_partial_messages:
                self._drop_partial(peer, stream, next(iter(partials)), expired=False)
            partial = _Partial(length, count, frame.topic, now)
            partials[sequence] = partial
            self._arm(peer)
        elif partial.length != length or partial.count != count or partial.topic != frame.topic:
            counters.datagrams_malformed += 1
            return None
        index = frame.fragment_index
        payload = frame.payload
        if index in partial.chunks:
            counters.datagrams_duplicate += 1
            return None
        if partial.received + len(payload) > length:
            counters.datagrams_malformed += 1
            return None
        cost = len(payload) + FRAGMENT_COST
        if not self._within_budget(peer, cost):
            self._relieve(peer, cost, keep=partial)
            if not self._within_budget(peer, cost):
                counters.datagrams_over_limit += 1
                if not partial.chunks:
                    del partials[sequence]
                return None
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
        return (
            peer.buffered_bytes + extra <= config.peer_buffer_bytes
            and self._buffered_total + extra <= config.total_buffer_bytes
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

    # -- peers ------------------------------------------------------------------

    def _open_peer(self, address: Address, now: float) -> Peer | None:
        if len(self.peers) >= self.config.max_peers:
            return None
        peer = Peer(address, self._new_session_id(), now)
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
        try:
            size = memoryview(payload).nbytes
        except TypeError:
            raise TypeError(
                f"a payload must be bytes-like (bytes, bytearray, memoryview), got "
                f"{type(payload).__name__}; encode text first, e.g. text.encode()"
            ) from None
        if self.framing:
            if size > config.max_message_size:
                raise ValueError(
                    f"a {size}-byte message is larger than max_message_size="
                    f"{config.max_message_size}; raise max_message_size on both ends"
                )
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
        counters = peer.counters
        counters.messages_sent += 1
        counters.datagrams_sent += len(datagrams)
        counters.bytes_sent += sum(map(len, datagrams))
        peer.last_activity = now
        return datagrams

    def subscribe(self, topics: frozenset[str] | None) -> None:
        """Deliver only messages with these topics ("" is no topic), or every
        message (None)."""
        if topics is not None and not self.framing:
            raise ValueError("raw mode (framing=False) has no topics to subscribe to")
        self.topics = None if topics is None else frozenset(map(encode_topic, topics))

    def count_send_dropped(self, peer: Peer) -> None:
        """The kernel had no buffer for a datagram to ``peer``, even after backing
        off; it was dropped."""
        peer.counters.datagrams_send_dropped += 1

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
        for stream in peer.streams():
            window = stream.window
            if isinstance(window, OrderedWindow):
                arrival = window.oldest_arrival()
                if arrival is not None:
                    deadline = min(deadline, arrival + config.reorder_timeout)
            for partial in stream.partials.values():
                deadline = min(deadline, partial.last_seen + config.reassembly_timeout)
                break
        return deadline

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
            for stream in peer.streams():
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
        pending = 0
        for peer in self.peers.values():
            total.add(peer.counters, _SUMMED)
            pending += peer.pending_datagrams
        for destination in self._destinations.values():
            total.add(destination.counters, _SUMMED)
        return endpoint_statistics(
            total,
            pending,
            peers=len(self.peers),
            peers_opened=self.peers_opened,
            peers_closed=self.peers_closed,
            receive_errors=self.receive_errors,
        )


def encode_topic(topic: str) -> bytes:
    """A topic's wire form, checked: UTF-8, at most MAX_TOPIC bytes."""
    if not isinstance(topic, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"a topic is a str, got {type(topic).__name__}")
    encoded = topic.encode()
    if len(encoded) > MAX_TOPIC:
        raise ValueError(f"a topic is at most {MAX_TOPIC} bytes of UTF-8, got {len(encoded)}")
    return encoded
