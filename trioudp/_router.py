"""Dispatching messages by topic to async handlers, the trio way."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Literal, Protocol

import attrs
import trio

from ._endpoint import Endpoint, raise_lone
from ._errors import awaitable, check_handler
from ._message import Message
from ._sending import encode_topic

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Handler = Callable[[Message], Awaitable[object]]

logger = logging.getLogger(__name__)


class MessageSource(Protocol):
    """What a Router reads: any trioudp endpoint or connection."""

    async def receive_batch(self, max_messages: int = ...) -> list[Message]: ...


@attrs.frozen(kw_only=True)
class RouterStatistics:
    """What a Router has done (a snapshot)."""

    dispatched: int
    """Messages handed to a handler's queue."""
    unrouted: int
    """Messages of a topic with no route and no default handler."""
    dropped: int
    """Messages dropped because a handler's queue was full (the oldest goes)."""
    handler_errors: int
    """Exceptions raised by handlers (with ``errors="log"``; with ``"raise"`` the
    first one ends the router)."""


@attrs.define(eq=False)
class _Route:
    handler: Handler
    send: trio.MemorySendChannel[Message]
    receive: trio.MemoryReceiveChannel[Message]


class Router:
    """Sends each message to the handler of its topic (seed: the control
    system's ``register_message_handler``, made structured)::

        router = trioudp.Router()

        @router.route("temperature")
        async def on_temperature(message: trioudp.Message) -> None:
            ...

        async with trioudp.open_multicast("239.255.0.1", 5000) as group:
            await router.run(group)

    Each route runs in a task of its own and gets its messages in order, one at
    a time; a slow handler delays only its own topic. Its queue holds
    ``capacity`` messages; when full, the oldest is dropped and counted.

    ``errors`` says what an exception in a handler does: ``"raise"`` (the
    default) ends ``run()`` and the other handlers and raises it, as any trio
    nursery would; ``"log"`` logs it (logger ``trioudp._router``, with the
    traceback), counts it, and goes on with that handler's next message.
    Without a default handler, ``run()`` subscribes the source to the routed
    topics, so other topics are dropped before their payload is copied.
    """

    def __init__(self, *, capacity: int = 256, errors: Literal["raise", "log"] = "raise") -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        if errors not in ("raise", "log"):
            raise ValueError(f"errors must be 'raise' or 'log', got {errors!r}")
        self._capacity = capacity
        self._log_errors = errors == "log"
        self._handlers: dict[str, Handler] = {}
        self._default: Handler | None = None
        self._running = False
        self._dispatched = self._unrouted = self._dropped = self._errors = 0

    def add(self, topic: str, handler: Handler) -> None:
        """Route messages of ``topic`` ("" for messages without one) to ``handler``."""
        encode_topic(topic)
        check_handler(f"add({topic!r}, handler)", handler)
        if self._running:
            raise RuntimeError("add routes before run()")
        if topic in self._handlers:
            raise ValueError(f"topic {topic!r} already has a handler")
        self._handlers[topic] = handler

    def route(self, topic: str) -> Callable[[Handler], Handler]:
        """A decorator form of :meth:`add`: ``@router.route("temperature")``."""
        if not isinstance(topic, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(
                f"route() takes the topic, as in @router.route('temperature'), got {topic!r}"
            )

        def register(handler: Handler) -> Handler:
            self.add(topic, handler)
            return handler

        return register

    def default(self, handler: Handler) -> Handler:
        """Handle messages of every topic without a route of its own (a decorator
        too)."""
        check_handler("default()", handler)
        if self._running:
            raise RuntimeError("set the default handler before run()")
        self._default = handler
        return handler

    @property
    def topics(self) -> frozenset[str]:
        """The topics with a route."""
        return frozenset(self._handlers)

    def statistics(self) -> RouterStatistics:
        return RouterStatistics(
            dispatched=self._dispatched,
            unrouted=self._unrouted,
            dropped=self._dropped,
            handler_errors=self._errors,
        )

    async def run(
        self,
        source: MessageSource,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read ``source`` and dispatch its messages until cancelled, or until the
        source ends (a connection whose peer went idle, say), once every queued
        message is handled."""
        if not callable(getattr(source, "receive_batch", None)):
            raise TypeError(
                f"run() takes a trioudp endpoint or connection to read, got {type(source).__name__}"
            )
        if self._running:
            raise trio.BusyResourceError("this Router is already running")
        if not self._handlers and self._default is None:
            raise ValueError("the Router has no routes: add some before run()")
        self._running = True
        # With no default handler, only the routed topics are decoded; the
        # endpoint's own subscriptions come back when run() ends.
        endpoint = source if self._default is None and isinstance(source, Endpoint) else None
        before = None if endpoint is None else endpoint.subscriptions
        if endpoint is not None:
            endpoint.subscriptions = self.topics
        routes = {topic: self._route(handler) for topic, handler in self._handlers.items()}
        fallback = None if self._default is None else self._route(self._default)
        every_route = [*routes.values(), *([fallback] if fallback else [])]
        try:
            async with trio.open_nursery() as nursery:
                for route in every_route:
                    nursery.start_soon(self._work, route)
                task_status.started()
                try:
                    while True:
                        try:
                            batch = await source.receive_batch()
                        except trio.EndOfChannel:
                            break
                        for message in batch:
                            self._dispatch(routes.get(message.topic, fallback), message)
                finally:
                    for route in every_route:
                        route.send.close()
        except BaseExceptionGroup as group:
            raise_lone(group)
        finally:
            self._running = False
            if endpoint is not None and not endpoint._closed:
                endpoint.subscriptions = before

    def _route(self, handler: Handler) -> _Route:
        return _Route(handler, *trio.open_memory_channel[Message](self._capacity))

    def _dispatch(self, route: _Route | None, message: Message) -> None:
        if route is None:
            self._unrouted += 1
            return
        try:
            route.send.send_nowait(message)
        except trio.WouldBlock:
            route.receive.receive_nowait()
            self._dropped += 1
            route.send.send_nowait(message)
        self._dispatched += 1

    async def _work(self, route: _Route) -> None:
        async for message in route.receive:
            try:
                await awaitable("Router", route.handler, route.handler(message))
            except Exception:
                if not self._log_errors:
                    raise
                self._errors += 1
                logger.exception(
                    "handler for topic %r failed on a message from %s",
                    message.topic,
                    message.address,
                )
