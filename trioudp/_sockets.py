"""Making, adopting and addressing UDP sockets."""

from __future__ import annotations

import errno
import ipaddress
import socket as stdlib_socket
import sys
from contextlib import suppress
from typing import TYPE_CHECKING, Any, NoReturn, cast

import attrs
import trio

from ._multicast import set_priority
from ._pmtu import will_probe
from ._reuseport import check_reuse_port, reuse_port
from ._sockethook import new_socket

if TYPE_CHECKING:
    from ._config import Config
    from ._message import Address

#: Sockets made before giving up on one that is not connected to itself.
SELF_CONNECT_ATTEMPTS = 8


#: Linux's SO_MEMINFO (not in the socket module): the socket's memory figures,
#: the ninth of which (SK_MEMINFO_DROPS) counts what the kernel dropped for it.
SO_MEMINFO = 55
_MEMINFO_SIZE = 9 * 4


def kernel_drops(sock: stdlib_socket.socket) -> int | None:
    """Datagrams the kernel dropped for ``sock`` since it was made, chiefly for
    want of room in its receive buffer (the count SO_RXQ_OVFL reports); None
    where the kernel does not say (not Linux, or before 4.12)."""
    try:
        info = sock.getsockopt(stdlib_socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO_SIZE)
    except OSError:
        return None
    if len(info) < _MEMINFO_SIZE:
        return None
    return int.from_bytes(info[32:36], sys.byteorder)


#: Linux's IP_MTU_DISCOVER and IPV6_MTU_DISCOVER, and their PMTUDISC_DO and
#: PMTUDISC_PROBE settings: every datagram goes with Don't Fragment, never cut
#: up by IP (what path MTU probes need, RFC 8899 §6.1: a probe too large for
#: the path is lost, not fragmented; one too large for the interface fails
#: with EMSGSIZE). PROBE also leaves the kernel's own path MTU guess out.
_IP_MTU_DISCOVER = 10
_IPV6_MTU_DISCOVER = 23
_PMTUDISC_DO = 2
_PMTUDISC_PROBE = 3


def _forbid_fragmentation(sock: stdlib_socket.socket, config: Config) -> None:
    """For path MTU probing (``probing``): on a socket trioudp made itself."""
    if not (sys.platform.startswith("linux") and config.reliable and will_probe(config)):
        return
    with suppress(OSError):
        if sock.family == stdlib_socket.AF_INET6:
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _PMTUDISC_PROBE)
            # Its IPv4-mapped peers go over IPv4.
            sock.setsockopt(stdlib_socket.IPPROTO_IP, _IP_MTU_DISCOVER, _PMTUDISC_PROBE)
        else:
            sock.setsockopt(stdlib_socket.IPPROTO_IP, _IP_MTU_DISCOVER, _PMTUDISC_PROBE)


def probing(sock: stdlib_socket.socket, config: Config) -> Config:
    """``config``, with path MTU probing left off unless the kernel sends
    ``sock``'s datagrams whole or not at all (set for sockets trioudp makes,
    on Linux, with ``max_datagram_size`` at most PROBED_FROM; an adopted
    socket keeps its owner's choice): else IP could fragment a probe too large
    for the path, and it would seem to fit."""
    if not config.reliable or not config.probe_path_mtu:
        return config
    if sock.family == stdlib_socket.AF_INET6:
        level, option = stdlib_socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER
    else:
        level, option = stdlib_socket.IPPROTO_IP, _IP_MTU_DISCOVER
    try:
        forbidden = sock.getsockopt(level, option) in (_PMTUDISC_DO, _PMTUDISC_PROBE)
    except OSError:
        forbidden = False
    return config if forbidden else attrs.evolve(config, probe_path_mtu=False)


def check_port(port: object) -> int:
    """A port to bind or send to: an int (not a bool, str or float), 0 to 65535."""
    if type(port) is not int:
        raise TypeError(
            f"port must be an integer from 0 to 65535 (0 picks a free one), got "
            f"{port!r} ({type(port).__name__})"
        )
    if not 0 <= port <= 65535:
        raise ValueError(
            f"port must be an integer from 0 to 65535 (0 picks a free one), got {port!r}"
        )
    return port


def check_host(host: object, *, peer: bool) -> None:
    """A host is a name or an address as a str; None (or "") means every
    interface, which only a server can bind."""
    if peer:
        if not isinstance(host, str):
            raise TypeError(
                f"host must name the peer to connect to, as a str such as '127.0.0.1' "
                f"or 'example.com', got {host!r}; to take messages from any peer, "
                f"use open_udp_server(None, port)"
            )
        if not host:
            raise ValueError(
                "host must name the peer to connect to, such as '127.0.0.1' or "
                "'example.com', got ''; to take messages from any peer, use "
                "open_udp_server(None, port)"
            )
    elif host is not None and not isinstance(host, str):
        raise TypeError(
            f"host must be an address or name to bind to, as a str such as '127.0.0.1' or "
            f"'::1', or None for every interface, got {host!r}"
        )


def check_peer_port(port: object) -> int:
    """A peer's port: 1 to 65535 (0 only means "any" when binding)."""
    if type(port) is int and port == 0:
        raise ValueError(
            "port must be the peer's port, 1 to 65535, got 0: port 0 picks a free "
            "port only when binding (local_address=('', 0) or open_udp_server)"
        )
    return check_port(port)


def configure(sock: stdlib_socket.socket, config: Config) -> None:
    if config.receive_buffer_size is not None:
        sock.setsockopt(
            stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, config.receive_buffer_size
        )
    if config.send_buffer_size is not None:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, config.send_buffer_size)
    if config.priority:
        set_priority(sock, config.priority)
    _forbid_fragmentation(sock, config)
    sock.setblocking(False)


async def _resolve(host: str, port: int, *, family: int = 0, flags: int = 0) -> tuple[int, Any]:
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, family, stdlib_socket.SOCK_DGRAM, 0, flags
        )
    except stdlib_socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from exc
    family, _type, _proto, _name, sockaddr = infos[0]
    return int(family), sockaddr


def _ip(sockaddr: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
    except ValueError:
        return None


def _check_unicast(host: str, sockaddr: Any, *, peer: bool) -> None:
    """Refuse a group, broadcast or wildcard address where one peer or one
    local address belongs, pointing to the API for it."""
    ip = _ip(sockaddr)
    if ip is None:
        return
    if ip.is_multicast:
        raise ValueError(f"{host} is a multicast group: use open_multicast() for it")
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{host} is the broadcast address: use open_broadcast() for it")
    if peer and ip.is_unspecified:
        raise ValueError(
            f"{host!r} means every interface, not a peer: connect to '127.0.0.1' or "
            f"the server's address"
        )


def _reraise(exc: OSError, host: object, what: str) -> NoReturn:
    """Raise a bind's or connect's error for ``host`` again, saying what to do
    about it where there is something to say."""
    explained = _explain(exc, host, what)
    if explained is exc:
        raise exc
    raise explained from exc


def _explain(exc: OSError, host: object, what: str) -> OSError:
    """A bind's or connect's error for ``host``, with what to do about it."""
    text = {
        errno.EADDRINUSE: "it is already in use; stop the other program or pass port 0",
        errno.EADDRNOTAVAIL: "it is not an address of this machine; pass None (or '') for "
        "every interface, or one of this machine's addresses",
        errno.EACCES: "that needs broadcast permission; use open_broadcast() to send to a subnet",
    }.get(exc.errno or 0)
    if text is None and exc.errno == errno.EINVAL and isinstance(host, str):
        ip = _ip((host,))
        if ip is not None and ip.version == 6 and ip.is_link_local and "%" not in host:
            text = f"a link-local address needs its interface, e.g. '{host}%eth0'"
    if text is None:
        return exc
    return type(exc)(exc.errno, f"cannot {what}: {text}")


async def server_socket(
    host: str | None, port: int, config: Config, *, shared: bool = False
) -> stdlib_socket.socket:
    """A UDP socket bound to ``host``:``port``. No host (None or "") means every
    interface: dual-stack IPv6 where the system allows it, IPv4 otherwise.
    ``shared``: in the port's SO_REUSEPORT group (Linux)."""
    check_host(host, peer=False)
    check_port(port)
    if shared:
        check_reuse_port()
    family: int
    sockaddr: Any
    if host is None or host == "":
        try:
            sock = new_socket(stdlib_socket.AF_INET6)
        except OSError:
            family, sockaddr = stdlib_socket.AF_INET, ("0.0.0.0", port)
        else:
            try:
                sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 0)
            except OSError:
                sock.close()
                family, sockaddr = stdlib_socket.AF_INET, ("0.0.0.0", port)
            else:
                return _bind(sock, ("::", port), config, shared)
    else:
        family, sockaddr = await _resolve(host, port, flags=stdlib_socket.AI_PASSIVE)
        _check_unicast(host, sockaddr, peer=False)
    return _bind(new_socket(family), sockaddr, config, shared)


def _bind(
    sock: stdlib_socket.socket, sockaddr: Any, config: Config, shared: bool = False
) -> stdlib_socket.socket:
    try:
        configure(sock, config)
        if shared:
            reuse_port(sock)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        _reraise(exc, sockaddr[0], f"bind UDP {sockaddr[0]} port {sockaddr[1]}")
    except BaseException:
        sock.close()
        raise
    return sock


async def client_socket(
    host: str, port: int, local_address: tuple[str, int] | None, config: Config
) -> stdlib_socket.socket:
    """A UDP socket connected to ``host``:``port`` (resolved once, first address).

    Connecting to a local port nobody holds may give the socket that very port
    as its own (the kernel picks the ephemeral port after the destination is
    known): a socket talking to itself, which would answer its own messages.
    Such a socket is closed and another one made; a ``local_address`` chosen by
    the caller is kept as it is."""
    check_host(host, peer=True)
    check_peer_port(port)
    if local_address is not None:
        _check_local_address(local_address)
    family, sockaddr = await _resolve(host, port)
    _check_unicast(host, sockaddr, peer=True)
    for _attempt in range(SELF_CONNECT_ATTEMPTS):
        sock = new_socket(family)
        try:
            configure(sock, config)
            if local_address is not None:
                _bind_local(sock, local_address, family)
            try:
                sock.connect(sockaddr)
            except OSError as exc:
                _reraise(exc, host, f"connect to {host} port {port}")
            if local_address is not None or sock.getsockname() != sock.getpeername():
                return sock
        except BaseException:
            sock.close()
            raise
        sock.close()
    raise OSError(
        errno.EADDRNOTAVAIL,
        f"connecting to {host} port {port} kept giving a socket connected to itself; "
        f"pass local_address= to choose the local port",
    )


def _check_local_address(local_address: object) -> None:
    parts = cast("tuple[object, ...]", local_address) if isinstance(local_address, tuple) else None
    if parts is None or len(parts) not in (2, 4):
        parts = (None, None)
    if not isinstance(parts[0], str) or type(parts[1]) is not int:
        raise TypeError(
            f"local_address must be a (host, port) tuple of this machine, such as "
            f"('', 0) for any address and a free port, got {local_address!r}"
        )
    check_port(parts[1])


def _bind_local(sock: stdlib_socket.socket, local_address: Any, family: int) -> None:
    """Bind a client's socket to the ``local_address`` its user chose."""
    host = local_address[0]
    try:
        infos = stdlib_socket.getaddrinfo(
            host or None,
            local_address[1],
            family,
            stdlib_socket.SOCK_DGRAM,
            0,
            stdlib_socket.AI_PASSIVE,
        )
    except stdlib_socket.gaierror:
        version = "IPv6" if family == stdlib_socket.AF_INET6 else "IPv4"
        raise ValueError(
            f"local_address {local_address!r} is not an {version} address of this machine, "
            f"and the peer is {version}; pass ('', 0) or an {version} address"
        ) from None
    try:
        sock.bind(infos[0][4] if len(local_address) == 2 else local_address)
    except OSError as exc:
        _reraise(exc, host, f"bind local_address {local_address!r}")


def adopt_socket(sock: stdlib_socket.socket | trio.socket.SocketType) -> stdlib_socket.socket:
    """Check that ``sock`` is a bound UDP socket and take it over (a trio socket
    is detached: its descriptor is ours from now on)."""
    if not isinstance(sock, (stdlib_socket.socket, trio.socket.SocketType)):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(
            f"from_socket() takes a socket.socket or trio socket, got {type(sock).__name__}"
        )
    if sock.type != stdlib_socket.SOCK_DGRAM:
        raise ValueError(f"from_socket() needs a UDP socket (SOCK_DGRAM), got {sock.type!r}")
    if sock.fileno() == -1:
        raise ValueError("from_socket() needs an open socket; this one is closed")
    if sock.family not in (stdlib_socket.AF_INET, stdlib_socket.AF_INET6):
        raise ValueError(f"from_socket() needs an AF_INET or AF_INET6 socket, got {sock.family!r}")
    if sock.getsockname()[1] == 0:
        raise ValueError("from_socket() needs a bound socket: call sock.bind((host, port)) first")
    try:
        sock.getpeername()
    except OSError:
        pass
    else:
        raise ValueError(
            "from_socket() serves any peer and needs an unconnected socket; for one peer "
            "use open_udp_connection()"
        )
    if isinstance(sock, trio.socket.SocketType):
        family, kind, proto = sock.family, sock.type, sock.proto
        sock = stdlib_socket.socket(family, kind, proto, fileno=sock.detach())
    sock.setblocking(False)
    return sock


def peer_name(sock: stdlib_socket.socket) -> Address | None:
    try:
        return sock.getpeername()  # type: ignore[no-any-return]
    except OSError:
        return None


class AddressBook:
    """Turns the addresses users pass to ``send()`` into the exact form the
    socket reports (so they find the same peer): IPv4 literals on a dual-stack
    socket become ``::ffff:a.b.c.d``, IPv6 ones get flowinfo and scope id, names
    are resolved once and remembered."""

    LIMIT = 4096

    def __init__(self, family: int) -> None:
        self._family = family
        self._known: dict[object, Address] = {}

    async def lookup(self, address: object) -> Address:
        try:
            known = self._known.get(address)
        except TypeError:  # unhashable: a list, say
            known = None
        if known is not None:
            return known
        parts = cast("tuple[object, ...]", address) if isinstance(address, tuple) else None
        if parts is None or len(parts) not in (2, 4):
            raise TypeError(f"an address is a (host, port) tuple, got {address!r}")
        host, port = parts[0], check_peer_port(parts[1])
        if not isinstance(host, str):
            raise TypeError(f"an address's host must be a str, got {host!r}")
        if len(parts) == 4:
            flowinfo, scope_id = parts[2], parts[3]
            if type(flowinfo) is not int or not 0 <= flowinfo <= 0xFFFFF:
                raise ValueError(
                    f"an IPv6 address's flowinfo is an integer from 0 to 0xFFFFF (20 bits), "
                    f"got {flowinfo!r}; pass (host, port) to leave it out"
                )
            if type(scope_id) is not int or not 0 <= scope_id <= 0xFFFFFFFF:
                raise ValueError(
                    f"an IPv6 address's scope_id is an interface index from 0 to 0xFFFFFFFF, "
                    f"got {scope_id!r}; pass (host, port) to leave it out"
                )
        family = self._family
        flags = stdlib_socket.AI_V4MAPPED if family == stdlib_socket.AF_INET6 else 0
        sockaddr: Any
        try:
            infos = stdlib_socket.getaddrinfo(
                host,
                port,
                family,
                stdlib_socket.SOCK_DGRAM,
                0,
                flags | stdlib_socket.AI_NUMERICHOST,
            )
            sockaddr = infos[0][4]
        except stdlib_socket.gaierror:
            ip = _ip((host,))
            if ip is not None and ip.version == 6 and family == stdlib_socket.AF_INET:
                raise ValueError(
                    f"this endpoint's socket is IPv4 and cannot send to the IPv6 address "
                    f"{host}; bind the server to None or '::' for both"
                ) from None
            _family, sockaddr = await _resolve(host, port, family=family, flags=flags)
        if family == stdlib_socket.AF_INET6 and len(parts) == 4:
            sockaddr = (sockaddr[0], sockaddr[1], parts[2], parts[3] or sockaddr[3])
        if len(self._known) >= self.LIMIT:
            self._known.clear()
        self._known[address] = sockaddr
        return sockaddr  # type: ignore[no-any-return]
