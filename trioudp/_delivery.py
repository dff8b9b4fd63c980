"""Messages waiting for the application: the engine's receive queues.

A connection's messages go to its own queue once something receives from it
(``claim``: ``serve()`` hands it to a handler, or the application calls its
``receive()``); until then to the server's shared queue. A client's one
connection has its own from the start.

Queues are bounded. A message that fills its queue sets ``filled``: the
transport stops reading for this turn and the receive task lets the consumer
run (up to a few scheduler turns, ``FILLED_TURNS``) before it reads on, so the
socket is read as fast as consumers take and a flood's excess waits in the
kernel, undecoded. A consumer that does not take within those turns holds
nothing up: the socket is read on, and its full queue applies the
``overflow`` policy (drop its oldest message, or the new one; counted), so one
slow consumer never stalls the reading of the socket for everyone else. Full
means ``channel_capacity`` messages, ``channel_bytes`` of payload, or no room
left in the endpoint's ``total_buffer_bytes`` (every waiting message is
charged its real cost, see _budget.py). A reliable endpoint's messages were
acknowledged, so its queues never drop them: the engine admitted each one
against its peer's window and the budget before acknowledging it, and the
charge stays until the application takes it.

The trio shell only waits: it parks receivers and wakes them on a
``MessagesWaiting`` event. What the application takes goes through ``take``,
the one call that tells the engine what was consumed (the budget is released,
a reliable peer's window opens).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from math import inf
from typing import TYPE_CHECKING

from ._budget import MESSAGE_COST
from ._message import Address  # noqa: TC001  (compiled dataclasses read it at run time)

if TYPE_CHECKING:
    from ._budget import Budget
    from ._config import Config
    from ._message import Message
    from ._peer import Peer
    from ._statistics import Counters


#: How long an ended queue's messages wait to be taken when the endpoint has no
#: idle_timeout to go by.
LINGER = 60.0


@dataclass(frozen=True, slots=True)
class Unreachable:
    """An ICMP error the kernel reported for a client's peer, queued among its
    messages so that ``receive()`` raises it in order."""

    errno: int
    strerror: str
    address: Address


class QueueState(enum.Enum):
    OPEN = "open"
    #: No more messages will come: EndOfChannel once it is empty.
    ENDED = "ended"
    #: The application closed it (or the endpoint): ClosedResourceError.
    CLOSED = "closed"


_OPEN = QueueState.OPEN


class Queue:
    """One receive queue (a connection's own, or a server's shared one)."""

    __slots__ = ("error_queued", "handle", "items", "payload_bytes", "state", "waking")

    def __init__(self) -> None:
        self.items: deque[Message | Unreachable] = deque()
        #: Payload bytes of the messages in it (what ``channel_bytes`` bounds).
        self.payload_bytes: int = 0
        self.state: QueueState = QueueState.OPEN
        #: The shell's waiter for this queue; never read here.
        self.handle: object = None
        #: A MessagesWaiting event for it is due (not yet handed out).
        self.waking: bool = False
        #: An Unreachable is in it (only one at a time: they say the same).
        self.error_queued: bool = False


class Delivery:
    """The queues of one endpoint, their limits and their accounting."""

    def __init__(self, config: Config, budget: Budget, own: Counters, *, shared: bool) -> None:
        self._budget = budget
        self._own = own
        self._reliable = config.reliable
        self._drop_oldest = config.overflow == "drop_oldest"
        self._capacity = inf if config.reliable else config.channel_capacity
        self._byte_limit = inf if config.reliable else config.channel_bytes
        #: The server's queue for peers nobody receives from directly.
        self.shared: Queue | None = Queue() if shared else None
        #: Queues that got something since the shell last took events.
        self.waking: list[Queue] = []
        #: Ended queues with messages nobody has taken yet, and when those go.
        self.lingering: deque[tuple[float, Queue]] = deque()
        self._linger = config.idle_timeout if config.idle_timeout is not None else LINGER
        #: A message just filled its queue: the transport stops
        #: reading the socket for this turn, so that what the consumer cannot
        #: take yet waits in the kernel rather than being decoded and dropped.
        #: The transport clears it.
        self.filled = False
        #: How many times the application has taken from a queue: the receive
        #: task, paused by ``filled``, reads on once a consumer has taken.
        self.takes = 0
        #: The kernel has dropped datagrams for want of room in the socket's
        #: buffer since the transport last looked: a gap in an unreliable
        #: stream with a few messages waiting behind it (FLOOD_GAP, or a
        #: queue's worth) is then given up at once rather than waited for
        #: (``reorder_timeout``; _receiving.py).
        self.kernel_dropping = False

    # -- the engine's side ---------------------------------------------------------

    def put(self, peer: Peer, message: Message) -> None:
        """Hand a whole message to its peer's queue (or the shared one). The
        hottest code of the receive path: its lines are inlined on purpose."""
        queue: Queue = peer.queue or self.shared  # type: ignore[assignment]
        size = len(message.payload)
        cost = size + MESSAGE_COST  # message_cost()
        if queue.state is not _OPEN:
            self._count_dropped(peer, message, delivered=False)
            return
        items = queue.items
        budget = self._budget
        if self._reliable:
            # Admitted against its peer's window and budget before it was
            # acknowledged: it is counted until the application takes it.
            peer.buffered += cost
            peer.queued += 1
        else:
            room = len(items) < self._capacity and queue.payload_bytes + size <= self._byte_limit
            # This message fills a queue that had room: the reading of the
            # socket pauses for its consumer (see ``filled``).
            fills = room and (
                len(items) + 1 >= self._capacity
                or queue.payload_bytes + 2 * size > self._byte_limit
            )
            if (not room or budget.total + cost > budget.total_limit) and not self._make_room(
                queue, size, cost
            ):
                self._count_dropped(peer, message, delivered=False)
                return
            if fills:
                self.filled = True
        items.append(message)
        queue.payload_bytes += size
        budget.total += cost
        if not queue.waking:
            queue.waking = True
            self.waking.append(queue)
        datagrams = message._datagrams
        counters = peer.counters
        counters.datagrams_delivered += datagrams
        counters.messages_delivered += 1
        own = self._own
        own.datagrams_delivered += datagrams
        own.messages_delivered += 1

    def room(self, peer: Peer) -> float:
        """Messages the queue ``peer``'s go to can take before it is full."""
        queue: Queue = peer.queue or self.shared  # type: ignore[assignment]
        return self._capacity - len(queue.items)

    def put_error(self, queue: Queue, error: Unreachable) -> None:
        """Queue an ICMP error report (once: a second says nothing new)."""
        if queue.state is QueueState.OPEN and not queue.error_queued:
            queue.error_queued = True
            queue.items.append(error)
            self._wake(queue)

    def _make_room(self, queue: Queue, size: int, cost: int) -> bool:
        """The ``overflow`` policy for a message that does not fit: drop the
        oldest until it does (False if it cannot: ``drop_newest``, or the queue
        is empty and the endpoint's budget still has no room)."""
        budget = self._budget
        while (
            len(queue.items) >= self._capacity
            or queue.payload_bytes + size > self._byte_limit
            or budget.total + cost > budget.total_limit
        ):
            if not self._drop_oldest or not self._drop_first(queue):
                return False
        return True

    def _drop_first(self, queue: Queue) -> bool:
        """Make room by dropping the queue's oldest item; False if it is empty."""
        if not queue.items:
            return False
        item = queue.items.popleft()
        if isinstance(item, Unreachable):
            queue.error_queued = False
            return True
        peer = self._release(queue, item)
        self._count_dropped(peer, item, delivered=True)
        return True

    def _release(self, queue: Queue, message: Message) -> Peer:
        """A message left ``queue``: its charges go."""
        peer: Peer = message._origin  # type: ignore[assignment]
        size = len(message.payload)
        cost = size + MESSAGE_COST  # message_cost()
        queue.payload_bytes -= size
        self._budget.total -= cost
        if self._reliable:
            peer.buffered -= cost
            peer.queued -= 1
        return peer

    def _count_dropped(self, peer: Peer, message: Message, *, delivered: bool) -> None:
        datagrams = message._datagrams
        for counters in (self._own, peer.counters):
            if delivered:
                counters.datagrams_delivered -= datagrams
                counters.messages_delivered -= 1
            counters.datagrams_overflow_dropped += datagrams
            counters.messages_overflow_dropped += 1

    def _wake(self, queue: Queue) -> None:
        if not queue.waking:
            queue.waking = True
            self.waking.append(queue)

    def woken(self) -> list[Queue]:
        """Each queue that got something (or ended) since the last call."""
        waking, self.waking = self.waking, []
        for queue in waking:
            queue.waking = False
        return waking

    # -- the application's side ----------------------------------------------------

    def claim(self, peer: Peer) -> Queue:
        """The peer's own queue, made now if it has none: its messages go there
        from now on, and those of its still waiting in the shared queue move
        there first, in order (a server that starts ``serve()`` after datagrams
        arrived hands them to the peer's handler, not to nobody)."""
        queue = peer.queue
        if queue is None:
            queue = peer.queue = Queue()
            shared = self.shared
            if peer.closed:
                # Gone: its messages stay where they are read (and let go) as usual.
                queue.state = QueueState.ENDED
            elif shared is not None and shared.items:
                self._move_waiting(peer, shared, queue)
        return queue

    def _move_waiting(self, peer: Peer, shared: Queue, queue: Queue) -> None:
        kept: deque[Message | Unreachable] = deque()
        for item in shared.items:
            if type(item) is not Unreachable and item._origin is peer:  # type: ignore[union-attr]
                size = len(item.payload)  # type: ignore[union-attr]
                shared.payload_bytes -= size
                queue.payload_bytes += size
                queue.items.append(item)
            else:
                kept.append(item)
        shared.items = kept
        if queue.items:
            self._wake(queue)

    def take(self, queue: Queue, limit: int) -> list[Message] | Unreachable:
        """Up to ``limit`` messages from the front of ``queue``, stopping before
        an error report; the report itself if it is first. Empty: nothing waits."""
        items = queue.items
        if items and isinstance(items[0], Unreachable):
            queue.error_queued = False
            return items.popleft()  # type: ignore[return-value]
        self.takes += 1
        taken: list[Message] = []
        budget = self._budget
        reliable = self._reliable
        payload_bytes = queue.payload_bytes
        released = 0
        while items and len(taken) < limit:
            item = items[0]
            if type(item) is Unreachable:
                break
            items.popleft()
            message: Message = item  # type: ignore[assignment]
            # _release() for each, summed: this is receive_batch()'s loop.
            peer: Peer = message._origin  # type: ignore[assignment]
            size = len(message.payload)
            payload_bytes -= size
            released += size + MESSAGE_COST
            if reliable:
                peer.buffered -= size + MESSAGE_COST
                peer.queued -= 1
            taken.append(message)
        queue.payload_bytes = payload_bytes
        budget.total -= released
        return taken

    def take_one(self, queue: Queue) -> Message | Unreachable | None:
        """``take(queue, 1)``, the quick way for one message (what ``receive()``
        wants): the message, the error report, or None (tests/test_fast_paths.py)."""
        items = queue.items
        if not items:
            return None
        item = items.popleft()
        if type(item) is Unreachable:
            queue.error_queued = False
            return item
        self.takes += 1
        self._release(queue, item)  # type: ignore[arg-type]
        return item

    def end(self, queue: Queue, now: float) -> None:
        """No more messages will come to ``queue`` (its peer is gone). What waits
        in it may still be taken for ``idle_timeout`` seconds; then it is let
        go, counted as overflow, so that a connection nobody reads any more
        cannot hold the endpoint's budget."""
        if queue.state is QueueState.OPEN:
            queue.state = QueueState.ENDED
            self._wake(queue)
            if queue.items:
                self.lingering.append((now + self._linger, queue))

    def expire(self, now: float) -> None:
        """Let go of what lingered in ended queues long enough."""
        lingering = self.lingering
        while lingering and lingering[0][0] <= now:
            _deadline, queue = lingering.popleft()
            if queue.state is QueueState.ENDED:
                self.discard(queue, QueueState.ENDED)

    def discard(self, queue: Queue, state: QueueState) -> None:
        """Nobody will read ``queue`` again: what waits in it is let go (counted
        as overflow), and its readers find it ``state`` (ENDED or CLOSED)."""
        if queue.state is not QueueState.CLOSED:
            queue.state = state
        while queue.items:
            item = queue.items.popleft()
            if not isinstance(item, Unreachable):
                self._count_dropped(self._release(queue, item), item, delivered=True)
        queue.error_queued = False
        self._wake(queue)
