"""What the engine tells the trio shell: a closed set of frozen event types.

The shell reads them with ``match`` and ends in ``assert_never``, so that mypy
and pyright find an event kind it forgot (the shape of h11's ``_events.py``).
Messages are not events: they wait in the engine's queues (``_delivery.py``)
until the application takes them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

# At run time too, as compiled dataclasses (mypyc) read their annotations.
from ._delivery import Queue  # noqa: TC001
from ._message import Address  # noqa: TC001
from ._peer import Peer  # noqa: TC001
from ._reasons import LostReason  # noqa: TC001
from ._state import ConnectionState  # noqa: TC001

if TYPE_CHECKING:
    from typing import NoReturn, TypeAlias

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover

    def assert_never(value: NoReturn, /) -> NoReturn:
        raise AssertionError(f"unhandled value: {value!r}")


@dataclass(frozen=True, slots=True)
class PeerOpened:
    """A new peer sent a valid frame: the shell makes its Connection."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A peer's connection state changed."""

    peer: Peer
    state: ConnectionState


@dataclass(frozen=True, slots=True)
class SendProgress:
    """A peer's reliable sender made room or failed: whoever waits in ``send()``
    or ``flush()`` for it should look again."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The engine forgot a peer (its connection ends)."""

    peer: Peer
    reason: LostReason


@dataclass(frozen=True, slots=True)
class PeerMoved:
    """A keyed peer's session came from a new address (NAT rebinding): the
    peer, its connection and its state are now at ``peer.address``."""

    peer: Peer
    before: Address


@dataclass(frozen=True, slots=True)
class MessagesWaiting:
    """A queue that was empty has messages (or ended, or closed): wake its readers."""

    queue: Queue


Event: TypeAlias = (
    PeerOpened | StateChanged | SendProgress | PeerClosed | PeerMoved | MessagesWaiting
)

__all__ = [
    "Event",
    "MessagesWaiting",
    "PeerClosed",
    "PeerMoved",
    "PeerOpened",
    "SendProgress",
    "StateChanged",
    "assert_never",
]
