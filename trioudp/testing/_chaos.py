"""A chaos proxy: a real UDP relay on loopback that applies a FakeNetwork's
faults, for testing against real sockets and programs that are not trioudp."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio

from ._fakenet import CLEAN, Faults, NetworkStatistics, _Link, check_faults

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

#: Clients one proxy relays for at once (each has its own socket to the target).
MAX_CLIENTS = 256


@attrs.define(eq=False)
class ChaosProxy:
    """A running proxy: send to ``address`` instead of the target."""

    address: tuple[str, int]
    """Where clients send their datagrams."""
    forward: NetworkStatistics
    """What happened to datagrams from clients to the target."""
    backward: NetworkStatistics
    """What happened to datagrams from the target back to clients."""


@attrs.define(eq=False)
class _Relay:
    links: dict[str, _Link]
    stats: dict[str, NetworkStatistics]
    rng: random.Random
    queue: list[tuple[float, int, Any, bytes, Any]] = attrs.field(
        factory=lambda: list[tuple[float, int, Any, bytes, Any]]()
    )
    order: itertools.count[int] = attrs.field(factory=itertools.count)
    changed: trio.Event = attrs.field(factory=trio.Event)

    def pass_on(self, direction: str, sock: Any, data: bytes, destination: Any) -> None:
        link, stats = self.links[direction], self.stats[direction]
        now = trio.current_time()
        try:
            admitted = link.admit(data, now, self.rng, stats)
        except OSError:  # an MTU that refuses at once: here, simply lost
            stats.too_big += 1
            return
        if admitted:
            for arrives, payload in link.copies(data, now, self.rng, stats):
                heapq.heappush(self.queue, (arrives, next(self.order), sock, payload, destination))
                stats.delivered += 1
            self.changed.set()
            self.changed = trio.Event()

    async def deliver(self) -> None:
        while True:
            while self.queue and self.queue[0][0] <= trio.current_time():
                _arrives, _order, sock, payload, destination = heapq.heappop(self.queue)
                try:
                    if destination is None:
                        await sock.send(payload)
                    else:
                        await sock.sendto(payload, destination)
                except OSError:
                    pass  # the target or client is gone: the datagram is lost, as on a net
            changed = self.changed
            with trio.move_on_at(self.queue[0][0] if self.queue else math.inf):
                await changed.wait()


@asynccontextmanager
async def open_chaos_proxy(
    target: tuple[str, int],
    *,
    faults: Faults = CLEAN,
    reply_faults: Faults | None = None,
    seed: int = 0,
    host: str = "127.0.0.1",
) -> AsyncGenerator[ChaosProxy, None]:
    """Relay UDP datagrams between clients and ``target`` through a bad network:
    clients send to ``proxy.address``; what they send suffers ``faults`` on the
    way to ``target``, what comes back suffers ``reply_faults`` (by default the
    same). Each client gets its own socket towards the target, so the target
    sees one address per client. Point it only at hosts you run yourself, on
    loopback or in your own test network."""
    check_faults(faults)
    if reply_faults is not None:
        check_faults(reply_faults, "reply_faults")
    given = cast("object", target)
    target_parts = cast("tuple[object, ...]", given) if isinstance(given, tuple) else ()
    if len(target_parts) != 2 or not isinstance(target_parts[0], str):
        raise TypeError(f"target must be a (host, port) tuple, got {target!r}")
    target_port = target_parts[1]
    if type(target_port) is not int or not 0 < target_port <= 65535:
        raise ValueError(f"target's port must be 1 to 65535, got {target_port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        await trio.socket.getaddrinfo(target[0], target[1], family, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise OSError(
            exc.errno,
            f"the proxy on {host} cannot reach target {target!r}: {exc.strerror} (give the "
            f"target as an address of the proxy's IP version)",
        ) from None
    listener = trio.socket.socket(family, socket.SOCK_DGRAM)
    await listener.bind((host, 0))
    forward, backward = NetworkStatistics(), NetworkStatistics()
    relay = _Relay(
        links={"forward": _Link(faults), "backward": _Link(reply_faults or faults)},
        stats={"forward": forward, "backward": backward},
        rng=random.Random(seed),
    )
    upstreams: dict[Any, trio.socket.SocketType] = {}
    try:
        async with trio.open_nursery() as nursery:

            async def backwards(upstream: trio.socket.SocketType, client: Any) -> None:
                while True:
                    try:
                        data = await upstream.recv(65536)
                    except OSError:  # an ICMP error from the target: nothing to relay
                        continue
                    relay.pass_on("backward", listener, data, client)

            async def forwards() -> None:
                while True:
                    data, client = await listener.recvfrom(65536)
                    upstream = upstreams.get(client)
                    if upstream is None:
                        if len(upstreams) >= MAX_CLIENTS:
                            continue
                        upstream = trio.socket.socket(family, socket.SOCK_DGRAM)
                        await upstream.connect(target)
                        upstreams[client] = upstream
                        nursery.start_soon(backwards, upstream, client)
                    relay.pass_on("forward", upstream, data, None)

            nursery.start_soon(forwards)
            nursery.start_soon(relay.deliver)
            yield ChaosProxy(address=listener.getsockname()[:2], forward=forward, backward=backward)
            nursery.cancel_scope.cancel()
    finally:
        listener.close()
        for upstream in upstreams.values():
            upstream.close()
