"""Where endpoints get their sockets: real ones, or a fake network's."""

from __future__ import annotations

import contextvars
import socket as stdlib_socket
from typing import Any, cast

#: The trioudp.testing.FakeNetwork installed in this context, if any: while one
#: is, endpoints get its fake sockets instead of real ones.
FAKE_NETWORK: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "trioudp_fake_network", default=None
)


def new_socket(family: int) -> stdlib_socket.socket:
    """A UDP socket: a real one, or a fake one while a FakeNetwork is installed."""
    network = FAKE_NETWORK.get()
    if network is not None:
        return cast("stdlib_socket.socket", network.socket(family))
    return stdlib_socket.socket(family, stdlib_socket.SOCK_DGRAM)


def is_fake(sock: object) -> bool:
    return getattr(sock, "trioudp_fake", False) is True
