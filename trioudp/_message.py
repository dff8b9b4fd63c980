"""The message a receive channel hands out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from typing import TypeAlias

    from typing_extensions import Buffer

#: A socket address as the socket module gives it: ``(host, port)`` for IPv4,
#: ``(host, port, flowinfo, scope_id)`` for IPv6.
Address: TypeAlias = tuple[str, int] | tuple[str, int, int, int]


class Replier(Protocol):
    """What a message replies through: the connection it arrived on."""

    async def send(
        self, payload: Buffer, /, *, topic: str = "", priority: int | None = None
    ) -> None: ...


class Origin(Protocol):
    """The engine's record of the peer a message came from; the trio layer sets
    its ``handle`` to the peer's Connection before the message is handed out."""

    handle: Replier | None


def _short(payload: bytes) -> str:
    if len(payload) <= 32:
        return repr(payload)
    return f"{payload[:24]!r}... ({len(payload)} bytes)"


@attrs.frozen(slots=True, eq=False)
class Message:
    """One whole message from a peer: reassembled, CRC-checked, deduplicated and
    (unless ``ordered=False``) in the order the peer sent it."""

    payload: bytes = attrs.field(repr=_short)
    """The message's bytes."""
    address: Address
    """The peer's address, as the socket reported it."""
    sequence: int | None
    """The peer's sequence number for it (wraps at 2**32); None in raw mode."""
    topic: str
    """The topic the sender gave it ("" for none)."""
    _origin: Origin | None = attrs.field(repr=False, alias="origin")
    _datagrams: int = attrs.field(repr=False, alias="datagrams")

    async def reply(self, payload: Buffer, *, topic: str = "", priority: int | None = None) -> None:
        """Send ``payload`` back to the peer this message came from, on the socket
        it arrived on (for a multicast message: to its sender, not the group)."""
        handle = None if self._origin is None else self._origin.handle
        if handle is None:
            raise RuntimeError("this Message was made by hand and has no connection to reply on")
        await handle.send(payload, topic=topic, priority=priority)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.payload, self.address, self.sequence, self.topic) == (
            other.payload,
            other.address,
            other.sequence,
            other.topic,
        )

    def __hash__(self) -> int:
        return hash((self.payload, self.address, self.sequence, self.topic))
