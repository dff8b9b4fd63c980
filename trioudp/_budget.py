"""What an endpoint holds, charged at what it really costs.

Every byte an endpoint keeps for a peer is charged to that peer and to the
endpoint's total: fragments of partial messages, whole messages waiting in a
reorder buffer or a receive channel (a connection's own or the server's), and
reliable messages queued to send. ``total_buffer_bytes`` bounds the total;
``peer_buffer_bytes`` bounds what one peer holds in reassembly, reordering and
(reliable mode) messages it sent that the application has not received yet.

A charge is the payload plus the objects that carry it, measured with
tracemalloc on CPython 3.10 to 3.13 (tests/test_budget.py holds each within 2x
of the real growth): a 1-byte fragment costs about a hundred bytes, not one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._frame import FRAGMENT_OVERHEAD

if TYPE_CHECKING:
    from ._config import Config
    from ._peer import Peer

#: A partial message: its record and table of fragments, without the fragments.
PARTIAL_COST = 320
#: Each fragment stored in it, on top of its payload: a bytes object and its slot.
FRAGMENT_COST = 96
#: A whole message held for the application, on top of its payload: the
#: Message, its bytes object and its place in a queue.
MESSAGE_COST = 160
#: Waiting in a reorder buffer costs a little more (arrival time, table slot).
WAITING_COST = 100
#: A reliable message queued to send, and each of its datagrams' records.
SEND_MESSAGE_COST = 200
SEND_FRAGMENT_COST = 200


def partial_cost(held_fragments: int, held_bytes: int) -> int:
    """What a partial message holding these fragments is charged."""
    return PARTIAL_COST + held_fragments * FRAGMENT_COST + held_bytes


def message_cost(payload: int) -> int:
    """What a whole message waiting for the application is charged."""
    return payload + MESSAGE_COST


def send_cost(payload: int, datagrams: int) -> int:
    """What a reliable message queued to send in ``datagrams`` pieces is charged."""
    return payload + SEND_MESSAGE_COST + datagrams * SEND_FRAGMENT_COST


class Budget:
    """The endpoint's running total and the two limits. Peers keep their own
    share (``Peer.buffered``); this only adds up and compares."""

    __slots__ = ("headroom", "peer_limit", "total", "total_limit")

    def __init__(self, config: Config) -> None:
        self.total: int = 0
        self.total_limit: int = config.total_buffer_bytes
        self.peer_limit: int = config.peer_buffer_bytes
        #: Room for one largest message arriving: what reliable data other than
        #: a peer's next message, and reliable messages queued to send, leave
        #: free, so that the next message of every peer can always get in.
        chunk = max(config.max_datagram_size - FRAGMENT_OVERHEAD, 1)
        self.headroom: int = partial_cost(
            -(-config.max_message_size // chunk), config.max_message_size
        )

    def fits(self, peer: Peer, extra: int) -> bool:
        """Whether ``peer`` may hold ``extra`` more bytes, and the endpoint too."""
        return self.total + extra <= self.total_limit and peer.buffered + extra <= self.peer_limit
