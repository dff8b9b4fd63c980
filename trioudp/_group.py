"""One-to-many endpoints: multicast groups and broadcast."""

from __future__ import annotations

import ipaddress
import socket as stdlib_socket
from collections.abc import Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, cast

import trio

from ._config import make_config
from ._endpoint import Serving
from ._keys import check_key
from ._multicast import (
    broadcast_socket,
    group_destination,
    join_group,
    leave_group,
    multicast_address,
    multicast_socket,
)
from ._open import in_trio, running
from ._sockets import check_port, configure

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    from typing_extensions import Buffer, Unpack

    from ._config import Config, Options
    from ._message import Address


def _check_source(source: object) -> None:
    """A source-specific sender: one unicast address, as a str."""
    try:
        origin = ipaddress.ip_address(source) if isinstance(source, str) else None
    except ValueError:
        origin = None
    if origin is None or origin.is_multicast or origin.is_unspecified:
        raise ValueError(
            f"source must be the unicast IP address of the one sender to hear, as a str "
            f"such as '192.0.2.7', got {source!r}"
        )


class _Group(Serving):
    """An endpoint whose ``send()`` goes to a group destination."""

    _destination: Address

    async def send(self, payload: Buffer, *, topic: str = "", priority: int | None = None) -> None:
        """Send one message to every member (framed, fragmented if large, with an
        optional ``topic`` and ``priority``). Waits only while the kernel's
        buffer is full."""
        await self._send_group(self._destination, payload, topic, priority)

    async def _send_group(
        self, destination: Address, payload: Buffer, topic: str, priority: int | None
    ) -> None:
        peer = self._engine.destination(destination, trio.current_time())
        await self._send(peer, [payload], topic=topic, priority=priority)


class MulticastEndpoint(_Group):
    """A socket that has joined one or more multicast groups: iterate it for the
    messages sent to them (each with its sender's address, to ``reply()`` to),
    ``send()`` to the group. Made by :func:`open_multicast`.

    Every member of a group on any host gets a copy of each message; several
    endpoints on one host may listen on the same group and port. Replies sent
    with ``message.reply()`` go to the sender alone, by unicast.
    """

    def __init__(
        self,
        sock: stdlib_socket.socket,
        config: Config,
        topics: Iterable[str] | None,
        *,
        port: int,
        interface: str | int | None,
        key: tuple[bytes, ...] | None = None,
    ) -> None:
        super().__init__(sock, config, topics, key=key)
        self._port = port
        self._interface = interface
        self._memberships: list[tuple[str, str | None]] = []

    @property
    def groups(self) -> list[str]:
        """The groups joined, first the one ``send()`` goes to (none once closed)."""
        if self._closed:
            return []
        return list(dict.fromkeys(group for group, _source in self._memberships))

    def _group(self, group: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """``group`` checked: a multicast address of this endpoint's IP version."""
        address = multicast_address(group)
        if (address.version == 6) != (self._sock.family == stdlib_socket.AF_INET6):
            version = "IPv6" if self._sock.family == stdlib_socket.AF_INET6 else "IPv4"
            raise ValueError(
                f"{group} is not of this endpoint's IP version ({version}); open another "
                f"endpoint with open_multicast() for it"
            )
        return address

    def join(self, group: str, *, source: str | None = None) -> None:
        """Join ``group`` too (only datagrams from ``source``, if given: source-
        specific multicast, RFC 4607). Raises OSError naming the interfaces to
        try if the system cannot join."""
        self._check_open()
        address = self._group(group)
        if source is not None:
            _check_source(source)
        if (str(address), source) in self._memberships:
            raise ValueError(
                f"already a member of {group}" + (f" for source {source}" if source else "")
            )
        join_group(self._sock, str(address), self._interface, source)
        if not self._memberships:
            self._destination = group_destination(str(address), self._port, self._interface)
        self._memberships.append((str(address), source))

    def leave(self, group: str, *, source: str | None = None) -> None:
        """Leave ``group`` (the membership for ``source``, if it was joined with
        one): its datagrams stop arriving."""
        self._check_open()
        key = (str(self._group(group)), source)
        if key not in self._memberships:
            sources = [each for joined, each in self._memberships if joined == key[0] and each]
            hint = f" (joined with source={sources[0]!r}; pass it)" if sources else ""
            raise ValueError(
                f"not a member of {group}" + (f" for source {source}" if source else "") + hint
            )
        leave_group(self._sock, key[0], self._interface, source)
        self._memberships.remove(key)

    async def send(
        self,
        payload: Buffer,
        *,
        topic: str = "",
        priority: int | None = None,
        group: str | None = None,
    ) -> None:
        """Send one message to the first group joined, or to ``group``."""
        destination = self._destination
        if group is not None:
            self._group(group)
            destination = group_destination(group, self._port, self._interface)
        await self._send_group(destination, payload, topic, priority)


class BroadcastEndpoint(_Group):
    """A socket that sends to a broadcast address and receives broadcasts (and
    unicast) on its port. Made by :func:`open_broadcast`."""

    def __init__(
        self,
        sock: stdlib_socket.socket,
        config: Config,
        topics: Iterable[str] | None,
        *,
        destination: Address,
        key: tuple[bytes, ...] | None = None,
    ) -> None:
        super().__init__(sock, config, topics, key=key)
        self._destination = destination

    @property
    def destination(self) -> Address:
        """Where ``send()`` goes: the broadcast address and port."""
        return self._destination


def _unreliable(config: Config) -> Config:
    if config.reliable:
        raise ValueError(
            "reliable=True is for unicast: a group has no one to acknowledge; use "
            "open_udp_server/open_udp_connection for messages that must arrive"
        )
    return config


@asynccontextmanager
async def open_multicast(
    group: str | Sequence[str],
    port: int,
    *,
    interface: str | int | None = None,
    source: str | None = None,
    ttl: int = 1,
    loopback: bool = True,
    topics: Iterable[str] | None = None,
    key: Buffer | Sequence[Buffer] | None = None,
    config: Config | None = None,
    **options: Unpack[Options],
) -> AsyncGenerator[MulticastEndpoint, None]:
    """Join multicast ``group`` (or several, all IPv4 or all IPv6) on ``port``;
    leave it when the block ends.

    ``interface`` (a name such as "eth0", an index, or one of its addresses)
    picks the interface to join on and send from; IPv6 link-local groups
    (ff02::/16) need one. ``source`` joins source-specifically (only that
    sender's datagrams, RFC 4607). ``ttl`` is the IPv4 TTL or IPv6 hop limit:
    1, the default, keeps datagrams on the local network (RFC 1112).
    ``loopback`` lets other listeners on this host get what this one sends
    (never this endpoint itself). ``key`` authenticates every frame (see
    :func:`open_udp_server`). Options are :class:`Config`'s fields.
    """
    in_trio()
    secret = check_key(key)
    given = cast("object", group)
    if isinstance(given, (bytes, bytearray, memoryview)) or not isinstance(given, (str, Iterable)):
        raise TypeError(f"group must be a str or a list of str, got {group!r}")
    groups = [group] if isinstance(group, str) else list(group)
    if not groups:
        raise ValueError("open_multicast() needs at least one group")
    if check_port(port) == 0:
        raise ValueError(
            "port 0 would pick a random port the group's other members cannot know; pass "
            "the group's port, e.g. 5000"
        )
    chosen = _unreliable(make_config(config, options))
    sock = multicast_socket(groups, port, interface=interface, ttl=ttl, loopback=loopback)
    try:
        configure(sock, chosen)
    except BaseException:
        sock.close()
        raise
    endpoint = MulticastEndpoint(sock, chosen, topics, port=port, interface=interface, key=secret)
    try:
        for each in groups:
            endpoint.join(each, source=source)
    except BaseException:
        endpoint._close()
        raise
    async with running(endpoint):
        yield endpoint


@asynccontextmanager
async def open_broadcast(
    port: int,
    *,
    address: str = "255.255.255.255",
    interface: str | None = None,
    topics: Iterable[str] | None = None,
    key: Buffer | Sequence[Buffer] | None = None,
    config: Config | None = None,
    **options: Unpack[Options],
) -> AsyncGenerator[BroadcastEndpoint, None]:
    """Send to and receive broadcasts on ``port`` (IPv4; IPv6 has multicast
    instead). ``address`` is the limited broadcast 255.255.255.255 (the local
    link, default) or a subnet's broadcast address such as 192.168.1.255.
    ``interface`` (a name) ties the socket to one interface, which sending to
    255.255.255.255 may need on a host with several (and needs root). Options
    are :class:`Config`'s fields.
    """
    in_trio()
    check_port(port)
    secret = check_key(key)
    if address == "<broadcast>":  # Twisted's and the socket module's spelling
        address = "255.255.255.255"
    if not isinstance(address, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(
            f"address must be an IPv4 broadcast address as a str, such as "
            f"'255.255.255.255' or '192.168.1.255', got {address!r}"
        )
    try:
        broadcast = ipaddress.IPv4Address(address)
    except ValueError:
        raise ValueError(
            f"address must be an IPv4 broadcast address such as 255.255.255.255 or "
            f"192.168.1.255, got {address!r}"
        ) from None
    if broadcast.is_multicast:
        raise ValueError(f"{address} is a multicast group: use open_multicast() for it")
    chosen = _unreliable(make_config(config, options))
    sock = broadcast_socket(port, interface)
    try:
        configure(sock, chosen)
    except BaseException:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    endpoint = BroadcastEndpoint(
        sock, chosen, topics, destination=(address, port or bound_port), key=secret
    )
    async with running(endpoint):
        yield endpoint
