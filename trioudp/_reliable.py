"""Reliable delivery, sans-IO: the sender's loss recovery and the receiver's
acknowledgements (time passed in, nothing read from a clock).

Packets and messages. A reliable sender gives every datagram it transmits a
packet number of its own, never reused in the session (RFC 9000 §12.3), so an
acknowledgement names exactly one transmission: RTT samples are never
ambiguous (Karn's rule holds by construction) and a lost datagram is sent again
under a new number. Each datagram carries one whole message or one fragment of
one, so fragments of a large message are acknowledged and resent one by one.
Every datagram also carries the sender's oldest unacknowledged message number:
a receiver that does not know the session (it restarted, or forgot the peer
while it was quiet) starts there, since everything before it was acknowledged.

Loss recovery follows RFC 9002: a datagram is lost once one sent three packets
later is acknowledged (packet threshold) or one sent after it was acknowledged
9/8 RTT ago (time threshold); lost fragments are queued to go again first. A
datagram taken for lost and acknowledged later was only reordered: it is not
sent again, and both thresholds grow with the reordering seen (§6.1.1). When
nothing is acknowledged for a probe timeout (PTO: smoothed RTT + 4 x
variation + max ack delay, 1 s before any sample, doubled for each
consecutive one but capped so that GIVE_UP_PROBES rounds fit in the give-up
time), up to two fragments in flight of the oldest messages are sent again as probes,
or a PING when there is none. Congestion control is
NewReno (RFC 9002 §7): a window of bytes in flight that starts at ten
datagrams, doubles per RTT in slow start, halves once per loss episode, never
below two; retransmissions count against it like any traffic (RFC 8085
§3.1), so a lossy path is not flooded. A peer that acknowledges nothing for
``give_up_timeout`` while something waits for it is lost: everything still
unacknowledged is counted as failed and the sender stops.

Delivery is confirmed cumulatively: every ACK names the next message the
receiver will deliver, and only that retires messages (a selective ACK just
stops retransmission). ACKs also carry the receiver's id; a new one means the
receiver restarted and lost what it held out of order, so everything not
confirmed goes again, in order.

Flow control. Every ACK carries the highest message number the receiver takes
now (it holds at most ``reorder_window`` messages between the first one not
yet delivered and the last one the application has not yet received); the
sender sends nothing beyond it. If that closes the window while nothing is in
flight, PTO sends PINGs, whose ACKs carry the window again, so a lost window
update cannot deadlock and a live but slow receiver is never given up on.

The receiver's side of it, ``Acknowledger``, is in _recovery.py.
"""

from __future__ import annotations

from collections import deque
from math import inf
from typing import TYPE_CHECKING

from ._budget import send_cost
from ._frame import (
    KIND_PING,
    PART_OVERHEAD,
    Ack,
    bundle_body,
    byte_view,
    encode_control,
    encode_probe,
    encode_reliable,
    fragment_size,
    frame_overhead,
    sealer,
    sequence_difference,
)
from ._pmtu import PROBE_SIZES_IPV4, PROBE_SIZES_IPV6, PathMtu, will_probe
from ._reasons import LostReason
from ._recovery import MAX_ACK_DELAY, RttEstimator, expand_packet

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Buffer

    from ._budget import Budget
    from ._config import Config
    from ._peer import Peer
    from ._statistics import Counters

#: RFC 9002 §6.1.1: a datagram is lost once one sent this many later is acknowledged.
PACKET_THRESHOLD = 3
#: How far the packet threshold may grow when reordering is seen.
MAX_PACKET_THRESHOLD = 256
#: How far the time threshold (9/8 RTT) may be stretched likewise.
MAX_TIME_FACTOR = 4.0
#: Packets taken for lost remembered, to notice an acknowledgement of one.
REMEMBERED_LOSSES = 1024
#: RFC 9002 §7.2: the initial congestion window, in datagrams.
INITIAL_WINDOW = 10
#: RFC 9002 §7.2: the smallest congestion window, in datagrams.
MINIMUM_WINDOW = 2
#: Datagrams sent again as probes when the probe timer fires (RFC 9002 §6.2.4).
PROBES = 2
#: Probe rounds (at least) before a silent peer is given up.
GIVE_UP_PROBES = 8


class _Fragment:
    """One datagram's worth of a message: what goes again if it is lost."""

    __slots__ = (
        "acked",
        "chunk",
        "fragment",
        "latest",
        "priority",
        "sent_as",
        "sequence",
        "topic",
        "went",
    )

    def __init__(
        self,
        sequence: int,
        fragment: tuple[int, int, int] | None,
        topic: bytes,
        chunk: bytes,
        priority: int | None,
    ) -> None:
        self.sequence = sequence
        self.fragment = fragment
        self.topic = topic
        self.chunk = chunk
        self.priority = priority
        self.acked = False
        #: The packet number of its latest transmission (-1: not sent yet), and
        #: of every transmission still in flight.
        self.latest = -1
        self.sent_as: list[int] = []
        #: Whether it was ever sent (a receiver may hold it, even one that
        #: restarted since: its message may no longer be cut again).
        self.went = False


class _Pending:
    """A message not yet confirmed delivered: its fragments, size and charge."""

    __slots__ = ("cost", "fragments", "size")

    def __init__(self, fragments: list[_Fragment], size: int, cost: int) -> None:
        self.fragments = fragments
        self.size = size
        self.cost = cost


class _Sent:
    """One datagram in flight: the fragments it carries (several whole messages
    when bundled, none for a PING)."""

    __slots__ = ("fragments", "size", "time")

    def __init__(self, fragments: tuple[_Fragment, ...], size: int, time: float) -> None:
        self.fragments = fragments
        self.size = size
        self.time = time


#: What the sender hands out: a datagram and the DSCP to mark it with (None: the
#: endpoint's own).
Datagram = tuple[bytes, "int | None"]


class Sender:
    """The send side of one reliable peer session."""

    def __init__(
        self,
        session: int,
        *,
        max_datagram_size: int,
        receive_window: int,
        give_up_timeout: float,
        key: bytes | None,
        counters: Counters,
        budget: Budget,
        probe_sizes: tuple[int, ...] = (),
    ) -> None:
        self.session = session
        #: The endpoint's budget, charged what the queued messages cost.
        self._budget = budget
        #: The search for larger datagrams (_pmtu.py): messages are cut to its
        #: confirmed ``size``, ``max_datagram_size`` until a probe confirms more.
        self.path: PathMtu = PathMtu(max_datagram_size, probe_sizes)
        self._give_up_timeout = give_up_timeout
        self._key = key
        self._seal: Callable[[bytes], bytes] = sealer(key)
        self._counters = counters
        self.next_sequence: int = 0
        self._next_packet = 0
        self._unsent: deque[_Fragment] = deque()
        self._retransmit: deque[_Fragment] = deque()
        self._in_flight: dict[int, _Sent] = {}
        self.bytes_in_flight: int = 0
        #: Messages the receiver has not yet confirmed delivering, by sequence.
        self._messages: dict[int, _Pending] = {}
        #: The receiver's id (from its ACKs), and ids it had before restarting.
        self._receiver: int | None = None
        self._old_receivers: deque[int] = deque(maxlen=4)
        self.queued_bytes: int = 0
        self.rtt: RttEstimator = RttEstimator(max_ack_delay=MAX_ACK_DELAY)
        self._pto_count = 0
        self.window: int = INITIAL_WINDOW * max_datagram_size
        self._threshold = inf
        self._recovery_start = -inf
        #: The highest message number the receiver takes (its window, from ACKs;
        #: our own window size until the first ACK tells).
        self.limit: int = receive_window - 1
        self._limit_known = False
        self._largest_acked = -1
        self._loss_time = inf
        self._packet_threshold = PACKET_THRESHOLD
        self._time_factor = 1.0
        #: Packets recently taken for lost: their fragment, and the largest
        #: acknowledged packet then (to see reordering if they are acknowledged).
        self._lost: dict[int, tuple[tuple[_Fragment, ...], int]] = {}
        self._last_eliciting = -inf
        #: Since when we wait for the peer to answer (None: nothing outstanding).
        self._waiting_since: float | None = None
        self._probes = 0
        self._ping_due = False
        #: Why the sender stopped, once it has.
        self.failure: LostReason | None = None

    @classmethod
    def for_peer(cls, peer: Peer, config: Config, key: bytes | None, budget: Budget) -> Sender:
        """The sender of ``peer``'s reliable messages, on its send session."""
        host = peer.address[0]
        ipv6 = ":" in host and not host.startswith("::ffff:")  # else over IPv4
        sizes = PROBE_SIZES_IPV6 if ipv6 else PROBE_SIZES_IPV4
        return cls(
            peer.send_session,
            max_datagram_size=config.max_datagram_size,
            receive_window=config.reorder_window,
            give_up_timeout=config.give_up_timeout,
            key=key,
            counters=peer.counters,
            budget=budget,
            probe_sizes=sizes if will_probe(config) else (),
        )

    # -- the application's side ---------------------------------------------------

    def queue(self, payload: Buffer, topic: bytes, priority: int | None) -> None:
        """Take one message to send (split into fragments now, sent by ``transmit``)."""
        view = byte_view(payload)
        length = view.nbytes
        sequence = self.next_sequence
        self.next_sequence = (sequence + 1) & 0xFFFFFFFF
        pieces = self._cut(sequence, view, topic, priority)
        self._unsent.extend(pieces)
        cost = send_cost(length, len(pieces))
        self._messages[sequence] = _Pending(pieces, length, cost)
        self.queued_bytes += length
        self._budget.total += cost

    def _cut(
        self, sequence: int, view: memoryview, topic: bytes, priority: int | None
    ) -> list[_Fragment]:
        """A message's fragments, each within the path's confirmed size."""
        length = view.nbytes
        chunk = fragment_size(length, self.path.size, topic=topic, key=self._key, reliable=True)
        if chunk == length:
            return [_Fragment(sequence, None, topic, bytes(view), priority)]
        self.path.wanted = True  # larger datagrams would help
        count = -(-length // chunk)
        return [
            _Fragment(
                sequence,
                (length, index, count),
                topic,
                bytes(view[index * chunk : (index + 1) * chunk]),
                priority,
            )
            for index in range(count)
        ]

    def _recut(self) -> None:
        """The path takes larger datagrams now: a message none of whose fragments
        went yet (the receiver has seen none of them) is cut again to the new
        size. One partly sent stays as it was cut."""
        unsent: deque[_Fragment] = deque()
        recut: set[int] = set()
        for fragment in self._unsent:
            sequence = fragment.sequence
            if sequence in recut:
                continue  # its new pieces are in already
            pending = self._messages.get(sequence)
            if (
                fragment.fragment is None
                or pending is None
                or any(f.went for f in pending.fragments)
            ):
                unsent.append(fragment)
                continue
            whole = memoryview(b"".join(f.chunk for f in pending.fragments))
            pending.fragments = self._cut(sequence, whole, fragment.topic, fragment.priority)
            cost = send_cost(pending.size, len(pending.fragments))
            self._budget.total += cost - pending.cost
            pending.cost = cost
            unsent.extend(pending.fragments)
            recut.add(sequence)
        self._unsent = unsent

    @property
    def unacknowledged(self) -> int:
        """Messages queued or in flight, not yet acknowledged."""
        return len(self._messages)

    def has_room(self, messages: int, size: int, payload: int) -> bool:
        """Whether another message of ``payload`` bytes may be queued: fewer
        than ``messages`` wait, their bytes are under ``size``, and the
        endpoint's budget has room for it and still for one largest message
        arriving (see _budget.py: were the budget full of messages to send, no
        acknowledgement could free it, as the peer's could not get in). One
        message always fits, so that a reply never waits on input the
        application has not read yet."""
        if not self._messages:
            return True
        budget = self._budget
        cost = send_cost(payload, payload // self.path.size + 1)
        return (
            len(self._messages) < messages
            and self.queued_bytes < size
            and budget.total + cost + budget.headroom <= budget.total_limit
        )

    def oldest(self) -> int:
        """The oldest unacknowledged message number (the next one if none is)."""
        for sequence in self._messages:
            return sequence
        return self.next_sequence

    # -- output -------------------------------------------------------------------

    def transmit(self, now: float, out: list[Datagram], room: float = inf) -> int:
        """Append what may be sent now: probes, lost fragments, then new ones,
        while the congestion window and the receiver's window allow. What it
        sends again or by itself (a lost fragment, a probe) must fit in
        ``room`` bytes with what it sent before it (the amplification limit
        towards an address not validated yet); what does not waits, counted
        as ``control_suppressed``, and a probe round that cannot send a fragment
        sends a PING instead (its answer validates the address). Gives the bytes
        sent again or by itself (first transmissions are the application's)."""
        if self.failure is not None:
            return 0
        spent = 0
        retransmit, unsent = self._retransmit, self._unsent
        while True:
            if retransmit:
                fragment = retransmit[0]
                if fragment.acked:
                    retransmit.popleft()
                    continue
                again = True
            elif unsent:
                fragment = unsent[0]
                if sequence_difference(fragment.sequence, self.limit) > 0:
                    break
                again = False
            else:
                break
            if self._probes <= 0 and self.bytes_in_flight >= self.window:
                break
            queue = retransmit if again else unsent
            queue.popleft()
            if queue and fragment.fragment is None:
                fragments = self._bundle(fragment, queue, again)
            else:
                fragments = (fragment,)
            size = self._send(fragments, now, out, room - spent if again else inf)
            if size is None:
                queue.extendleft(reversed(fragments))  # waits for room
                self._counters.control_suppressed += 1
                if self._probes > 0:
                    self._ping_due = True  # small, and its answer validates
                break
            if again:
                spent += size
            self._probes -= 1
            if again:
                self._counters.datagrams_retransmitted += 1
        if self._ping_due:
            self._ping_due = False
            self._probes = 0
            size = self._send((), now, out, room - spent)
            if size is None:
                self._counters.control_suppressed += 1
            else:
                spent += size
        self._probes = 0
        if room == inf and (probe := self.path.probe_due()) is not None:
            self._probe(probe, now, out)  # only to a validated address
        return spent

    def _probe(self, size: int, now: float, out: list[Datagram]) -> None:
        """Send a path MTU probe of ``size`` bytes (_pmtu.py) under the next
        packet number: not data, so not in flight, and not waited on."""
        packet = self._next_packet
        self._next_packet += 1
        probe = encode_probe(
            self.session,
            self.oldest(),
            packet,
            size,
            self._seal,
            authenticated=self._key is not None,
        )
        out.append((probe, None))
        self.path.sent(packet, now + self._pto())
        self._counters.pings_sent += 1

    def _bundle(
        self, first: _Fragment, queue: deque[_Fragment], again: bool
    ) -> tuple[_Fragment, ...]:
        """``first`` and the whole messages after it in ``queue`` that can share
        its datagram: consecutive numbers, one topic and priority, within the
        receiver's window, together within max_datagram_size."""
        room = self._bundle_room(first.topic) - PART_OVERHEAD - len(first.chunk)
        taken = [first]
        following = (first.sequence + 1) & 0xFFFFFFFF
        while queue:
            candidate = queue[0]
            size = PART_OVERHEAD + len(candidate.chunk)
            if (
                candidate.fragment is not None
                or candidate.sequence != following
                or candidate.topic != first.topic
                or candidate.priority != first.priority
                or size > room
                or (not again and sequence_difference(candidate.sequence, self.limit) > 0)
            ):
                break
            if again and candidate.acked:
                queue.popleft()
                continue
            queue.popleft()
            taken.append(candidate)
            room -= size
            following = (following + 1) & 0xFFFFFFFF
        return tuple(taken)

    def _bundle_room(self, topic: bytes) -> int:
        # Within the base size even once the path takes more: bundles are for
        # small messages, and a receiver takes a bundle whole or not at all.
        return self.path.base - frame_overhead(topic=topic, key=self._key, reliable=True)

    def _send(
        self, fragments: tuple[_Fragment, ...], now: float, out: list[Datagram], room: float
    ) -> int | None:
        """Send ``fragments`` in one datagram (none: a PING), if it fits in
        ``room`` bytes; its size, or None (nothing changed) if it does not."""
        packet = self._next_packet
        if fragments:
            first = fragments[0]
            bundled = len(fragments) > 1
            datagram = encode_reliable(
                self.session,
                first.sequence,
                packet,
                self.oldest(),
                first.fragment,
                first.topic,
                bundle_body([f.chunk for f in fragments]) if bundled else first.chunk,
                self._seal,
                authenticated=self._key is not None,
                bundled=bundled,
            )
        else:
            datagram = encode_control(
                KIND_PING,
                self.session,
                self.oldest(),
                b"",
                self._seal,
                authenticated=self._key is not None,
            )
        if len(datagram) > room:
            return None
        self._next_packet += 1
        if fragments:
            for fragment in fragments:
                fragment.latest = packet
                fragment.went = True
                fragment.sent_as.append(packet)
            self._in_flight[packet] = _Sent(fragments, len(datagram), now)
            self.bytes_in_flight += len(datagram)
            out.append((datagram, fragments[0].priority))
        else:
            out.append((datagram, None))
            self._counters.pings_sent += 1
        self._last_eliciting = now
        if self._waiting_since is None:
            self._waiting_since = now
        return len(datagram)

    def ping(self) -> None:
        """Send a PING with the next transmission (a keepalive)."""
        if self.failure is None:
            self._ping_due = True

    # -- acknowledgements ---------------------------------------------------------

    def acknowledges_new(self, ack: Ack) -> bool:
        """Whether ``ack`` (for this session, from the current receiver)
        acknowledges a packet beyond every one acknowledged so far."""
        if ack.receiver in self._old_receivers or not ack.ranges:
            return False
        largest_sent = self._next_packet - 1
        top = expand_packet(ack.ranges[0][0], largest_sent)  # newest range first
        return self._largest_acked < top <= largest_sent

    def on_ack(self, ack: Ack, limit: int, now: float) -> None:
        """Take an ACK and the ``limit`` of the receiver's window it carried."""
        if self.failure is not None or ack.receiver in self._old_receivers:
            return
        if self._receiver != ack.receiver:
            if self._receiver is not None:
                self._old_receivers.append(self._receiver)
                self._receiver_restarted()
            self._receiver = ack.receiver
        if ack.ranges:
            self._acknowledge(ack.delay, ack.ranges, now)
        self._delivered(ack.delivered)
        if not self._limit_known:
            # The first word on the receiver's window replaces our guess (its
            # reorder_window may be smaller than ours); after that the window
            # only opens, so an older ACK arriving late changes nothing.
            self._limit_known = True
            self.limit = limit
            self._take_back_refused()
        elif sequence_difference(limit, self.limit) > 0:
            self.limit = limit
        # The peer answers: the give-up clock starts again with the next datagram.
        self._waiting_since = None

    def _delivered(self, delivered: int) -> None:
        """The receiver delivered every message before ``delivered``: those are
        done. (A selective acknowledgement only stops retransmission: what the
        receiver holds out of order dies with it if it restarts.)"""
        messages = self._messages
        for sequence in list(messages):
            if sequence_difference(sequence, delivered) >= 0:
                break
            pending = messages.pop(sequence)
            self.queued_bytes -= pending.size
            self._budget.total -= pending.cost
            self._counters.messages_acked += 1
            for fragment in pending.fragments:
                if not fragment.acked:
                    self._fragment_acked(fragment)

    def _receiver_restarted(self) -> None:
        """ACKs come from a new receiver (the peer restarted, or forgot us): it
        starts at our oldest message and holds none of what the old one held,
        so every message not confirmed delivered goes again, in order."""
        self._counters.receiver_restarts += 1
        self._in_flight.clear()
        self.bytes_in_flight = 0
        self._retransmit.clear()
        self._lost.clear()
        unsent: deque[_Fragment] = deque()
        for pending in self._messages.values():
            for fragment in pending.fragments:
                fragment.acked = False
                fragment.sent_as = []
                fragment.latest = -1
                unsent.append(fragment)
        self._unsent = unsent
        self._limit_known = False

    def _take_back_refused(self) -> None:
        """Fragments in flight beyond the receiver's window were refused there:
        put them back in front of the unsent ones, to go when the window opens."""
        limit = self.limit
        refused: list[_Fragment] = []
        for packet, sent in list(self._in_flight.items()):
            if any(sequence_difference(f.sequence, limit) > 0 for f in sent.fragments):
                self._forget(packet, sent)
                refused.extend(f for f in sent.fragments if not f.acked and f.latest == packet)
        if refused:
            refused.sort(key=lambda f: (sequence_difference(f.sequence, limit), f.fragment))
            self._unsent.extendleft(reversed(refused))

    def _acknowledge(self, delay: float, ranges: list[tuple[int, int]], now: float) -> None:
        largest_sent = self._next_packet - 1
        spans: list[tuple[int, int]] = []
        for high, low in ranges:
            top = expand_packet(high, largest_sent)
            if top > largest_sent:
                return  # acknowledges what was never sent: not from our peer
            spans.append((top - sequence_difference(high, low), top))
        probe = self.path.acknowledged(spans)
        if probe >= 0:
            # An ACK of it acknowledges something new once only (a replay of it
            # must not look new: PeerTable.control_owner).
            self._largest_acked = max(self._largest_acked, probe)
            self._recut()
        largest = spans[0][1]
        in_flight = self._in_flight
        newly: list[tuple[int, _Sent]] = []
        for packet, sent in in_flight.items():
            if packet > largest:
                break
            for low, high in spans:
                if low <= packet <= high:
                    newly.append((packet, sent))
                    break
        if self._lost:
            self._spurious(spans)
        if not newly:
            return
        self._counters.acks_received += 1
        self._pto_count = 0
        if newly[-1][0] == largest:
            self.rtt.update(now - newly[-1][1].time, delay)
        self._largest_acked = max(self._largest_acked, largest)
        # RFC 9002 §7.8: a sender that does not fill its window learns nothing
        # about the path from ACKs, so the window does not grow then.
        limited = self.bytes_in_flight < self.window // 2
        for packet, sent in newly:
            if packet not in in_flight:
                continue  # its fragments were acknowledged in a copy just before
            self._forget(packet, sent)
            fresh = [f for f in sent.fragments if not f.acked]
            if not fresh:
                continue
            for fragment in fresh:
                self._fragment_acked(fragment)
            if sent.time > self._recovery_start and not limited:
                if self.window < self._threshold:
                    self.window += sent.size
                else:
                    self.window += self.path.size * sent.size // self.window
        self._detect_lost(now)

    def _forget(self, packet: int, sent: _Sent) -> None:
        """``packet`` is no longer in flight (acknowledged, lost or refused)."""
        del self._in_flight[packet]
        self.bytes_in_flight -= sent.size
        for fragment in sent.fragments:
            fragment.sent_as.remove(packet)

    def _fragment_acked(self, fragment: _Fragment) -> None:
        fragment.acked = True
        # Other copies of it in flight (probes) need no acknowledgement now,
        # unless they carry other fragments that still do.
        for copy in list(fragment.sent_as):
            other = self._in_flight[copy]
            if all(f.acked for f in other.fragments):
                self._forget(copy, other)

    def _spurious(self, spans: list[tuple[int, int]]) -> None:
        """Packets taken for lost that are acknowledged after all were only
        reordered: their fragments need not go again, and the packet threshold
        grows to the reordering seen (RFC 9002 §6.1.1 allows adapting it)."""
        lost = self._lost
        for low, high in spans:
            for packet in [p for p in lost if low <= p <= high]:
                fragments, largest = lost.pop(packet)
                self._counters.datagrams_spurious += 1
                self._packet_threshold = min(
                    max(self._packet_threshold, largest - packet + 1), MAX_PACKET_THRESHOLD
                )
                self._time_factor = min(self._time_factor * 1.25, MAX_TIME_FACTOR)
                for fragment in fragments:
                    if not fragment.acked:
                        self._fragment_acked(fragment)

    def _detect_lost(self, now: float) -> None:
        delay = self.rtt.loss_delay() * self._time_factor
        self._loss_time = inf
        lost: list[int] = []
        for packet, sent in self._in_flight.items():
            if packet > self._largest_acked:
                break
            # The same sum as the loss time, so that a timer set for it finds it due.
            due = sent.time + delay
            if self._largest_acked - packet >= self._packet_threshold or due <= now:
                lost.append(packet)
            else:
                self._loss_time = min(self._loss_time, due)
        if not lost:
            return
        newest_lost = 0.0
        for packet in lost:
            sent = self._in_flight[packet]
            self._forget(packet, sent)
            newest_lost = max(newest_lost, sent.time)
            self._lost[packet] = (sent.fragments, self._largest_acked)
            if len(self._lost) > REMEMBERED_LOSSES:
                del self._lost[next(iter(self._lost))]
            self._retransmit.extend(
                [f for f in sent.fragments if not f.acked and f.latest == packet]
            )
        if newest_lost > self._recovery_start:
            # One congestion event per round trip (RFC 9002 §7.3.2).
            self._recovery_start = now
            floor = MINIMUM_WINDOW * self.path.size
            self.window = max(self.window // 2, floor)
            self._threshold = float(self.window)

    def _blocked(self) -> bool:
        """Nothing in flight, but new messages wait for the receiver's window."""
        return (
            not self._in_flight
            and bool(self._unsent)
            and sequence_difference(self._unsent[0].sequence, self.limit) > 0
        )

    # -- timers -------------------------------------------------------------------

    def deadline(self) -> float:
        """When ``on_timer`` should run next (inf: not until something changes)."""
        if self.failure is not None:
            return inf
        deadline = min(self._loss_time, self.path.deadline())
        if self._in_flight or self._blocked():
            deadline = min(deadline, self._last_eliciting + self._pto())
        if self._waiting_since is not None:
            deadline = min(deadline, self._waiting_since + self._give_up_timeout)
        return deadline

    def on_timer(self, now: float) -> None:
        if self.failure is not None:
            return
        self.path.on_timer(now)
        waiting = self._waiting_since
        if waiting is not None and now >= waiting + self._give_up_timeout:
            if self._messages or self._in_flight:
                self.fail(LostReason.TIMEOUT)
                return
            self._waiting_since = None  # only a keepalive went unanswered
        if self._loss_time <= now:
            self._detect_lost(now)
            return
        if (self._in_flight or self._blocked()) and now >= self._last_eliciting + self._pto():
            self._pto_count += 1
            self._counters.probe_timeouts += 1
            self._last_eliciting = now  # the probes go now: the next PTO counts from here
            # The oldest messages' unacknowledged fragments, in flight or
            # waiting to go again (behind a full congestion window), not the
            # oldest packets': the receiver delivers in order, and a later
            # message it refused (its window or budget full) waits for them.
            in_flight = [f for sent in self._in_flight.values() for f in sent.fragments]
            unacked = {id(f): f for f in (*in_flight, *self._retransmit) if not f.acked}
            oldest = self.oldest()
            probes = sorted(
                unacked.values(),
                key=lambda f: (sequence_difference(f.sequence, oldest), f.fragment or ()),
            )[:PROBES]
            if probes:
                # They go first, now, wherever they waited.
                chosen = {id(fragment) for fragment in probes}
                rest = [f for f in self._retransmit if id(f) not in chosen]
                self._retransmit = deque(probes + rest)
                self._probes = len(probes)
            else:
                self._ping_due = True

    def _pto(self) -> float:
        """The probe timeout, backed off but capped so that at least
        GIVE_UP_PROBES probe rounds go before the give-up time: a lossy path
        alone does not make a live peer look gone."""
        return self.rtt.probe_timeout(self._pto_count, self._give_up_timeout / GIVE_UP_PROBES)

    def fail(self, reason: LostReason) -> None:
        """Stop: everything unacknowledged is counted failed and dropped."""
        if self.failure is not None:
            return
        self.failure = reason
        self._counters.messages_failed += len(self._messages)
        self._budget.total -= sum(pending.cost for pending in self._messages.values())
        self._messages.clear()
        self._unsent.clear()
        self._retransmit.clear()
        self._in_flight.clear()
        self.queued_bytes = self.bytes_in_flight = 0
        self._waiting_since = None
        self._ping_due = False
