"""The observable state of a connection."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable


class ConnectionState(enum.Enum):
    """Where a connection stands, as ``connection.state.value`` (a trio-util
    ``AsyncValue``: ``await connection.state.wait_value(ConnectionState.LOST)``).

    ``CONNECTING`` until the first valid frame from the peer arrives (a server's
    connections start ``ESTABLISHED``: a frame made them). ``IDLE`` after
    ``keepalive`` seconds without hearing from the peer, ``ESTABLISHED`` again
    when it speaks. ``LOST`` after ``dead_timeout`` seconds of silence, or for
    good once a reliable peer stopped acknowledging (``give_up_timeout``) or
    refused reliable delivery. ``CLOSED`` when the connection ended: for good,
    so a task waiting for another state would wait forever once the
    connection is closed by another task. Wait for either:
    ``await connection.state.wait_value(lambda s: s in (LOST, CLOSED))``.
    """

    CONNECTING = "connecting"
    ESTABLISHED = "established"
    IDLE = "idle"
    LOST = "lost"
    CLOSED = "closed"


class StateValue(Protocol):
    """The typed face of a connection's trio-util ``AsyncValue`` (which is what
    ``connection.state`` is at run time)."""

    @property
    def value(self) -> ConnectionState:
        """The state now."""
        ...

    async def wait_value(
        self,
        value_or_predicate: ConnectionState | Callable[[ConnectionState], bool],
        *,
        held_for: float = 0,
    ) -> ConnectionState:
        """Wait until the state is this one (or satisfies the predicate)."""
        ...

    async def wait_transition(
        self,
        value_or_predicate: ConnectionState
        | Callable[[ConnectionState, ConnectionState], bool]
        | None = None,
    ) -> tuple[ConnectionState, ConnectionState]:
        """Wait for the next change (to this state); gives (new, old)."""
        ...
