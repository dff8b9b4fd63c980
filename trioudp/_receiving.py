"""Per-peer receive state: streams, reorder windows, reassembly, and the budget
they are charged to.

Streams. A peer has one stream per sequence space: its unicast session, and
each session it sends to a group (multicast, broadcast). A stream starts at
the first sequence number it sees, so a receiver that joins late does not wait
for messages it can never get (see _ordering.py for the windows).

Reassembly. Fragments of a message wait in a ``Partial`` until all have come.
An unreliable stream drops a partial message after ``reassembly_timeout``
without a new fragment, and when its peer needs room (its least recently
active partial first); a fragment that does not fit even then is dropped.

Budget (see _budget.py). Partial messages, and whole messages waiting for a
gap, are charged to their peer and to the endpoint's total at their real
cost. An unreliable stream that runs out of room first gives up its own
reorder gaps (nothing is lost by delivering early), then drops its own oldest
partial messages; another peer's buffers are never touched.

A reliable stream never gives a gap up and never drops what it acknowledged,
so it admits data only if there is room for it, and refuses the rest without
an acknowledgement (the sender sends it again). A fragmented message is
admitted whole: its first fragment reserves the room for all of them, so that
partial messages can never fill the budget and wait for each other forever.
Data other than the next message a peer's stream delivers must also leave room
for one largest message, in its peer's budget and in the endpoint's total, so
that every peer's next message can always get in once the application reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ._budget import FRAGMENT_COST, PARTIAL_COST, message_cost, partial_cost
from ._frame import sequence_difference
from ._message import Message
from ._ordering import DUPLICATE, NEW, OrderedWindow, UnorderedWindow, waiting_cost
from ._recovery import Acknowledger

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._budget import Budget
    from ._config import Config
    from ._delivery import Delivery
    from ._frame import Frame
    from ._peer import Peer

#: How many earlier session ids of a peer are remembered as stale.
RETIRED_SESSIONS = 4
#: How many GROUP streams (multicast/broadcast senders' sessions) one peer keeps.
MAX_GROUP_STREAMS = 4


class Partial:
    """A fragmented message being reassembled."""

    __slots__ = ("charged", "chunks", "count", "last_seen", "length", "received", "topic")

    def __init__(self, length: int, count: int, topic: bytes, now: float) -> None:
        self.length = length
        self.count = count
        self.topic = topic
        self.chunks: dict[int, bytes] = {}
        self.received = 0
        self.last_seen = now
        #: What it is charged now (reliable: the whole message, reserved up front).
        self.charged = 0


class Stream:
    """One sequence space of one peer: a sender's session towards us."""

    __slots__ = ("acks", "last_activity", "partial_datagrams", "partials", "session", "window")

    def __init__(self, session: int, window: OrderedWindow | UnorderedWindow, now: float) -> None:
        self.session: int = session
        self.window: OrderedWindow | UnorderedWindow = window
        #: Partial messages by sequence number, least recently active first.
        self.partials: dict[int, Partial] = {}
        self.partial_datagrams: int = 0
        self.last_activity: float = now
        #: What to acknowledge (reliable streams only).
        self.acks: Acknowledger | None = None

    @property
    def pending_datagrams(self) -> int:
        window = self.window
        pending = window.pending_datagrams if isinstance(window, OrderedWindow) else 0
        return self.partial_datagrams + pending

    def ordered(self) -> OrderedWindow:
        """The window of a reliable (always ordered) stream."""
        window = self.window
        assert isinstance(window, OrderedWindow)
        return window


def retire(retired: tuple[int, ...], session: int) -> tuple[int, ...]:
    return (*retired, session)[-RETIRED_SESSIONS:]


#: While the kernel drops datagrams, a gap with this many messages waiting
#: behind it (or as many as fill their queue) is given up at once: a stream
#: that fast is part of the flood, while a slower one (another peer's, with a
#: message or two reordered) keeps its reorder tolerance.
FLOOD_GAP = 4


class Reception:
    """The receive side of every peer of one endpoint."""

    def __init__(
        self,
        config: Config,
        budget: Budget,
        delivery: Delivery,
        arm: Callable[[Peer], None],
        *,
        reliable: bool,
    ) -> None:
        self._config = config
        self._budget = budget
        self._delivery = delivery
        #: Called when a peer's timers may have moved earlier.
        self._arm = arm
        self._reliable = reliable
        self._max_message = config.max_message_size
        #: The subscription: topics (UTF-8) to deliver; None delivers every topic.
        self.topics: frozenset[bytes] | None = None
        #: Messages released by a window, on their way to the delivery queues.
        self._out: list[Message] = []

    # -- streams ---------------------------------------------------------------------

    def stream(
        self,
        peer: Peer,
        group: bool,
        session: int,
        first: int,
        now: float,
    ) -> Stream:
        """The stream a frame belongs to, started at ``first`` if new (the
        engine decided a unicast session may start: PeerTable.restarted)."""
        config = self._config
        window_class = OrderedWindow if config.ordered else UnorderedWindow
        if group:
            stream = peer.groups.get(session)
            if stream is None:
                if len(peer.groups) >= MAX_GROUP_STREAMS:
                    oldest = min(peer.groups.values(), key=lambda s: s.last_activity)
                    self.end_stream(peer, oldest, stale=False)
                    del peer.groups[oldest.session]
                window = window_class(first, config.reorder_window)
                stream = peer.groups[session] = Stream(session, window, now)
            return stream
        stream = peer.unicast
        if stream is None or stream.session != session:
            if stream is not None:  # a client's peer restarted (the engine checked)
                self.end_stream(peer, stream, stale=True)
                peer.retired = retire(peer.retired, stream.session)
                peer.counters.session_changes += 1
            window = window_class(first, config.reorder_window)
            stream = peer.unicast = Stream(session, window, now)
            if self._reliable:
                stream.acks = Acknowledger()
        return stream

    def fresh(self, stream: Stream, frame: Frame) -> bool:
        """Whether ``frame`` of ``stream``'s session was never received: a
        reliable one beyond every packet received, another not a duplicate
        and not late."""
        if stream.acks is not None:
            return stream.acks.is_newest(frame.packet)
        return stream.window.classify(frame.sequence) == NEW

    def end_stream(self, peer: Peer, stream: Stream, *, stale: bool) -> None:
        """Settle a stream: whole messages waiting for a gap are delivered, partial
        ones counted (stale for a restart, else expired)."""
        window = stream.window
        if isinstance(window, OrderedWindow) and window.pending:
            self._charge(peer, -window.pending_cost)
            window.flush(self._out, peer.counters)
            self._deliver(peer)
        for sequence in list(stream.partials):
            held = len(stream.partials[sequence].chunks)
            self._drop_partial(peer, stream, sequence, expired=None)
            if stale:
                peer.counters.datagrams_stale_session += held
            else:
                peer.counters.datagrams_reassembly_expired += held

    # -- unreliable streams ---------------------------------------------------------

    def in_order(self, peer: Peer, frame: Frame, now: float) -> bool:
        """The commonest case without the general path's calls (``message``):
        the next whole message (or bundle) of a known unicast session, with
        nothing waiting. False: not that case, take the general path."""
        stream = peer.unicast
        if (
            stream is None
            or stream.session != frame.session
            or stream.acks is not None
            or frame.fragment_count != 1
            or frame.group
            or self.topics is not None
        ):
            return False
        ordered = stream.window
        limit = self._max_message
        parts = frame.parts
        sequence = frame.sequence
        if (
            type(ordered) is not OrderedWindow
            or sequence != ordered.base
            or ordered.pending
            or frame.message_length > limit
            or (parts and max(map(len, parts)) > limit)
        ):
            return False
        stream.last_activity = now
        topic = frame.topic
        text = topic.decode() if topic else ""
        if not parts:
            message = Message(bytes(frame.payload), peer.address, sequence, text, peer, 1)
            self._delivery.put(peer, message)
            ordered.step()
            return True
        put = self._delivery.put
        sequence = frame.sequence
        for index, part in enumerate(parts):
            number = (sequence + index) & 0xFFFFFFFF
            put(peer, Message(bytes(part), peer.address, number, text, peer, 1))
        ordered.step(len(parts))
        return True

    def reliable_in_order(self, peer: Peer, frame: Frame, now: float) -> bool:
        """``in_order`` for a reliable stream: the next whole message (or
        bundle) of its session, with nothing waiting, no catching up to do, and
        room for all of it in the window and the budget (as ``reliable_data``
        would take it). False: not that case, take the general path."""
        stream = peer.unicast
        if (
            stream is None
            or stream.session != frame.session
            or stream.acks is None
            or self.topics is not None
        ):
            return False
        window = stream.window
        sequence = frame.sequence
        config = self._config
        payloads = frame.parts or (frame.payload,)
        if (
            type(window) is not OrderedWindow
            or sequence != window.base
            or window.pending
            or sequence_difference(frame.oldest, sequence) > 0
            or peer.queued + len(payloads) > config.reorder_window
        ):
            return False
        total, buffered = self._budget.total, peer.buffered
        for payload in payloads:
            # Admitted each in turn, as each one taken is charged before the
            # next is looked at.
            cost = message_cost(len(payload))
            if len(payload) > config.max_message_size or not self._fits_next(total, buffered, cost):
                return False
            total += cost
            buffered += cost
        stream.last_activity = now
        topic = frame.topic
        text = topic.decode() if topic else ""
        put = self._delivery.put
        address = peer.address
        for payload in payloads:
            put(peer, Message(bytes(payload), address, sequence, text, peer, 1))
            sequence = (sequence + 1) & 0xFFFFFFFF
        window.step(len(payloads))
        return True

    def message(
        self,
        peer: Peer,
        stream: Stream,
        sequence: int,
        payload: memoryview,
        topic: bytes,
        fragment: Frame | None,
        now: float,
    ) -> None:
        """One message of an unreliable stream, or with ``fragment`` (a frame
        whose fragment_count is above 1), one fragment of it."""
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
        length = len(payload) if fragment is None else fragment.message_length
        if length > self._config.max_message_size:
            counters.datagrams_over_limit += 1
            if fragment is None:
                # Known to be dropped: the messages after it need not wait for it.
                self._accept(peer, stream, sequence, None, now)
            return
        if fragment is None:
            text = topic.decode() if topic else ""
            message: Message | None = Message(bytes(payload), peer.address, sequence, text, peer, 1)
        else:
            message = self._add_fragment(peer, stream, fragment, now, reliable=False) or None
            if message is None:
                return
        self._accept(peer, stream, sequence, message, now)

    # -- reliable streams -----------------------------------------------------------

    def reliable_data(self, peer: Peer, stream: Stream, frame: Frame, now: float) -> bool:
        """A RELIABLE data frame: True if all it carries was taken (delivered,
        stored, or a copy of something taken before), so it is acknowledged;
        False if any of it was refused for want of room (counted)."""
        window = stream.ordered()
        if sequence_difference(frame.oldest, window.base) > 0:
            self.catch_up(peer, stream, frame.oldest)
        topic = frame.topic
        if not frame.parts:
            fragment = frame if frame.fragment_count > 1 else None
            return self._reliable_message(
                peer, stream, frame.sequence, frame.payload, topic, fragment, now
            )
        taken = True
        sequence = frame.sequence
        for part in frame.parts:
            taken = self._reliable_message(peer, stream, sequence, part, topic, None, now) and taken
            sequence = (sequence + 1) & 0xFFFFFFFF
        return taken

    def _reliable_message(
        self,
        peer: Peer,
        stream: Stream,
        sequence: int,
        payload: memoryview,
        topic: bytes,
        fragment: Frame | None,
        now: float,
    ) -> bool:
        counters = peer.counters
        window = stream.ordered()
        if window.classify(sequence) != NEW:
            # Nothing before the window's base is ever given up in reliable mode,
            # so a message behind it was delivered: acknowledge the copy again.
            counters.datagrams_duplicate += 1
            return True
        config = self._config
        length = len(payload) if fragment is None else fragment.message_length
        if (
            sequence_difference(sequence, window.base) >= config.reorder_window - peer.queued
            or length > config.max_message_size
        ):
            counters.datagrams_over_limit += 1
            return False
        topics = self.topics
        message: Message | None = None
        if topics is not None and topic not in topics:
            counters.datagrams_filtered += 1
        elif fragment is None:
            cost = message_cost(length) if sequence == window.base else waiting_cost(length)
            if not self._admits(peer, cost, next_message=sequence == window.base):
                counters.datagrams_over_limit += 1
                return False
            text = topic.decode() if topic else ""
            message = Message(bytes(payload), peer.address, sequence, text, peer, 1)
        else:
            assembled = self._add_fragment(peer, stream, fragment, now, reliable=True)
            if assembled is False:
                return False
            if assembled is None:
                return True
            message = assembled
        self._accept(peer, stream, sequence, message, now)
        return True

    def _admits(self, peer: Peer, cost: int, *, next_message: bool) -> bool:
        """Whether a reliable stream has room for ``cost`` more bytes. Data after
        the next message leaves room for one largest message, in its peer's
        budget and in the total, so the next message always gets in once the
        application reads (the module's notes). The next message itself needs
        only to fit, or to come to a peer (an endpoint) holding nothing, as a
        message of max_message_size costs a little more than its payload."""
        budget = self._budget
        if next_message:
            return self._fits_next(budget.total, peer.buffered, cost)
        return budget.fits(peer, cost + budget.headroom)

    def _fits_next(self, total: int, buffered: int, cost: int) -> bool:
        """Whether the next message of ``cost`` gets in (``_admits``), with
        ``total`` and ``buffered`` held by the endpoint and its peer."""
        budget = self._budget
        return (total + cost <= budget.total_limit or not total) and (
            buffered + cost <= budget.peer_limit or not buffered
        )

    def catch_up(self, peer: Peer, stream: Stream, oldest: int) -> None:
        """The sender's oldest unacknowledged message is past this stream's base:
        a receiver before us (this endpoint before it restarted or forgot the
        peer) acknowledged the ones between, and they will never come again."""
        window = stream.ordered()
        before = window.pending_cost
        window.catch_up(oldest, self._out)
        self._charge(peer, window.pending_cost - before)
        self._deliver(peer)

    # -- shared by both -------------------------------------------------------------

    def _accept(
        self, peer: Peer, stream: Stream, sequence: int, message: Message | None, now: float
    ) -> None:
        """Hand a new message (None: one filtered out) to its stream's window."""
        window = stream.window
        out = self._out
        if isinstance(window, UnorderedWindow):
            window.accept(sequence, message, now, out, peer.counters)
            self._deliver(peer)
            return
        before = window.pending_cost
        window.accept(sequence, message, now, out, peer.counters)
        self._charge(peer, window.pending_cost - before)
        self._deliver(peer)
        if window.pending and stream.acks is None:
            delivery = self._delivery
            if delivery.kernel_dropping and len(window.pending) >= min(
                FLOOD_GAP, delivery.room(peer)
            ):
                # The kernel is dropping datagrams (a flood), and messages pile
                # up behind this gap: it is almost surely one of the kernel's
                # drops, and waiting for it would only hold them up and then
                # release them together, more than their queue can take.
                self.skip_gap(peer, window, every=True)
                return
            self._arm(peer)
            if not self._budget.fits(peer, 0):
                self._relieve(peer, 0, keep=None)

    def _deliver(self, peer: Peer) -> None:
        out = self._out
        if out:
            put = self._delivery.put
            for message in out:
                put(peer, message)
            out.clear()

    def _charge(self, peer: Peer, cost: int) -> None:
        peer.buffered += cost
        self._budget.total += cost

    def _add_fragment(
        self, peer: Peer, stream: Stream, frame: Frame, now: float, *, reliable: bool
    ) -> Message | Literal[False] | None:
        """Store a fragment: the whole message once it completes, None while it
        does not (or for a copy of a fragment held already), False if the
        fragment was dropped or refused (counted)."""
        counters = peer.counters
        partials = stream.partials
        sequence, length, count = frame.sequence, frame.message_length, frame.fragment_count
        partial = partials.get(sequence)
        if partial is None:
            next_message = reliable and sequence == stream.ordered().base
            if len(partials) >= self._config.max_partial_messages:
                if reliable and not next_message:
                    counters.datagrams_over_limit += 1
                    return False
                if not reliable:
                    self._drop_partial(peer, stream, next(iter(partials)), expired=False)
            partial = Partial(length, count, frame.topic, now)
            if reliable:
                # The whole message's room, reserved now (see the module's notes).
                reserve = partial_cost(count, length)
                if not self._admits(peer, reserve, next_message=next_message):
                    counters.datagrams_over_limit += 1
                    return False
            else:
                reserve = PARTIAL_COST
                if not self._budget.fits(peer, reserve):
                    self._relieve(peer, reserve, keep=None)
                    if not self._budget.fits(peer, reserve):
                        counters.datagrams_over_limit += 1
                        return False
            partial.charged = reserve
            self._charge(peer, reserve)
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
        if not reliable:
            cost = len(payload) + FRAGMENT_COST
            budget = self._budget
            if (  # budget.fits(peer, cost), on the path of every fragment
                budget.total + cost > budget.total_limit or peer.buffered + cost > budget.peer_limit
            ):
                self._relieve(peer, cost, keep=partial)
                if not budget.fits(peer, cost):
                    counters.datagrams_over_limit += 1
                    if not partial.chunks:
                        self._drop_partial(peer, stream, sequence, expired=None)
                    return False
            partial.charged += cost
            peer.buffered += cost
            budget.total += cost
        partial.chunks[index] = bytes(payload)
        partial.received += len(payload)
        partial.last_seen = now
        stream.partial_datagrams += 1
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
        self, peer: Peer, stream: Stream, sequence: int, *, expired: bool | None
    ) -> None:
        """Forget a partial message; its fragments count as expired (True), over a
        limit (False) or, when it just completed, nothing yet (None)."""
        partial = stream.partials.pop(sequence)
        held = len(partial.chunks)
        stream.partial_datagrams -= held
        self._charge(peer, -partial.charged)
        if expired:
            peer.counters.datagrams_reassembly_expired += held
        elif expired is False:
            peer.counters.datagrams_over_limit += held

    def _relieve(self, peer: Peer, extra: int, *, keep: Partial | None) -> None:
        """Make room in ``peer``'s own buffers: deliver past reorder gaps first
        (no data is lost by that), then drop its least recently active partial
        messages other than ``keep``. Other peers' buffers are never touched."""
        budget = self._budget
        streams = [stream for stream in peer.streams() if stream.acks is None]
        for stream in streams:
            window = stream.window
            if isinstance(window, OrderedWindow):
                while window.pending and not budget.fits(peer, extra):
                    self.skip_gap(peer, window)
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
            if budget.fits(peer, extra):
                return
            self._drop_partial(peer, stream, sequence, expired=False)

    def skip_gap(self, peer: Peer, window: OrderedWindow, *, every: bool = False) -> None:
        """Give up the first gap (``every``: all of them) and deliver onwards."""
        before = window.pending_cost
        if every:
            window.flush(self._out, peer.counters)
        else:
            window.skip_gap(self._out, peer.counters)
        self._charge(peer, window.pending_cost - before)
        self._deliver(peer)

    # -- timers ---------------------------------------------------------------------

    def reorder_deadline(self, stream: Stream) -> float | None:
        """When an unreliable stream gives its first gap up (None: no gap waits)."""
        window = stream.window
        if stream.acks is not None or not isinstance(window, OrderedWindow):
            return None
        arrival = window.oldest_arrival()
        return None if arrival is None else arrival + self._config.reorder_timeout

    def reassembly_deadline(self, stream: Stream) -> float | None:
        """When an unreliable stream drops its least recently active partial message."""
        if stream.acks is not None:
            return None
        for partial in stream.partials.values():
            return partial.last_seen + self._config.reassembly_timeout
        return None

    def give_up_gaps(self, peer: Peer, stream: Stream, now: float) -> None:
        """Give up every gap that has waited ``reorder_timeout`` by ``now``."""
        window = stream.window
        assert isinstance(window, OrderedWindow)
        timeout = self._config.reorder_timeout
        while True:
            arrival = window.oldest_arrival()
            if arrival is None or arrival + timeout > now:
                return
            self.skip_gap(peer, window)

    def expire_partials(self, peer: Peer, stream: Stream, now: float) -> None:
        """Drop every partial message without a new fragment for ``reassembly_timeout``."""
        timeout = self._config.reassembly_timeout
        for sequence, partial in list(stream.partials.items()):
            if partial.last_seen + timeout > now:
                return
            self._drop_partial(peer, stream, sequence, expired=True)
