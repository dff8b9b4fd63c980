"""The peer table: which ``Peer`` an address has, made, found and forgotten.

One Peer per remote address that has sent a valid frame (any datagram in raw
mode), up to ``max_peers``; datagrams from further new addresses are dropped
(counted) until one leaves, but the application sending to a new address
makes room by forgetting the least recently active peer. A unicast frame with
a new session id may mean the peer restarted (``restarted`` says when): a
server's old Peer is closed (REPLACED) and a new one opened that remembers the
last few session ids as stale. With a key, a peer is also known by its session
wherever it comes from (``follow``, ``control_owner``). Group destinations
(multicast groups, broadcast addresses) have send state of their own, outside
the table.
"""

from __future__ import annotations

import random
from math import inf
from typing import TYPE_CHECKING

from ._control import AMPLIFICATION
from ._events import PeerClosed, PeerMoved, PeerOpened
from ._frame import KIND_PING
from ._peer import Peer
from ._reasons import DropReason, LostReason
from ._receiving import retire
from ._state import ConnectionState
from ._statistics import COUNTERS, Counters, EndpointStatistics, endpoint_statistics
from ._timers import KEEPALIVE_JITTER

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._config import Config
    from ._delivery import Delivery
    from ._events import Event
    from ._frame import Frame
    from ._message import Address
    from ._receiving import Reception, Stream
    from ._reliable import Sender

#: Without a key, a peer's new session replaces its current one only after the
#: current one has been silent this long (seconds; see PeerTable.restarted).
RESTART_QUIET = 1.0

#: Counters an endpoint keeps itself rather than summing its peers': delivery
#: and overflow are counted when a message enters or leaves a queue, possibly
#: for a peer that is already gone.
ENDPOINT_OWNED = frozenset(
    {
        "datagrams_delivered",
        "messages_delivered",
        "datagrams_overflow_dropped",
        "messages_overflow_dropped",
    }
)
SUMMED = tuple(name for name in COUNTERS if name not in ENDPOINT_OWNED)


class PeerTable:
    """The peers of one endpoint."""

    def __init__(
        self,
        config: Config,
        *,
        client: bool,
        key: bytes | None,
        new_session_id: Callable[[], int],
        reception: Reception,
        delivery: Delivery,
        emit: Callable[[Event], None],
        arm: Callable[[Peer], None],
        disarm: Callable[[Peer], None],
    ) -> None:
        self._config = config
        self._client = client
        self._key = key
        self._new_session_id = new_session_id
        self._reception = reception
        self._delivery = delivery
        self._emit = emit
        self._arm = arm
        self._disarm = disarm
        self.random = random.Random()
        self.peers: dict[Address, Peer] = {}
        #: Send state for group destinations (multicast groups, broadcast addresses).
        self.destinations: dict[Address, Peer] = {}
        #: Session ids of our own sends (to peers and groups), each with its
        #: peer, to recognise our own frames looped back or reflected to us, and
        #: whom an ACK from a new address is for.
        self.own_sessions: dict[int, Peer] = {}
        #: With a key: each peer by its unicast session, which is known wherever
        #: it comes from (a peer that moved address, or a recording played back).
        self.by_session: dict[int, Peer] = {}
        #: Counters of peers already forgotten.
        self.retired = Counters()
        self.opened = 0
        self.closed = 0
        #: Whether every new peer gets its own queue at once (``serve()`` runs).
        self.claim_new_peers = False

    def open(self, address: Address, now: float) -> Peer | None:
        """A new peer at ``address`` (None: ``max_peers`` are known)."""
        if len(self.peers) >= self._config.max_peers:
            return None
        peer = Peer(address, self._new_session_id(), now)
        self.schedule_keepalive(peer)
        self.peers[address] = peer
        self.own_sessions[peer.send_session] = peer
        self.opened += 1
        if self.claim_new_peers:
            self._delivery.claim(peer)
        if not self._client:
            self._emit(PeerOpened(peer))
        self._arm(peer)
        return peer

    def close(self, peer: Peer, reason: LostReason, now: float) -> None:
        """Forget ``peer``: its streams settle, its reliable sender stops, its
        queue ends (its messages wait a while for whoever reads it)."""
        if peer.closed:
            return
        reception = self._reception
        for stream in peer.streams():
            stale = reason is LostReason.REPLACED and stream is peer.unicast
            reception.end_stream(peer, stream, stale=stale)
        self._unindex(peer)
        peer.unicast = None
        peer.groups = {}
        peer.closed = True
        sender = peer.sender
        if sender is not None:
            if sender.unacknowledged and peer.lost is None:
                peer.lost = reason
            sender.fail(reason)
        peer.state = ConnectionState.CLOSED
        peer.keepalive_at = inf
        self._disarm(peer)
        if self.peers.get(peer.address) is peer:
            del self.peers[peer.address]
        self.own_sessions.pop(peer.send_session, None)
        self.retired.add(peer.counters, SUMMED)
        self.closed += 1
        if peer.queue is not None:
            self._delivery.end(peer.queue, now)
        self._emit(PeerClosed(peer, reason))

    def restarted(self, peer: Peer, stream: Stream, session: int, now: float) -> bool:
        """Whether a unicast frame of ``session``, not the current ``stream``'s,
        means ``peer`` restarted (False: the frame is dropped as stale).

        With a key, a newer authenticated session replaces the current one at
        once, and an earlier one (remembered, or older by its clock) never comes
        back. Without one, anyone who can put the peer's address on a datagram
        can make a session up, so another session (an earlier one too) replaces
        the current one only once that has gone quiet for RESTART_QUIET: one
        spoofed datagram cannot silence a peer that is talking, nor keep it out
        once it has gone quiet itself, and a sender of a fresh session in every
        datagram gets at most one session per RESTART_QUIET."""
        if self._key is not None:
            return session not in peer.retired and not self.older(session, stream.session)
        # A session retired before may come back the same way: a made-up session
        # that went quiet must not keep the real one out.
        return now - stream.last_activity >= RESTART_QUIET

    def older(self, session: int, current: int) -> bool:
        """With a key, session ids start with the second they were made (see
        keyed_session_id), so an authenticated session older than the current
        one is a recording played back: refused as stale."""
        return self._key is not None and session >> 32 < current >> 32

    def reopen(self, peer: Peer | None, address: Address, now: float) -> Peer | None:
        """A peer for a data frame from ``address``: new, or (``peer`` restarted)
        its successor, which remembers the sessions before (None: no room)."""
        retired = None
        if peer is not None:
            stream = peer.unicast
            assert stream is not None
            retired = retire(peer.retired, stream.session)
            self.close(peer, LostReason.REPLACED, now)
        fresh = self.open(address, now)
        if fresh is not None and retired is not None:
            fresh.retired = retired
            fresh.counters.session_changes += 1
        return fresh

    def known(self, peer: Peer, session: int) -> None:
        """With a key: ``peer`` is known by ``session`` (its unicast session, or
        the session of the PING that opened it) wherever it comes from."""
        if self._key is None:
            return
        self._unindex(peer)
        peer.known_as = session
        self.by_session[session] = peer

    def _unindex(self, peer: Peer) -> None:
        if peer.known_as is not None and self.by_session.get(peer.known_as) is peer:
            del self.by_session[peer.known_as]

    def may_move(self, peer: Peer, now: float) -> bool:
        """Whether a keyed peer's session, fresh from another address, moves
        there: only once it has been silent at its own address for
        RESTART_QUIET (a NAT rebinding leaves the old address silent; a session
        id two peers happen to share, or a relay of fresh frames, does not)."""
        return now - peer.heard >= RESTART_QUIET

    def follow(
        self, owner: Peer, peer: Peer | None, frame: Frame, address: Address, now: float
    ) -> DropReason | None:
        """A keyed frame of ``owner``'s session from another ``address`` (where
        ``peer`` is, if any). A frame received before is a duplicate wherever
        it comes from (a recording played back); a fresh one moves the session
        there (NAT rebinding), once it has been silent at its old address for
        RESTART_QUIET and unless another peer is there. None: moved; else why
        the frame is refused."""
        stream = owner.unicast
        if stream is not None and not self._reception.fresh(stream, frame):
            return DropReason.DUPLICATE
        if peer is not None or not self.may_move(owner, now):
            return DropReason.STALE_SESSION
        self.move(owner, address)
        return None

    def control_owner(
        self,
        frame: Frame,
        address: Address,
        now: float,
        acknowledges_new: Callable[[Sender, Frame], bool],
    ) -> tuple[Peer | None, bool]:
        """With a key, whose a control frame from an unknown address is: a PING
        of a session known elsewhere is that peer's, and opens nothing (a
        recording, or a peer whose next data frame or ACK moves it); an ACK that
        names our session towards a peer and acknowledges something new moves
        that peer here, as a fresh data frame does. (peer, moved); (None,
        False): nobody's."""
        if frame.kind == KIND_PING:
            return self.by_session.get(frame.session), False
        owner = self.own_sessions.get(frame.session)
        if (
            owner is not None
            and owner.sender is not None
            and self.peers.get(owner.address) is owner
            and self.may_move(owner, now)
            and acknowledges_new(owner.sender, frame)
        ):
            self.move(owner, address)
            return owner, True
        return None, False

    def move(self, peer: Peer, address: Address) -> None:
        """A keyed peer's session came, fresh, from ``address`` (NAT rebinding):
        the peer moves there, unvalidated (see Control.room): nothing beyond
        three times what comes from the new address goes to it until it is."""
        before = peer.address
        if self.peers.get(before) is peer:
            del self.peers[before]
        peer.address = address
        self.peers[address] = peer
        peer.validated = False
        peer.control_bytes = AMPLIFICATION * peer.counters.bytes_received
        self._emit(PeerMoved(peer, before))

    def peer_for(self, address: Address, now: float) -> Peer:
        """The peer to send to at ``address``, made if new (forgetting the least
        recently active one if ``max_peers`` are known). The application chose
        the address, so the amplification limit is lifted."""
        peer = self.peers.get(address)
        if peer is None:
            if len(self.peers) >= self._config.max_peers:
                victim = min(self.peers.values(), key=lambda p: p.last_activity)
                self.close(victim, LostReason.EVICTED, now)
            peer = self.open(address, now)
            assert peer is not None
            peer.state = ConnectionState.CONNECTING
        peer.validated = True
        return peer

    def destination(self, address: Address, now: float) -> Peer:
        """The send state for a group destination: no receive state, no events,
        never idle."""
        peer = self.destinations.get(address)
        if peer is None:
            peer = self.destinations[address] = Peer(address, self._new_session_id(), now)
        return peer

    def is_destination(self, peer: Peer) -> bool:
        return self.destinations.get(peer.address) is peer

    def live(self, peer: Peer, now: float) -> Peer:
        """The peer to send to for ``peer``: itself, or if it was forgotten
        (idle, restarted), whatever peer its address has now, so that one
        sequence space is used."""
        if peer.closed and not self.is_destination(peer):
            return self.peer_for(peer.address, now)
        return peer

    def schedule_keepalive(self, peer: Peer) -> None:
        keepalive = self._config.keepalive
        if keepalive is not None:
            # Never before last_sent + 0.8 x keepalive, which the KEEPALIVE timer finds due.
            peer.keepalive_at = peer.last_sent + keepalive * self.random.uniform(*KEEPALIVE_JITTER)

    def statistics(self, own: Counters, **endpoint: int) -> EndpointStatistics:
        """Every counter summed over the endpoint's own, forgotten peers', known
        peers' and destinations', with the endpoint's own figures."""
        total = Counters()
        total.add(own)
        total.add(self.retired)
        pending = unacknowledged = in_flight = 0
        for peer in self.peers.values():
            total.add(peer.counters, SUMMED)
            pending += peer.pending_datagrams
            if peer.sender is not None:
                unacknowledged += peer.sender.unacknowledged
                in_flight += peer.sender.bytes_in_flight
        for destination in self.destinations.values():
            total.add(destination.counters, SUMMED)
        return endpoint_statistics(
            total,
            pending,
            peers=len(self.peers),
            peers_opened=self.opened,
            peers_closed=self.closed,
            messages_unacknowledged=unacknowledged,
            bytes_in_flight=in_flight,
            **endpoint,
        )
