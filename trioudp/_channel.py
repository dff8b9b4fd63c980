"""Receiving, trio's way: waiting on the engine's queues, cancel-safe.

The engine keeps the messages (``_delivery.py``); the shell only waits for
them. A receiver takes what waits with the engine's ``take`` (the one call
that tells the engine what was consumed) and, if nothing does, parks until a
``MessagesWaiting`` event for its queue wakes it. Being cancelled while parked
takes nothing, so every receive is cancel-safe; once ``take`` has returned,
nothing can cancel the receive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

from ._delivery import QueueState, Unreachable
from ._errors import UnreachableError
from ._message import Message

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._delivery import Queue

#: Messages received without waiting (over any number of ``receive()`` calls)
#: before the receiving task lets other tasks run.
RECEIVE_YIELD = 16


class Taker(Protocol):
    """Where an inbox takes its messages from: its endpoint."""

    def _take(self, queue: Queue, limit: int) -> list[Message] | Unreachable: ...

    def _take_one(self, queue: Queue) -> Message | Unreachable | None: ...


class Inbox:
    """The receivers of one engine queue."""

    __slots__ = ("_endpoint", "_queue", "_unyielded", "_waiters")

    def __init__(self, endpoint: Taker, queue: Queue) -> None:
        self._endpoint = endpoint
        self._queue = queue
        self._waiters = trio.lowlevel.ParkingLot()
        #: Messages taken without waiting since the taker last let others run.
        self._unyielded = 0
        queue.handle = self

    def wake(self) -> None:
        if self._waiters:
            self._waiters.unpark_all()

    def _take_nowait(self, limit: int) -> list[Message]:
        """What waits (up to ``limit``), or raise: the queue's error report,
        EndOfChannel, ClosedResourceError, or WouldBlock."""
        queue = self._queue
        taken = self._endpoint._take(queue, limit)
        if isinstance(taken, Unreachable):
            raise UnreachableError(taken.errno, taken.strerror, taken.address)
        if taken:
            return taken
        if queue.state is QueueState.CLOSED:
            raise trio.ClosedResourceError("this trioudp endpoint or connection is closed")
        if queue.state is QueueState.ENDED:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def take(self, limit: int) -> list[Message]:
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            try:
                taken = self._take_nowait(limit)
            except trio.WouldBlock:
                await self._waiters.park()
                parked = True
                continue
            # Taken: from here on, a cancellation cannot lose it. A receive that
            # waited has let other tasks run already; one that did not lets them
            # run once per RECEIVE_YIELD messages (as send() does per SEND_BATCH
            # datagrams), shielded from cancellation.
            if parked:
                self._unyielded = 0
            else:
                self._unyielded += len(taken)
                if self._unyielded >= RECEIVE_YIELD:
                    self._unyielded = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
            return taken

    def take_nowait(self) -> Message:
        return self._take_nowait(1)[0]

    async def take_one(self) -> Message:
        """``take(1)``'s one message, the quick way (what ``receive()`` does)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        queue = self._queue
        take_one = self._endpoint._take_one
        parked = False
        while True:
            item = take_one(queue)
            if item is None:
                if queue.state is QueueState.CLOSED:
                    raise trio.ClosedResourceError("this trioudp endpoint or connection is closed")
                if queue.state is QueueState.ENDED:
                    raise trio.EndOfChannel
                await self._waiters.park()
                parked = True
                continue
            if type(item) is Unreachable:
                raise UnreachableError(item.errno, item.strerror, item.address)
            # As in take(): a cancellation cannot lose it from here on.
            if parked:
                self._unyielded = 0
            else:
                self._unyielded += 1
                if self._unyielded >= RECEIVE_YIELD:
                    self._unyielded = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
            return item  # type: ignore[return-value]


class Receiving(trio.abc.ReceiveChannel[Message]):
    """A trio ``ReceiveChannel`` of messages: servers, multicast and broadcast
    endpoints, and connections. ``async for`` ends at ``EndOfChannel``."""

    def _inbox(self) -> Inbox:
        raise NotImplementedError

    async def receive(self) -> Message:
        """The next message. Cancel-safe: if a timeout (a cancel scope) cancels the
        wait, no message is lost; the next call gets it.

        A cancellation point on every call; while messages are waiting it lets
        other tasks run once per 16 messages rather than after each one (as
        ``send()`` does), so ``async for`` over a busy peer stays fast.

        Raises ``trio.EndOfChannel`` when this connection has ended (the peer was
        idle, restarted, or its handler returned) and ``trio.ClosedResourceError``
        once it or the endpoint is closed.
        """
        return await self._inbox().take_one()

    def receive_nowait(self) -> Message:
        """The next message if one is waiting, else raise ``trio.WouldBlock``."""
        return self._inbox().take_nowait()

    async def receive_batch(self, max_messages: int = 1024) -> list[Message]:
        """Wait for one message, then take up to ``max_messages`` that are waiting,
        all for one trip through the scheduler. Cancel-safe like ``receive()``."""
        if type(max_messages) is not int or max_messages < 1:
            raise ValueError(f"max_messages must be a positive integer, got {max_messages!r}")
        return await self._inbox().take(max_messages)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._inbox().take_one()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
