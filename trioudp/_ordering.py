"""Per-session receive windows: duplicate suppression, and (ordered mode) the
reorder buffer.

Both windows work on 32-bit sequence numbers in serial-number arithmetic
(RFC 1982), so a session may run through more than 2**32 messages. A window
starts at the first sequence number it sees: a receiver that joins late (a
restarted server, a peer forgotten for idleness) does not wait for messages it
can never get. Memory is bounded by ``window``: at most that many whole
messages wait in the reorder buffer, and a bitmap of that many bits remembers
what was received for duplicate detection (the anti-replay window of RFC 4303
§3.4.3).

OrderedWindow keeps ``base``, the next sequence number to deliver. A message
at ``base`` is delivered at once, with every buffered one that follows it
without a gap. A message ahead of ``base`` waits in ``pending``; when the
oldest waiting message has waited ``reorder_timeout`` (the engine's timer) or
memory runs short, the gap before the first pending message is given up: the
missing messages are counted lost and delivery goes on. A message so far ahead
that it does not fit in the window moves the window forward at once. Behind
``base``, ``history`` tells a duplicate (it was delivered) from a late message
(its gap was given up).

UnorderedWindow delivers every new message at once and only remembers, for the
``window`` sequence numbers up to the highest seen, which were received.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._budget import WAITING_COST, message_cost
from ._frame import SEQUENCE_MODULUS, sequence_difference

if TYPE_CHECKING:
    from ._message import Message
    from ._statistics import Counters

NEW = 0
DUPLICATE = 1
LATE = 2


def waiting_cost(payload: int) -> int:
    """What a message waiting in a reorder buffer is charged."""
    return message_cost(payload) + WAITING_COST


class OrderedWindow:
    __slots__ = (
        "base",
        "history",
        "known",
        "mask",
        "pending",
        "pending_cost",
        "pending_datagrams",
        "window",
    )

    def __init__(self, first: int, window: int) -> None:
        self.window: int = window
        self.mask: int = (1 << window) - 1
        self.base: int = first
        # bit k of history: base - 1 - k was delivered; only the low `known` bits mean anything
        self.history: int = 0
        self.known: int = 0
        # None stands for a message that was received but filtered out (topics).
        self.pending: dict[int, tuple[Message | None, float]] = {}
        #: What the waiting messages are charged (see _budget.py), and the
        #: datagrams they came in.
        self.pending_cost: int = 0
        self.pending_datagrams: int = 0

    def classify(self, sequence: int) -> int:
        distance = sequence_difference(sequence, self.base)
        if distance >= 0:
            return DUPLICATE if sequence in self.pending else NEW
        back = -distance - 1
        if back < self.known and (self.history >> back) & 1:
            return DUPLICATE
        return LATE

    def accept(
        self,
        sequence: int,
        message: Message | None,
        now: float,
        out: list[Message],
        counters: Counters,
    ) -> None:
        """Take a new (``classify`` said NEW) whole message; None marks its
        sequence number received without delivering anything."""
        distance = sequence_difference(sequence, self.base)
        if distance >= self.window:
            self._advance_to((sequence - self.window + 1) % SEQUENCE_MODULUS, out, counters)
        if sequence == self.base:
            if message is not None:
                out.append(message)
            self.step()
            if self.pending:
                self._drain(out)
        else:
            self.pending[sequence] = (message, now)
            if message is not None:
                self.pending_cost += waiting_cost(len(message.payload))
                self.pending_datagrams += message._datagrams

    def oldest_arrival(self) -> float | None:
        """When the message that has waited longest arrived (None: none waits)."""
        for _message, arrival in self.pending.values():
            return arrival
        return None

    def skip_gap(self, out: list[Message], counters: Counters) -> None:
        """Give up the gap before the first waiting message and deliver onwards."""
        if self.pending:
            base = self.base
            first = min(self.pending, key=lambda s: sequence_difference(s, base))
            self._advance_to(first, out, counters)

    def flush(self, out: list[Message], counters: Counters) -> None:
        """Deliver everything waiting, giving up every gap."""
        while self.pending:
            self.skip_gap(out, counters)

    def step(self, count: int = 1) -> None:
        """The ``count`` messages from ``base`` on were delivered: move past them
        (the engine's fast path calls it directly, having checked that nothing
        is pending)."""
        self.history = ((self.history << count) | ((1 << count) - 1)) & self.mask
        self.known = min(self.known + count, self.window)
        self.base = (self.base + count) % SEQUENCE_MODULUS

    def _drain(self, out: list[Message]) -> None:
        pending = self.pending
        while self.base in pending:
            message, _arrival = pending.pop(self.base)
            self._release(message, out)
            self.step()

    def _release(self, message: Message | None, out: list[Message]) -> None:
        if message is not None:
            self.pending_cost -= waiting_cost(len(message.payload))
            self.pending_datagrams -= message._datagrams
            out.append(message)

    def catch_up(self, new_base: int, out: list[Message]) -> None:
        """Move the base to ``new_base`` (reliable mode: the sender says every
        message before it was acknowledged, to an earlier incarnation of this
        receiver). What waits below it is delivered; the rest is not ours to
        count as lost."""
        self._advance_to(new_base, out, None)

    def _advance_to(self, new_base: int, out: list[Message], counters: Counters | None) -> None:
        base = self.base
        skipped = sequence_difference(new_base, base)
        if skipped <= 0:
            return
        below = sorted(
            (offset, sequence)
            for sequence in self.pending
            if (offset := sequence_difference(sequence, base)) < skipped
        )
        history = 0 if skipped >= self.window else (self.history << skipped) & self.mask
        for offset, sequence in below:
            message, _arrival = self.pending.pop(sequence)
            self._release(message, out)
            position = skipped - 1 - offset
            if position < self.window:
                history |= 1 << position
        if counters is not None:
            counters.messages_lost += skipped - len(below)
        self.history = history
        self.known = min(self.window, self.known + skipped)
        self.base = new_base
        self._drain(out)


class UnorderedWindow:
    __slots__ = ("early", "first", "highest", "mask", "seen", "window")

    def __init__(self, first: int, window: int) -> None:
        self.window: int = window
        self.mask: int = (1 << window) - 1
        self.highest: int = first
        self.first: int = first
        # bit k of seen: highest - k was received. Positions from before the first
        # message start set, so they are never counted lost; which of them really
        # arrive (late, but still new) is kept in `early` until the window has
        # moved past them.
        self.seen: int = self.mask & ~1
        self.early: set[int] | None = set() if window > 1 else None

    def classify(self, sequence: int) -> int:
        distance = sequence_difference(sequence, self.highest)
        if distance > 0:
            return NEW
        if -distance >= self.window:
            return LATE
        early = self.early
        if early is not None and sequence_difference(sequence, self.first) < 0:
            return DUPLICATE if sequence in early else NEW
        return DUPLICATE if (self.seen >> -distance) & 1 else NEW

    def accept(
        self,
        sequence: int,
        message: Message | None,
        now: float,
        out: list[Message],
        counters: Counters,
    ) -> None:
        distance = sequence_difference(sequence, self.highest)
        if distance > 0:
            window = self.window
            if distance >= window:
                lost = window - self.seen.bit_count() + distance - window
                self.seen = 1
            else:
                lost = distance - (self.seen >> (window - distance)).bit_count()
                self.seen = ((self.seen << distance) & self.mask) | 1
            counters.messages_lost += lost
            self.highest = sequence
            if self.early is not None and sequence_difference(sequence, self.first) >= window:
                self.early = None
        elif self.early is not None and sequence_difference(sequence, self.first) < 0:
            self.early.add(sequence)
        else:
            self.seen |= 1 << -distance
        if message is not None:
            out.append(message)
