"""One remote address as the engine knows it.

A ``Peer`` is the engine's record; the trio shell holds it as an opaque token
(it reads ``address`` and stores its own Connection in ``handle``, which the
engine never reads) and asks the engine about everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import inf
from typing import TYPE_CHECKING

from ._reasons import LostReason  # noqa: TC001  (compiled dataclasses read it at run time)
from ._state import ConnectionState
from ._statistics import Counters, PeerStatistics, peer_statistics

if TYPE_CHECKING:
    from ._delivery import Queue
    from ._message import Address, Replier
    from ._receiving import Stream
    from ._reliable import Sender


_NEVER = -inf


@dataclass(frozen=True, slots=True)
class Loss:
    """Why sending to a peer failed for good, for the shell's PeerLostError."""

    reason: LostReason
    #: The kernel's error behind an UNREACHABLE (0 for other reasons).
    errno: int
    #: Reliable messages given up on.
    unacknowledged: int


class LostPeer(Exception):
    """Raised by the engine when the application sends to a peer it has lost;
    the shell turns it into PeerLostError."""

    def __init__(self, loss: Loss) -> None:
        super().__init__(loss.reason.value)
        self.loss = loss


class Peer:
    """Everything the engine knows about one remote address."""

    __slots__ = (
        "address",
        "buffered",
        "closed",
        "control_bytes",
        "counters",
        "errno",
        "groups",
        "handle",
        "heard",
        "keepalive_at",
        "known_as",
        "last_activity",
        "last_sent",
        "lost",
        "ping_due",
        "queue",
        "queued",
        "reject_at",
        "retired",
        "send_error_at",
        "send_sequence",
        "send_session",
        "sender",
        "state",
        "timer_at",
        "unicast",
        "validated",
    )

    def __init__(self, address: Address, send_session: int, now: float) -> None:
        self.address: Address = address
        #: The shell's object for this peer (its Connection, which messages reply
        #: through); never read here.
        self.handle: Replier | None = None
        self.counters: Counters = Counters()
        self.send_session: int = send_session
        self.send_sequence: int = 0
        #: Receive streams: the peer's unicast session, and its group sessions.
        self.unicast: Stream | None = None
        self.groups: dict[int, Stream] = {}
        #: Its last few unicast session ids (a tuple: no memory while there are
        #: none, as with most peers).
        self.retired: tuple[int, ...] = ()
        self.last_activity: float = now
        #: The deadline of its live entry in the engine's timer heap.
        self.timer_at: float = inf
        self.closed: bool = False
        #: The reliable send side, made when the first reliable message is queued.
        self.sender: Sender | None = None
        self.state: ConnectionState = ConnectionState.ESTABLISHED
        #: When a valid frame last came from the peer, and when we last sent to it.
        self.heard: float = now
        self.last_sent: float = now
        self.keepalive_at: float = inf
        self.ping_due: bool = False
        #: Why sending to the peer failed for good (None: it has not).
        self.lost: LostReason | None = None
        #: The kernel's last error sending to it (0: none), and when (-inf: never).
        self.errno: int = 0
        self.send_error_at: float = _NEVER
        #: Bytes charged to its own budget (partial messages, reorder buffers, and
        #: reliable messages not yet received by the application).
        self.buffered: int = 0
        #: Its messages waiting in queues (reliable mode: they count against its
        #: window), and its own queue once claimed.
        self.queued: int = 0
        self.queue: Queue | None = None
        #: Bytes the engine sent it by itself, and whether the address is
        #: validated (the application chose it, or it answered to our session),
        #: so that the amplification limit does not apply.
        self.control_bytes: int = 0
        self.validated: bool = False
        self.reject_at: float = _NEVER
        #: With a key: the session id it is known by wherever it comes from.
        self.known_as: int | None = None

    def __repr__(self) -> str:
        return f"<Peer {self.address!r}>"

    def streams(self) -> list[Stream]:
        streams = list(self.groups.values())
        if self.unicast is not None:
            streams.append(self.unicast)
        return streams

    @property
    def pending_datagrams(self) -> int:
        return sum(stream.pending_datagrams for stream in self.streams())

    def statistics(self) -> PeerStatistics:
        sender = self.sender
        if sender is None:
            return peer_statistics(self.counters, self.pending_datagrams)
        rtt = sender.rtt
        return peer_statistics(
            self.counters,
            self.pending_datagrams,
            messages_unacknowledged=sender.unacknowledged,
            bytes_in_flight=sender.bytes_in_flight,
            congestion_window=sender.window,
            max_datagram_size=sender.path.size,
            rtt_smoothed=rtt.smoothed if rtt.latest else 0.0,
            rtt_variation=rtt.variation if rtt.latest else 0.0,
            rtt_min=rtt.minimum,
        )
