"""Socket options for multicast, broadcast and priority: the one place that
calls setsockopt for group membership, TTL/hop limit, loopback, the outgoing
interface and DSCP.

Python's socket module lacks several of the Linux constants used here on some
versions (source-specific multicast arrived in 3.12, IP_MULTICAST_ALL not at
all), so they are defined below with their Linux values. The structures are
packed by hand, with the layout of <linux/in.h> and <linux/in6.h> on 64-bit
Linux (``group_req`` and ``group_source_req`` hold 8-byte aligned
``sockaddr_storage`` members, hence the 4 bytes of padding after the
interface index).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import ipaddress
import socket
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._sockethook import is_fake, new_socket

if TYPE_CHECKING:
    from ._message import Address

IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)
IP_ADD_SOURCE_MEMBERSHIP = getattr(socket, "IP_ADD_SOURCE_MEMBERSHIP", 39)
IP_DROP_SOURCE_MEMBERSHIP = getattr(socket, "IP_DROP_SOURCE_MEMBERSHIP", 40)
MCAST_JOIN_SOURCE_GROUP = getattr(socket, "MCAST_JOIN_SOURCE_GROUP", 46)
MCAST_LEAVE_SOURCE_GROUP = getattr(socket, "MCAST_LEAVE_SOURCE_GROUP", 47)
IPV6_JOIN_GROUP = getattr(socket, "IPV6_JOIN_GROUP", 20)
IPV6_LEAVE_GROUP = getattr(socket, "IPV6_LEAVE_GROUP", 21)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)

_SOCKADDR_STORAGE = 128


class Priority(enum.IntEnum):
    """Differentiated Services code points (RFC 2474) for the usual needs. A
    priority marks each datagram's DSCP (the top six bits of the IPv4 TOS byte
    or IPv6 traffic class); networks that honour it queue the marked traffic
    accordingly, others ignore it. Any DSCP from 0 to 63 may be given instead.
    """

    LOW = 1
    """LE, lower effort (RFC 8622): bulk and background traffic that may wait."""
    NORMAL = 0
    """DF (CS0), default forwarding: ordinary best-effort traffic."""
    HIGH = 34
    """AF41 (RFC 2597, RFC 4594 multimedia conferencing): interactive traffic
    that should not wait behind bulk transfers."""
    CRITICAL = 46
    """EF, expedited forwarding (RFC 3246): low loss, latency and jitter, for
    control loops and telemetry that must arrive now. Keep it to small,
    low-rate flows: networks police EF."""


def check_priority(priority: object) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 63:
        raise ValueError(
            f"priority must be a trioudp.Priority or a DSCP from 0 to 63, got {priority!r}"
        )
    return int(priority)


def set_priority(sock: socket.socket, dscp: int) -> None:
    """Mark every datagram ``sock`` sends with ``dscp``."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
    if sock.family == socket.AF_INET or _dual_stack(sock):
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)


def priority_cmsg(family: int, dscp: int) -> tuple[int, int, bytes]:
    """Ancillary data that marks one datagram with ``dscp`` (for sendmsg)."""
    if family == socket.AF_INET6:
        return (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, struct.pack("i", dscp << 2))
    return (socket.IPPROTO_IP, socket.IP_TOS, struct.pack("i", dscp << 2))


def _dual_stack(sock: socket.socket) -> bool:
    try:
        return sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    except OSError:
        return False


# -- interfaces -------------------------------------------------------------------


def interface_names() -> list[str]:
    return [name for _index, name in socket.if_nameindex()]


def _no_interface(interface: object) -> OSError:
    return OSError(
        errno.ENODEV,
        f"no network interface {interface!r}; pass interface= as one of "
        f"{', '.join(interface_names())} (a name, an index or one of its addresses)",
    )


def _ipv6_interface_of(address: ipaddress.IPv6Address) -> int:
    """The index of the interface that has ``address`` (Linux /proc/net/if_inet6)."""
    try:
        table = Path("/proc/net/if_inet6").read_text()
    except OSError:
        return 0
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == address.exploded.replace(":", ""):
            return int(fields[1], 16)
    return 0


def resolve_interface(family: int, interface: str | int | None) -> tuple[int, str]:
    """``interface`` (a name, an index or an address) as ``(index, IPv4
    address)``; 0 and "0.0.0.0" mean "let the kernel choose"."""
    if interface is None:
        return 0, "0.0.0.0"
    if isinstance(interface, int) and not isinstance(interface, bool):
        if interface not in dict(socket.if_nameindex()):
            raise _no_interface(interface)
        return interface, "0.0.0.0"
    if not isinstance(interface, str):
        raise TypeError(f"interface must be a name, an index or an address, got {interface!r}")
    try:
        return socket.if_nametoindex(interface), "0.0.0.0"
    except OSError:
        pass
    try:
        address = ipaddress.ip_address(interface.split("%")[0])
    except ValueError:
        raise _no_interface(interface) from None
    if isinstance(address, ipaddress.IPv4Address):
        if family == socket.AF_INET6:
            raise ValueError(f"an IPv6 group needs an IPv6 interface, got {interface!r}")
        return 0, str(address)
    index = _ipv6_interface_of(address)
    if not index:
        raise _no_interface(interface)
    return index, "0.0.0.0"


# -- groups -----------------------------------------------------------------------


def multicast_address(group: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(group, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(
            f"a multicast group is an address as a str, such as '239.255.0.1' or "
            f"'ff15::1', got {group!r}"
        )
    try:
        address = ipaddress.ip_address(group)
    except ValueError:
        raise ValueError(
            f"{group!r} is not an IP address; a multicast group is an address such as "
            f"239.255.0.1 or ff15::1"
        ) from None
    if not address.is_multicast:
        raise ValueError(
            f"{group} is not a multicast address (IPv4 224.0.0.0/4, IPv6 ff00::/8); "
            f"for one peer use open_udp_connection, for a subnet open_broadcast"
        )
    return address


def _sockaddr(address: ipaddress.IPv4Address | ipaddress.IPv6Address, scope: int = 0) -> bytes:
    if isinstance(address, ipaddress.IPv4Address):
        raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + address.packed
    else:
        raw = (
            struct.pack("=H", socket.AF_INET6)
            + struct.pack("!HI", 0, 0)
            + address.packed
            + struct.pack("=I", scope)
        )
    return raw.ljust(_SOCKADDR_STORAGE, b"\0")


def _membership(
    sock: socket.socket, group: str, interface: str | int | None, source: str | None, join: bool
) -> None:
    address = multicast_address(group)
    if is_fake(sock):
        fake: Any = sock
        (fake.join if join else fake.leave)(str(address))
        return
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    index, local = resolve_interface(family, interface)
    level = socket.IPPROTO_IPV6 if family == socket.AF_INET6 else socket.IPPROTO_IP
    if source is not None:
        try:
            origin = ipaddress.ip_address(source)
        except ValueError:
            raise ValueError(
                f"source must be the IP address of the sender, got {source!r}"
            ) from None
        if origin.version != address.version:
            raise ValueError(f"source {source} and group {group} are of different IP versions")
        if family == socket.AF_INET and not index:
            option = IP_ADD_SOURCE_MEMBERSHIP if join else IP_DROP_SOURCE_MEMBERSHIP
            value = address.packed + socket.inet_aton(local) + origin.packed
        else:
            option = MCAST_JOIN_SOURCE_GROUP if join else MCAST_LEAVE_SOURCE_GROUP
            value = struct.pack("I4x", index) + _sockaddr(address, index) + _sockaddr(origin, index)
    elif family == socket.AF_INET:
        option = socket.IP_ADD_MEMBERSHIP if join else socket.IP_DROP_MEMBERSHIP
        value = address.packed + socket.inet_aton(local) + struct.pack("i", index)  # ip_mreqn
    else:
        option = IPV6_JOIN_GROUP if join else IPV6_LEAVE_GROUP
        value = address.packed + struct.pack("I", index)  # ipv6_mreq
    try:
        sock.setsockopt(level, option, value)
    except OSError as exc:
        if not join:
            raise
        where = f"interface {interface!r}" if interface is not None else "the default interface"
        raise OSError(
            exc.errno,
            f"cannot join multicast group {group}"
            + (f" from source {source}" if source else "")
            + f" on {where}: {exc.strerror}; pass interface= one of "
            f"{', '.join(interface_names())} (the system may have no multicast route)",
        ) from exc


def join_group(
    sock: socket.socket, group: str, interface: str | int | None, source: str | None
) -> None:
    _membership(sock, group, interface, source, join=True)


def leave_group(
    sock: socket.socket, group: str, interface: str | int | None, source: str | None
) -> None:
    _membership(sock, group, interface, source, join=False)


def group_destination(group: str, port: int, interface: str | int | None) -> Address:
    """Where to send to reach ``group``: IPv6 link-local groups need a scope."""
    address = multicast_address(group)
    if address.version == 4:
        return (str(address), port)
    index, _local = resolve_interface(socket.AF_INET6, interface)
    return (str(address), port, 0, index)


def multicast_socket(
    groups: list[str],
    port: int,
    *,
    interface: str | int | None,
    ttl: int,
    loopback: bool,
) -> socket.socket:
    """A bound UDP socket set up for ``groups`` (not yet joined): a shared port so
    that every listener on this host receives, only the groups it joins
    (IP_MULTICAST_ALL off), the TTL or hop limit, loopback and the outgoing
    interface."""
    addresses = [multicast_address(group) for group in groups]
    versions = {address.version for address in addresses}
    if len(versions) != 1:
        raise ValueError("the groups of one endpoint must all be IPv4 or all IPv6")
    if type(ttl) is not int or not 0 <= ttl <= 255:
        raise ValueError(f"ttl must be an integer from 0 to 255 (1 stays on the link), got {ttl!r}")
    if not isinstance(loopback, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(
            f"loopback must be True (other listeners on this host get what is sent) or "
            f"False, got {loopback!r}"
        )
    ipv6 = versions == {6}
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    sock = new_socket(family)
    if is_fake(sock):
        interface = None  # a fake network has no interfaces to choose from
    try:
        index, local = resolve_interface(family, interface)
        _share_port(sock)
        if ipv6:
            _optional(sock, socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loopback))
            if index:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        else:
            _optional(sock, socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loopback))
            if index or local != "0.0.0.0":
                mreqn = (
                    socket.inet_aton("0.0.0.0") + socket.inet_aton(local) + struct.pack("i", index)
                )
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        # Bound to every address, the socket also takes unicast replies to its
        # port (Twisted's multicast pair relies on that); with IP_MULTICAST_ALL
        # off it still gets only the groups it joined itself.
        if ipv6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(("::", port, 0, 0))
        else:
            sock.bind(("0.0.0.0", port))
    except BaseException:
        sock.close()
        raise
    return sock


def broadcast_socket(port: int, interface: str | None) -> socket.socket:
    """A UDP socket allowed to broadcast, bound to ``port`` on every address (a
    socket must be, to receive broadcasts), optionally tied to one interface."""
    sock = new_socket(socket.AF_INET)
    try:
        _share_port(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if interface is not None and not is_fake(sock):
            if not isinstance(interface, str) or interface not in interface_names():  # pyright: ignore[reportUnnecessaryIsInstance]
                raise _no_interface(interface)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            except PermissionError as exc:
                raise PermissionError(
                    exc.errno,
                    f"tying a socket to interface {interface!r} (SO_BINDTODEVICE) needs "
                    f"CAP_NET_RAW; run as root, or leave interface=None and send to the "
                    f"subnet's broadcast address instead",
                ) from exc
        sock.bind(("0.0.0.0", port))
    except BaseException:
        sock.close()
        raise
    return sock


def _share_port(sock: socket.socket) -> None:
    """Let every listener on this host bind the port and get each multicast and
    broadcast datagram. On Linux SO_REUSEADDR does that; SO_REUSEPORT must not
    be added there: with it, a 6.x kernel was seen handing a group's datagrams
    to a socket of the port that had not joined the group, instead of the one
    that had (tests/test_netns.py::test_several_groups_on_one_port). The BSDs
    and macOS need SO_REUSEPORT for the sharing."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if not sys.platform.startswith("linux"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def _optional(sock: socket.socket, level: int, option: int, value: int) -> None:
    """Set an option older kernels may lack (their default is then in force)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(level, option, value)
