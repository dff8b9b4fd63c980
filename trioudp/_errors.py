"""trioudp's own exceptions (trio's are reused wherever one fits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._message import Address


class UnreachableError(OSError):
    """The kernel reported that the peer could not be reached: an ICMP port or
    host unreachable came back for an earlier datagram (Twisted's
    ``connectionRefused``). Nothing is broken: the connection stays usable, so
    catch it and carry on (the peer may start later) or give up.

    Raised once per report, by the next ``receive()`` of a client connection;
    ``errno`` is ECONNREFUSED, EHOSTUNREACH, ENETUNREACH or similar.
    """

    def __init__(self, errno: int, strerror: str, address: Address) -> None:
        super().__init__(
            errno,
            f"{strerror}: {address[0]} port {address[1]} did not take an earlier datagram "
            f"(nothing listening there?). The connection is still usable",
        )
        self.address = address


class PeerLostError(trio.BrokenResourceError):
    """A reliable peer is gone: it acknowledged nothing for ``give_up_timeout``
    seconds, or it refused reliable delivery (it was opened without
    ``reliable=True``). Raised by ``send()`` and ``flush()`` of its connection;
    ``unacknowledged`` messages were not confirmed and may not have arrived.
    The connection cannot send again: open a new one (or, on a server, wait for
    the peer to come back, which starts a new connection).
    """

    def __init__(self, message: str, address: Address, unacknowledged: int) -> None:
        super().__init__(message)
        self.address = address
        self.unacknowledged = unacknowledged
