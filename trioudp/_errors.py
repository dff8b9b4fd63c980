"""trioudp's own exceptions (trio's are reused wherever one fits)."""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING

import trio

from ._reasons import LostReason

if TYPE_CHECKING:
    from collections.abc import Awaitable

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
    seconds, refused reliable delivery (it was opened without
    ``reliable=True``), or could not be sent to at all. Raised by ``send()`` and
    ``flush()`` of its connection; ``reason`` (a :class:`LostReason`) says
    which, ``errno`` the kernel's error for ``UNREACHABLE``, and
    ``unacknowledged`` messages were not confirmed and may not have arrived.
    The connection cannot send again: open a new one (or, on a server, wait for
    the peer to come back, which starts a new connection).
    """

    def __init__(
        self,
        address: Address,
        reason: LostReason,
        unacknowledged: int = 0,
        *,
        errno: int = 0,
        give_up_timeout: float | None = None,
    ) -> None:
        reason = LostReason(reason)  # its string value too, as documented
        super().__init__(_lost_text(address, reason, unacknowledged, errno, give_up_timeout))
        self.address = address
        self.reason = reason
        self.unacknowledged = unacknowledged
        self.errno = errno


def _lost_text(
    address: Address,
    reason: LostReason,
    unacknowledged: int,
    errno: int,
    give_up_timeout: float | None,
) -> str:
    where = f"{address[0]} port {address[1]}"
    if reason is LostReason.NOT_RELIABLE:
        text = (
            f"the peer at {where} does not take reliable messages (it was opened without "
            f"reliable=True) and dropped them; open both ends with reliable=True"
        )
    elif reason is LostReason.RELIABLE_ONLY:
        text = (
            f"the peer at {where} takes only reliable messages (it was opened with "
            f"reliable=True) and dropped ours; open this end with reliable=True too"
        )
    elif reason is LostReason.TIMEOUT:
        text = (
            f"the peer at {where} answered nothing for {give_up_timeout} s "
            f"(give_up_timeout): it is gone or cut off"
        )
    elif reason is LostReason.UNREACHABLE:
        text = (
            f"the kernel refused to send to {where}: [Errno {errno}] {os.strerror(errno)}; "
            f"the peer cannot be reached from here (route, firewall, address or size)"
        )
    else:
        text = f"the connection to {where} ended ({reason.value})"
    if unacknowledged:
        text += f"; {unacknowledged} message{'s' if unacknowledged > 1 else ''} not acknowledged"
    return text


def check_handler(where: str, handler: object) -> None:
    """Refuse at once what cannot be a handler (rather than when the first
    message comes)."""
    if not callable(handler):
        raise TypeError(
            f"{where} takes an async function, e.g. async def handler(connection): ..., "
            f"got {handler!r}"
        )


def awaitable(where: str, handler: object, result: object) -> Awaitable[object]:
    """What a handler returned, which must be awaitable: a plain function that
    returns None was meant to be ``async def``."""
    if not inspect.isawaitable(result):
        raise TypeError(
            f"the {where} handler {getattr(handler, '__qualname__', handler)!r} returned "
            f"{type(result).__name__}, not an awaitable: make it async def"
        )
    return result
