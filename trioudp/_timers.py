"""Every timeout of every peer, from one table.

``table(peer)`` lists a peer's timers as ``(deadline, timer, stream)``: the
same list tells the heap when to wake (its earliest deadline) and tells
``Engine.handle_timer`` which actions are due, so the two can never disagree.
Each peer has at most one live entry in a heap of deadlines; entries that no
longer match are skipped when they come up, and swept out when half the heap
is stale. So ``next_deadline`` is O(1) and
a busy peer costs no heap work per datagram.
"""

from __future__ import annotations

import enum
import heapq
from itertools import count
from math import inf
from typing import TYPE_CHECKING

from ._state import ConnectionState

if TYPE_CHECKING:
    from collections.abc import Container
    from typing import TypeAlias

    from ._config import Config
    from ._peer import Peer
    from ._receiving import Reception, Stream

#: Keepalive PINGs go after this share (drawn at random) of ``keepalive``.
KEEPALIVE_JITTER = (0.8, 1.0)


class Timer(enum.Enum):
    """What a due timer does (in this order, when several are due at once)."""

    ACK = "an acknowledgement is due"
    SENDER = "the reliable sender's loss, probe or give-up timer"
    KEEPALIVE = "a PING after keepalive seconds of silence towards the peer"
    DEAD = "dead_timeout seconds without hearing from the peer: LOST"
    QUIET = "keepalive seconds without hearing from the peer: IDLE"
    REORDER = "a reorder gap has waited reorder_timeout: give it up"
    REASSEMBLY = "a partial message went reassembly_timeout without a fragment"
    FORGET = "a server forgets a peer silent for idle_timeout"


Entry: TypeAlias = "tuple[float, Timer, Stream | None]"


class Timers:
    """The table, and the heap that wakes the engine for it."""

    def __init__(self, config: Config, reception: Reception, *, client: bool) -> None:
        self._config = config
        self._reception = reception
        self._client = client
        #: (deadline, tiebreak, peer): the engine's next wake-up is at its front.
        self.heap: list[tuple[float, int, Peer]] = []
        self._tiebreak = count()
        #: Entries known to be stale (re-armed earlier, or the peer is gone).
        self._stale = 0

    def table(self, peer: Peer, ready: Container[Peer]) -> list[Entry]:
        """Every timer ``peer`` has now (``ready``: peers whose output is
        produced at the next ``datagrams_to_send`` anyway)."""
        config = self._config
        entries: list[Entry] = []
        stream = peer.unicast
        if stream is not None and stream.acks is not None and peer not in ready:
            entries.append((stream.acks.due, Timer.ACK, None))
        if peer.sender is not None:
            entries.append((peer.sender.deadline(), Timer.SENDER, None))
        if peer.keepalive_at < inf:
            entries.append((peer.keepalive_at, Timer.KEEPALIVE, None))
        if config.dead_timeout is not None and peer.state is not ConnectionState.LOST:
            entries.append((peer.heard + config.dead_timeout, Timer.DEAD, None))
        if config.keepalive is not None and peer.state is ConnectionState.ESTABLISHED:
            entries.append((peer.heard + config.keepalive, Timer.QUIET, None))
        reception = self._reception
        for each in peer.streams():
            if each.acks is not None:
                continue  # reliable: it neither gives gaps up nor expires partials
            gap = reception.reorder_deadline(each)
            if gap is not None:
                entries.append((gap, Timer.REORDER, each))
            partial = reception.reassembly_deadline(each)
            if partial is not None:
                entries.append((partial, Timer.REASSEMBLY, each))
        if config.idle_timeout is not None and not self._client:
            entries.append((peer.last_activity + config.idle_timeout, Timer.FORGET, None))
        return entries

    def arm(self, peer: Peer, ready: Container[Peer]) -> None:
        """Make sure the heap wakes the engine by ``peer``'s earliest deadline."""
        deadline = min((entry[0] for entry in self.table(peer, ready)), default=inf)
        if deadline < peer.timer_at:
            if peer.timer_at < inf:
                self.dropped()
            peer.timer_at = deadline
            heapq.heappush(self.heap, (deadline, next(self._tiebreak), peer))

    def disarm(self, peer: Peer) -> None:
        """``peer`` is gone: its entry, if it has one, is stale."""
        if peer.timer_at < inf:
            peer.timer_at = inf
            self.dropped()

    def dropped(self) -> None:
        """An entry went stale (its peer re-armed earlier, or is gone). When
        half the heap is stale it is rebuilt without them, so that a peer
        forgotten (a session retired, say) is let go at once, not when its
        last deadline comes: a sender of a new session per datagram once kept
        millions of dead peers alive that way."""
        self._stale += 1
        heap = self.heap
        if self._stale > 64 and self._stale * 2 > len(heap):
            heap[:] = [
                entry for entry in heap if not entry[2].closed and entry[0] == entry[2].timer_at
            ]
            heapq.heapify(heap)
            self._stale = 0

    def next_deadline(self) -> float:
        return self.heap[0][0] if self.heap else inf

    def pop_due(self, now: float) -> Peer | None:
        """A peer whose earliest deadline has come, taken off the heap (None:
        none has)."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            deadline, _, peer = heapq.heappop(heap)
            if peer.closed or deadline != peer.timer_at:
                self._stale = max(self._stale - 1, 0)
                continue  # stale: the peer was re-armed earlier, or is gone
            peer.timer_at = inf
            return peer
        return None
