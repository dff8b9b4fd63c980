"""A fake UDP network for testing trioudp code against bad networks, fast and
deterministically.

Inside ``with network.installed():`` every trioudp endpoint opened in that
task (and the tasks it starts) gets a fake socket on this network instead of a
real one. A datagram's fate is decided when it is sent, from the faults of its
link and the network's seeded random generator: lost (independently, or in
bursts by the Gilbert-Elliott model), duplicated, delayed (with jitter, which
reorders), damaged (a flipped bit or a truncation), too big for the MTU, over
a rate limit, or bounced as an ICMP port unreachable when nothing listens. It
is then queued at its receivers with the time it arrives; a receiver sees it
once trio's clock reaches that time. Nothing sleeps for real: with pytest-trio's
``autojump_clock`` a run of minutes takes milliseconds, and the same seed gives
the same run.

Hosts are just IP addresses: bind to them (``local_address=`` for a client)
and set faults per pair of hosts with :meth:`FakeNetwork.set_faults`. A socket
that does not bind lives on 127.0.0.1 (or ::1). Multicast groups and broadcast
(to 255.255.255.255 or any address ending in .255) reach every socket that
joined the group, or is bound to the port with SO_BROADCAST-style sharing.
"""

from __future__ import annotations

import errno
import heapq
import ipaddress
import itertools
import math
import os
import random
import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._sockethook import FAKE_NETWORK

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable

    from typing_extensions import Buffer


def _probability(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) not in (int, float) or not 0 <= value <= 1:  # type: ignore[operator]
        raise ValueError(f"{attribute.name} must be a probability from 0 to 1, got {value!r}")


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) not in (int, float) or not 0 <= value < math.inf:  # type: ignore[operator]
        raise ValueError(f"{attribute.name} must be a number of seconds from 0, got {value!r}")


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (type(value) not in (int, float) or not value > 0):  # type: ignore[operator]
        raise ValueError(f"{attribute.name} must be a positive number or None, got {value!r}")


def _errno_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (type(value) is not int or value <= 0):
        raise ValueError(
            f"{attribute.name} must be an errno (a positive int) or None, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class Faults:
    """What a link does to the datagrams that cross it. Each probability is per
    datagram; the defaults are a perfect link."""

    loss: float = attrs.field(default=0.0, validator=_probability)
    """Probability that a datagram is lost (in the Gilbert-Elliott model: while
    the link is in its good state)."""
    burst_start: float = attrs.field(default=0.0, validator=_probability)
    """Gilbert-Elliott: probability, per datagram, that the link turns bad; while
    it is bad every datagram is lost. 0 turns the model off."""
    burst_end: float = attrs.field(default=0.5, validator=_probability)
    """Gilbert-Elliott: probability, per datagram, that a bad link turns good
    again (the mean burst is 1 / burst_end datagrams)."""
    duplicate: float = attrs.field(default=0.0, validator=_probability)
    """Probability that a datagram arrives twice."""
    delay: float = attrs.field(default=0.0, validator=_seconds)
    """One-way delay, in seconds."""
    jitter: float = attrs.field(default=0.0, validator=_seconds)
    """Extra delay, uniform from 0 to this; it reorders datagrams sent closer
    together than that."""
    reorder: float = attrs.field(default=0.0, validator=_probability)
    """Probability that a datagram is held back an extra ``reorder_delay``."""
    reorder_delay: float = attrs.field(default=0.02, validator=_seconds)
    """How long a reordered datagram is held back, at most (uniform)."""
    corrupt: float = attrs.field(default=0.0, validator=_probability)
    """Probability that a datagram is damaged: one bit flipped, or (one time in
    four) cut short."""
    mtu: int | None = attrs.field(default=None, validator=_positive_or_none)
    """The largest datagram (UDP payload) the link carries; larger ones are lost,
    or refused at once with EMSGSIZE if ``mtu_error``."""
    mtu_error: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Refuse datagrams over ``mtu`` when they are sent (the kernel's own MTU)
    rather than losing them on the way."""
    rate: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Bytes per second the link carries (a policer with one second of burst);
    datagrams over it are lost."""
    send_error: int | None = attrs.field(default=None, validator=_errno_or_none)
    """An errno every send over this link fails with at once, as the kernel
    fails a send when the route went away (ENETUNREACH), a firewall refuses it
    (EPERM), or the address may not be sent to (EACCES): for testing what an
    endpoint does with each error the kernel can give."""


CLEAN = Faults()
"""A perfect link."""
MODERATE = Faults(loss=0.03, duplicate=0.01, reorder=0.05, corrupt=0.001, delay=0.002, jitter=0.001)
"""A busy Wi-Fi link: 3% loss, 1% duplicates, 5% reordered, 0.1% damaged."""
HARSH = Faults(loss=0.1, duplicate=0.1, reorder=0.25, corrupt=0.01, delay=0.005, jitter=0.005)
"""A terrible link: 10% loss, 10% duplicates, 25% reordered, 1% damaged."""
STRESS = Faults(loss=0.3, duplicate=0.05, reorder=0.1, corrupt=0.01, delay=0.005, jitter=0.005)
"""30% loss, for reliability under stress."""


@attrs.define(kw_only=True)
class NetworkStatistics:
    """What the fake network did to the datagrams sent through it."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    too_big: int = 0
    over_rate: int = 0
    unreachable: int = 0
    refused: int = 0


@attrs.define(eq=False)
class _Link:
    """One direction between two hosts: its faults and their state."""

    faults: Faults
    bad: bool = False
    tokens: float = 0.0
    refilled: float = -math.inf

    def admit(self, data: bytes, now: float, rng: random.Random, stats: NetworkStatistics) -> bool:
        """Whether ``data`` survives the MTU, the rate limit and loss; raises
        EMSGSIZE for an MTU that refuses at once."""
        faults = self.faults
        stats.sent += 1
        if faults.mtu is not None and len(data) > faults.mtu:
            if faults.mtu_error:
                stats.sent -= 1
                raise OSError(errno.EMSGSIZE, "Message too long")
            stats.too_big += 1
            return False
        if faults.rate is not None:
            self.tokens = min(faults.rate, self.tokens + (now - self.refilled) * faults.rate)
            self.refilled = now
            if self.tokens < len(data):
                stats.over_rate += 1
                return False
            self.tokens -= len(data)
        if faults.burst_start:
            self.bad = (
                rng.random() >= faults.burst_end if self.bad else rng.random() < faults.burst_start
            )
        if self.bad or rng.random() < faults.loss:
            stats.lost += 1
            return False
        return True

    def copies(
        self, data: bytes, now: float, rng: random.Random, stats: NetworkStatistics
    ) -> list[tuple[float, bytes]]:
        """When each copy of an admitted datagram arrives, and as what: one copy,
        or two if duplicated; delayed, maybe reordered, maybe damaged."""
        faults = self.faults
        result: list[tuple[float, bytes]] = []
        for _ in range(2 if rng.random() < faults.duplicate else 1):
            arrives = now + faults.delay + rng.uniform(0, faults.jitter)
            if rng.random() < faults.reorder:
                arrives += rng.uniform(0, faults.reorder_delay)
                stats.reordered += 1
            payload = data
            if payload and rng.random() < faults.corrupt:
                stats.corrupted += 1
                damaged = bytearray(payload)
                if rng.random() < 0.25:
                    del damaged[rng.randrange(len(damaged)) :]
                else:
                    damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
                payload = bytes(damaged)
            result.append((arrives, payload))
        stats.duplicated += len(result) - 1
        return result


def check_faults(faults: object, name: str = "faults") -> Faults:
    """``faults`` checked: a Faults (a dict or a number fails at once, not at the
    first datagram)."""
    if not isinstance(faults, Faults):
        raise TypeError(
            f"{name} must be a trioudp.testing.Faults, e.g. Faults(loss=0.1), got {faults!r}"
        )
    return faults


class FakeNetwork:
    """A seeded, in-memory UDP network. See the module's documentation."""

    def __init__(self, *, seed: int = 0, faults: Faults = CLEAN) -> None:
        self._random = random.Random(seed)
        self._default = check_faults(faults)
        self._faults: dict[tuple[str | None, str | None], Faults] = {}
        self._links: dict[tuple[str, str], _Link] = {}
        self._bound: dict[tuple[str, int], list[FakeSocket]] = {}
        self._ports = itertools.count(40000)
        self._order = itertools.count()
        self._refusals: list[int] = []
        self.statistics: NetworkStatistics = NetworkStatistics()

    @property
    def faults(self) -> Faults:
        """The faults of every link that ``set_faults`` did not set otherwise."""
        return self._default

    @contextmanager
    def installed(self) -> Generator[FakeNetwork, None, None]:
        """Make trioudp endpoints opened in this context use this network."""
        token = FAKE_NETWORK.set(self)
        try:
            yield self
        finally:
            FAKE_NETWORK.reset(token)

    def set_faults(
        self, faults: Faults, *, source: str | None = None, destination: str | None = None
    ) -> None:
        """Use ``faults`` for datagrams from host ``source`` to host
        ``destination`` (None: any), in place of the network's default."""
        self._faults[(source, destination)] = check_faults(faults)
        self._links.clear()

    def refuse_sends(self, count: int, error: int = errno.EAGAIN) -> None:
        """Make the next ``count`` sends (from any socket) fail with ``error``, as
        a kernel does when its buffers are full: EAGAIN (the socket becomes
        writable again a millisecond later) or ENOBUFS (no word when)."""
        if type(count) is not int or count < 0:
            raise ValueError(f"count must be a whole number of sends, got {count!r}")
        if type(error) is not int or error <= 0:
            raise TypeError(f"error must be an errno such as errno.EAGAIN, got {error!r}")
        self._refusals.extend([error] * count)

    def inject(
        self, payload: Buffer, source: tuple[str, int], destination: tuple[str, int]
    ) -> None:
        """Deliver ``payload`` to ``destination`` now, as if from ``source`` (which
        need not exist: a spoofed address), past every fault. For floods and
        forgeries in tests."""
        if isinstance(payload, (int, str)):
            raise TypeError(
                f"payload must be bytes-like, got {type(payload).__name__}; e.g. b'garbage'"
            )
        receivers = self._receivers(destination[0], destination[1], socket.AF_INET)
        data = bytes(payload)
        now = trio.current_time()
        for receiver in receivers:
            receiver._arrive(now, next(self._order), data, (source[0], source[1]))

    def socket(self, family: int = socket.AF_INET) -> FakeSocket:
        return FakeSocket(self, family)

    # -- the network's side ---------------------------------------------------------

    def _link(self, source: str, destination: str) -> _Link:
        link = self._links.get((source, destination))
        if link is None:
            faults = self._default
            for key in ((source, destination), (source, None), (None, destination), (None, None)):
                if key in self._faults:
                    faults = self._faults[key]
                    break
            link = self._links[(source, destination)] = _Link(faults)
        return link

    def _bind(self, sock: FakeSocket, host: str, port: int) -> tuple[str, int]:
        if port == 0:
            port = next(p for p in self._ports if not self._taken(host, p))
        holders = self._bound.setdefault((host, port), [])
        if holders and not (sock.shared and all(other.shared for other in holders)):
            raise OSError(errno.EADDRINUSE, f"fake address {host} port {port} is already in use")
        holders.append(sock)
        return host, port

    def _taken(self, host: str, port: int) -> bool:
        return bool(self._bound.get((host, port)))

    def _unbind(self, sock: FakeSocket) -> None:
        if sock.name is not None:
            holders = self._bound.get((sock.name[0], sock.name[1]), [])
            if sock in holders:
                holders.remove(sock)

    def _receivers(self, host: str, port: int, family: int) -> list[FakeSocket]:
        address = ipaddress.ip_address(host)
        if address.is_multicast:
            return [
                s
                for holders in self._bound.values()
                for s in holders
                if s.name is not None and s.name[1] == port and host in s.groups
            ]
        if isinstance(address, ipaddress.IPv4Address) and host.endswith(".255"):
            return [
                s
                for holders in self._bound.values()
                for s in holders
                if s.name is not None and s.name[1] == port and s.family == socket.AF_INET
            ]
        wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
        found = self._bound.get((host, port)) or self._bound.get((wildcard, port))
        if not found and family == socket.AF_INET:
            found = self._bound.get(("::", port))  # a dual-stack listener
        return list(found or [])[-1:]

    def _transmit(self, sender: FakeSocket, data: bytes, destination: Any) -> None:
        host, port = str(destination[0]).split("%")[0], int(destination[1])
        if sender.name is None:
            sender._autobind()
        assert sender.name is not None
        link = self._link(sender.name[0], host)
        error = link.faults.send_error
        if error is not None:
            self.statistics.refused += 1
            raise OSError(error, os.strerror(error))
        now = trio.current_time()
        if not link.admit(data, now, self._random, self.statistics):
            return
        receivers = self._receivers(host, port, sender.family)
        if not receivers:
            self.statistics.unreachable += 1
            if sender.peer is not None:  # a connected socket hears of the ICMP error
                sender._fail(OSError(errno.ECONNREFUSED, "Connection refused"))
            return
        for arrives, payload in link.copies(data, now, self._random, self.statistics):
            for receiver in receivers:
                self.statistics.delivered += 1
                receiver._arrive(arrives, next(self._order), payload, sender.name)


_WILDCARDS = {"", "0.0.0.0", "::"}


class FakeSocket:
    """The parts of a UDP socket that trioudp uses, on a FakeNetwork."""

    trioudp_fake = True

    def __init__(self, network: FakeNetwork, family: int) -> None:
        self._network = network
        self.family = family
        self.type = socket.SOCK_DGRAM
        self.proto = 0
        self.name: tuple[str, int] | None = None
        self.peer: Any = None
        self.groups: set[str] = set()
        self.shared: bool = False
        self._queue: list[tuple[float, int, bytes, tuple[str, int]]] = []
        self._error: OSError | None = None
        self._writable_at = -math.inf
        self._changed = trio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"<trioudp.testing.FakeSocket {self.name}>"

    # -- setup ------------------------------------------------------------------------

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        if level == socket.SOL_SOCKET and option in (socket.SO_REUSEADDR, socket.SO_REUSEPORT):
            self.shared = bool(value)

    def getsockopt(self, level: int, option: int) -> int:
        return 0

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return -1

    def bind(self, address: Any) -> None:
        host = str(address[0]).split("%")[0]
        if host == "":
            host = "::" if self.family == socket.AF_INET6 else "0.0.0.0"
        self.name = self._network._bind(self, host, int(address[1]))

    def _autobind(self) -> None:
        self.bind(("::1" if self.family == socket.AF_INET6 else "127.0.0.1", 0))

    def connect(self, address: Any) -> None:
        if self.name is None:
            self._autobind()
        self.peer = self._form(str(address[0]), int(address[1]))

    def getsockname(self) -> Any:
        if self.name is None:
            return self._form("::" if self.family == socket.AF_INET6 else "0.0.0.0", 0)
        return self._form(*self.name)

    def getpeername(self) -> Any:
        if self.peer is None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return self.peer

    def join(self, group: str) -> None:
        self.groups.add(str(ipaddress.ip_address(group)))

    def leave(self, group: str) -> None:
        self.groups.discard(str(ipaddress.ip_address(group)))

    def _form(self, host: str, port: int) -> Any:
        if self.family == socket.AF_INET6:
            if ":" not in host:
                host = f"::ffff:{host}"
            return (host, port, 0, 0)
        return (host, port)

    # -- data ---------------------------------------------------------------------------

    def sendto(self, data: Buffer, address: Any) -> int:
        self._check_open()
        refusals = self._network._refusals
        if refusals:
            error = refusals.pop(0)
            if error == errno.EAGAIN:
                self._writable_at = trio.current_time() + 0.001
                raise BlockingIOError(error, "Resource temporarily unavailable")
            raise OSError(error, "No buffer space available")
        payload = bytes(data)
        self._network._transmit(self, payload, address)
        return len(payload)

    def send(self, data: Buffer) -> int:
        if self.peer is None:
            raise OSError(errno.EDESTADDRREQ, "Destination address required")
        return self.sendto(data, self.peer)

    def sendmsg(
        self, buffers: Iterable[Buffer], ancdata: Any = (), flags: int = 0, address: Any = None
    ) -> int:
        return self.sendto(b"".join(bytes(b) for b in buffers), address or self.peer)

    def recvfrom_into(self, buffer: bytearray) -> tuple[int, Any]:
        self._check_open()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        queue = self._queue
        now = trio.current_time()
        while queue and queue[0][0] <= now:
            _arrives, _order, payload, source = heapq.heappop(queue)
            if self.peer is not None and not self._from_peer(source):
                continue  # a connected socket takes datagrams from its peer only
            size = min(len(payload), len(buffer))
            buffer[:size] = payload[:size]
            return size, self._form(*source)
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    def _from_peer(self, source: tuple[str, int]) -> bool:
        host, port = str(self.peer[0]), int(self.peer[1])
        return port == source[1] and host.removeprefix("::ffff:") == source[0]

    async def wait_readable(self) -> None:
        while True:
            self._check_open()
            queue = self._queue
            now = trio.current_time()
            if self._error is not None or (queue and queue[0][0] <= now):
                await trio.lowlevel.checkpoint()
                return
            changed = self._changed
            with trio.move_on_at(queue[0][0] if queue else math.inf):
                await changed.wait()

    async def wait_writable(self) -> None:
        self._check_open()
        if self._writable_at > trio.current_time():
            await trio.sleep_until(self._writable_at)
        else:
            await trio.lowlevel.checkpoint()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._network._unbind(self)
            self._wake()

    def detach(self) -> int:
        raise OSError(errno.EBADF, "a fake socket has no descriptor")

    # -- the network's side ---------------------------------------------------------

    def _arrive(self, arrives: float, order: int, payload: bytes, source: tuple[str, int]) -> None:
        heapq.heappush(self._queue, (arrives, order, payload, source))
        self._wake()

    def _fail(self, error: OSError) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the fake socket is closed")
