"""trioudp's own exceptions (trio's are reused wherever one fits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
