"""Loss-recovery building blocks for reliable delivery (sans-IO, time passed in).

RttEstimator follows RFC 9002 §5 (itself RFC 6298's): the first sample sets
the smoothed RTT and half of it as the variation; later samples move them by
1/8 and 1/4, after taking off the peer's reported acknowledgement delay when
that does not push the sample below the minimum seen. The probe timeout is
smoothed + max(4 x variation, granularity) + max_ack_delay, doubled for each
consecutive timeout (exponential backoff), capped. Karn's rule is the
caller's: take samples only from messages sent once.

AckRanges keeps which sequence numbers arrived as a short list of disjoint,
inclusive ranges (what a selective acknowledgement carries), merging
neighbours and dropping the oldest ranges beyond a bound, so a lossy peer
cannot make it grow without limit.

The receiver of a reliable stream (``Acknowledger``, one per stream) records
packet numbers of datagrams it has accepted (stored or already delivered;
never one it had to refuse), and acknowledges after every second one, at once
when one arrives out of order, and otherwise within ``MAX_ACK_DELAY`` (RFC
9000 §13.2). It keeps ACK_RANGES ranges and sends the newest few plus those
of every packet that came since the previous ACK (a late packet may fill a
hole far back).
"""

from __future__ import annotations

import bisect
from math import inf

from ._frame import encode_ack_body

#: RFC 9002 §6.2.2: the initial RTT before any sample.
INITIAL_RTT = 0.333
#: RFC 9002 §6.1.2: the timer granularity.
GRANULARITY = 0.001
#: RFC 9000 §18.2: the default largest delay a peer adds before acknowledging.
MAX_ACK_DELAY = 0.025
#: Cap on the probe timeout, however many times it has backed off.
MAX_PTO = 60.0
#: Ranges an Acknowledger keeps (and an ACK frame carries at most).
ACK_RANGES = 32
#: Acknowledge after this many accepted datagrams without waiting (RFC 9000 §13.2.2).
ACK_EVERY = 2

_PACKET_SPACE = 1 << 32


def expand_packet(truncated: int, largest: int) -> int:
    """The full packet number whose low 32 bits are ``truncated`` that lies
    closest to ``largest + 1`` (RFC 9000 Appendix A.3)."""
    expected = largest + 1
    half = _PACKET_SPACE // 2
    candidate = (expected & ~(_PACKET_SPACE - 1)) | truncated
    if candidate <= expected - half:
        return candidate + _PACKET_SPACE
    if candidate > expected + half and candidate >= _PACKET_SPACE:
        return candidate - _PACKET_SPACE
    return candidate


class RttEstimator:
    __slots__ = (
        "_first",
        "_probe",
        "latest",
        "max_ack_delay",
        "minimum",
        "smoothed",
        "variation",
    )

    def __init__(
        self, *, initial: float = INITIAL_RTT, max_ack_delay: float = MAX_ACK_DELAY
    ) -> None:
        self.max_ack_delay: float = max_ack_delay
        self.latest: float = 0.0
        self.minimum: float = 0.0
        self.smoothed: float = initial
        self.variation: float = initial / 2
        self._first = True
        #: The last ``probe_timeout``: (backoff, floor, timeout).
        self._probe: tuple[int, float, float] | None = None

    def update(self, sample: float, ack_delay: float = 0.0) -> None:
        """Take an RTT sample (seconds from sending a message to the
        acknowledgement of it) and the delay the peer reports it added."""
        if sample <= 0:
            return
        self._probe = None
        self.latest = sample
        if self._first:
            self._first = False
            self.minimum = sample
            self.smoothed = sample
            self.variation = sample / 2
            return
        self.minimum = min(self.minimum, sample)
        adjusted = sample
        delay = min(ack_delay, self.max_ack_delay)
        if sample >= self.minimum + delay:
            adjusted = sample - delay
        self.variation = 0.75 * self.variation + 0.25 * abs(self.smoothed - adjusted)
        self.smoothed = 0.875 * self.smoothed + 0.125 * adjusted

    def pto(self, backoff: int = 0) -> float:
        """The probe timeout after ``backoff`` consecutive timeouts."""
        base = self.smoothed + max(4 * self.variation, GRANULARITY) + self.max_ack_delay
        return min(base * (1 << min(max(backoff, 0), 32)), MAX_PTO)

    def probe_timeout(self, backoff: int, floor: float) -> float:
        """``pto(backoff)``, capped at the larger of ``floor`` and ``pto()``; worked
        out again only after a new sample or for another backoff or floor (a
        reliable sender reads it whenever its timers are looked at)."""
        probe = self._probe
        if probe is not None and probe[0] == backoff and probe[1] == floor:
            return probe[2]
        timeout = min(self.pto(backoff), max(floor, self.pto()))
        self._probe = (backoff, floor, timeout)
        return timeout

    def loss_delay(self) -> float:
        """RFC 9002 §6.1.2: a message is lost once one sent after it was
        acknowledged this long ago (9/8 of the larger of the smoothed and the
        latest RTT, at least the granularity)."""
        return max(9 / 8 * max(self.smoothed, self.latest), GRANULARITY)


class AckRanges:
    """Disjoint inclusive ranges of received sequence numbers, at most
    ``limit`` of them (the oldest go first)."""

    __slots__ = ("_ends", "_starts", "limit")

    def __init__(self, limit: int = 64) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, number: int) -> bool:
        """Record ``number``; False if it was already there."""
        starts, ends = self._starts, self._ends
        position = bisect.bisect_right(starts, number)
        if position and ends[position - 1] >= number:
            return False
        joins_left = position > 0 and ends[position - 1] == number - 1
        joins_right = position < len(starts) and starts[position] == number + 1
        if joins_left and joins_right:
            ends[position - 1] = ends[position]
            del starts[position], ends[position]
        elif joins_left:
            ends[position - 1] = number
        elif joins_right:
            starts[position] = number
        else:
            starts.insert(position, number)
            ends.insert(position, number)
            if len(starts) > self.limit:
                del starts[0], ends[0]
        return True

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int):
            return False
        position = bisect.bisect_right(self._starts, number)
        return position > 0 and self._ends[position - 1] >= number

    def ranges(self) -> list[tuple[int, int]]:
        """The ranges, newest (highest) first, as an acknowledgement lists them."""
        return list(zip(reversed(self._starts), reversed(self._ends), strict=True))

    def largest(self) -> int | None:
        return self._ends[-1] if self._ends else None


class Acknowledger:
    """The receive side of one reliable stream: which packets to acknowledge, and when."""

    __slots__ = ("_largest", "_largest_at", "_packets", "_recent", "_unacked", "due", "limit_sent")

    def __init__(self) -> None:
        self._packets = AckRanges(ACK_RANGES)
        self._largest = -1
        self._largest_at = 0.0
        self._unacked = 0
        #: Packets received since the last ACK: each one's range goes in the next.
        self._recent: list[int] = []
        #: When an ACK must go (inf: none owed).
        self.due: float = inf
        #: The window limit the last ACK carried (-1: none sent yet).
        self.limit_sent: int = -1

    def is_newest(self, truncated: int) -> bool:
        """Whether this packet number is beyond every one received."""
        return expand_packet(truncated, self._largest) > self._largest

    def record(self, truncated: int, now: float) -> None:
        """A datagram with this packet number was accepted."""
        packet = expand_packet(truncated, self._largest)
        in_order = packet == self._largest + 1 or self._largest < 0
        if self._packets.add(packet) and len(self._recent) < ACK_RANGES:
            self._recent.append(packet)
        if packet > self._largest:
            self._largest = packet
            self._largest_at = now
        self._unacked += 1
        if not in_order or self._unacked >= ACK_EVERY:
            self.due = now
        else:
            self.due = min(self.due, now + MAX_ACK_DELAY)

    def body(
        self,
        now: float,
        limit: int,
        receiver: int,
        delivered: int,
        newest: int = ACK_RANGES,
        most: int = ACK_RANGES,
    ) -> bytes:
        """The ACK to send now (it clears what was owed): the ``newest`` ranges
        and those of packets new since the last one, at most ``most`` in all."""
        self._unacked = 0
        self.due = inf
        self.limit_sent = limit
        recent, self._recent = self._recent, []
        if self._largest < 0:
            return encode_ack_body(0.0, receiver, delivered, [])
        # The newest range, those of packets that came since the last ACK (a late
        # packet may fill a hole far back), then the next newest: in that order of
        # need, as many as fit.
        every = self._packets.ranges()
        wanted = [0]
        for packet in recent:
            for index, (low, high) in enumerate(every):
                if low <= packet <= high:
                    wanted.append(index)
                    break
        wanted.extend(range(1, min(newest, len(every))))
        chosen = sorted(list(dict.fromkeys(wanted))[: max(most, 0)])
        spans = [(every[i][1], every[i][0]) for i in chosen[:ACK_RANGES]]
        return encode_ack_body(now - self._largest_at, receiver, delivered, spans)
