"""Control frames: ACK, PING and REJECT, in and out, and the amplification limit.

Out. A reliable stream's ``Acknowledger`` says when an ACK is due; the ACK
carries the receiver's window (the highest message number it takes now). A
PING goes as a keepalive, or from a reliable sender whose peer's window is
closed. A REJECT answers a reliable frame at an unreliable endpoint (or the
reverse), at most once a second per peer and once a second for all unknown
addresses together, never to a group frame.

The amplification limit (RFC 9000 §8.1). Until the application has sent to an
address itself, or an ACK from it names our session towards it (which only a
receiver of what we sent there knows: our PING is the challenge), what the
engine sends it by itself comes to at most three times the bytes received
from it: ACKs, REJECTs and keepalive PINGs here, and the reliable sender's
retransmissions and probes (``Sender.transmit``; a probe round that cannot
send a fragment sends a PING). The first transmission of what the
application sends is its own choice, and not counted. An ACK that does not
fit loses ranges, down to none, before it is withheld; anything else that
does not fit is withheld (``control_suppressed``; a reliable fragment waits,
and fails at ``give_up_timeout`` if the address never answers). So a spoofed
source address cannot turn an endpoint into an amplifier of anything it sends
by itself. Sizes are those of the frames as encoded (with a key, a 16-byte
tag rather than a 4-byte CRC).

In. An ACK goes to the peer's sender (for this peer's session only); a PING is
answered with an ACK at once (one that is a path MTU probe, with a packet
number in its body, has that number acknowledged: _pmtu.py); a REJECT fails
the peer's sender with the reason it gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ._frame import (
    ACK_FIXED_SIZE,
    ACK_RANGE_SIZE,
    KIND_ACK,
    KIND_PING,
    KIND_REJECT,
    MAX_ACK_RANGES,
    REJECT_NOT_RELIABLE,
    REJECT_RELIABLE_ONLY,
    BadFrame,
    control_size,
    decode_ack_untrusted,
    encode_ack_body,
    encode_control,
    probe_packet,
    sealer,
    sequence_difference,
)
from ._reasons import LostReason

if TYPE_CHECKING:
    from ._config import Config
    from ._frame import Ack, Frame
    from ._message import Address
    from ._peer import Peer
    from ._receiving import Reception
    from ._recovery import Acknowledger
    from ._reliable import Sender
    from ._sending import Output
    from ._statistics import Counters

#: Bytes sent to an unvalidated address per byte received from it.
AMPLIFICATION = 3
#: Ranges an ACK carries besides those of packets new since the last one: the
#: newest; a packet whose ACK was lost and whose range has dropped out is taken
#: for lost and sent again.
ACK_RANGES_SENT = 8
#: Seconds between two REJECTs to one peer (and to unknown addresses together).
REJECT_INTERVAL = 1.0
#: How soon a receiver answers data it had to refuse (its window or buffers were full).
MAX_ACK_DELAY_REFUSED = 0.025
_REJECT_REASONS = {
    REJECT_NOT_RELIABLE: LostReason.NOT_RELIABLE,
    REJECT_RELIABLE_ONLY: LostReason.RELIABLE_ONLY,
}


class Coordinator(Protocol):
    """What control frames ask of the engine."""

    def ready(self, peer: Peer) -> None:
        """``peer`` has output to produce at the next ``datagrams_to_send``."""

    def arm(self, peer: Peer) -> None:
        """``peer``'s timers may have moved earlier."""

    def heard(self, peer: Peer, now: float) -> None:
        """A valid frame came from ``peer``."""

    def fail(self, peer: Peer, reason: LostReason, errno: int = 0) -> None:
        """Sending to ``peer`` failed for good."""

    def progress(self, peer: Peer) -> None:
        """``peer``'s reliable sender moved: wake whoever waits on it."""


class Control:
    """The control frames of one endpoint."""

    def __init__(
        self,
        config: Config,
        key: bytes | None,
        output: Output,
        reception: Reception,
        coordinator: Coordinator,
        own: Counters,
    ) -> None:
        self._config = config
        self._key = key
        self._seal = sealer(key)
        self._output = output
        self._reception = reception
        self._engine = coordinator
        self._own = own
        #: When the last REJECT to an address no peer owns went.
        self._reject_at = -float("inf")
        #: The size of an ACK with no ranges, as encoded.
        self._empty_ack = control_size(ACK_FIXED_SIZE, key)

    # -- the amplification limit ----------------------------------------------------

    def room(self, peer: Peer) -> float:
        """Bytes the engine may still send ``peer`` by itself (inf: validated)."""
        if peer.validated:
            return float("inf")
        return AMPLIFICATION * peer.counters.bytes_received - peer.control_bytes

    def send(self, peer: Peer, datagram: bytes, now: float) -> bool:
        """Put an ACK or a REJECT in the output, within the amplification limit
        (False: withheld, counted)."""
        size = len(datagram)
        if not peer.validated:
            if size > self.room(peer):
                peer.counters.control_suppressed += 1
                return False
            peer.control_bytes += size
        self._output.add(peer, datagram, now)
        return True

    def _frame(self, kind: int, session: int, value: int, body: bytes) -> bytes:
        return encode_control(
            kind, session, value, body, self._seal, authenticated=self._key is not None
        )

    # -- out ------------------------------------------------------------------------

    def acknowledge(self, peer: Peer, packet: int, taken: bool, now: float) -> None:
        """A reliable data frame was taken (acknowledge it soon) or refused (say
        so soon, acknowledging nothing new, so the sender knows how far it may go)."""
        stream = peer.unicast
        assert stream is not None
        assert stream.acks is not None
        acks = stream.acks
        if taken:
            acks.record(packet, now)
        else:
            acks.due = min(acks.due, now + MAX_ACK_DELAY_REFUSED)
        if acks.due <= now:
            self._engine.ready(peer)
        else:
            self._engine.arm(peer)

    def window_limit(self, peer: Peer) -> int:
        """The highest message number ``peer``'s reliable stream takes now."""
        stream = peer.unicast
        assert stream is not None
        credit = max(self._config.reorder_window - peer.queued, 0)
        return (stream.ordered().base - 1 + credit) & 0xFFFFFFFF

    def window_opened(self, peer: Peer) -> None:
        """The application took messages of ``peer``'s: if its window opened by a
        quarter since the last ACK said, tell it now."""
        stream = peer.unicast
        acks = None if stream is None else stream.acks
        if peer.closed or acks is None or acks.limit_sent < 0:
            return
        window_size = self._config.reorder_window
        if sequence_difference(self.window_limit(peer), acks.limit_sent) >= max(
            window_size // 4, 1
        ):
            acks.due = 0.0
            self._engine.ready(peer)

    def ack_if_due(self, peer: Peer, now: float) -> None:
        stream = peer.unicast
        acks: Acknowledger | None = None if stream is None else stream.acks
        if stream is None or acks is None or acks.due > now:
            return
        limit = self.window_limit(peer)
        most = MAX_ACK_RANGES
        if not peer.validated:
            # Fewer ranges rather than no ACK within the amplification limit.
            spare = self.room(peer) - self._empty_ack
            most = int(max(min(most, spare // ACK_RANGE_SIZE), 0))
        body = acks.body(
            now, limit, peer.send_session, stream.ordered().base, ACK_RANGES_SENT, most
        )
        if self.send(peer, self._frame(KIND_ACK, stream.session, limit, body), now):
            peer.counters.acks_sent += 1

    def ping(self, peer: Peer, now: float) -> None:
        """A keepalive PING (a reliable sender makes its own, as a probe),
        within the amplification limit."""
        if self.send(peer, self._frame(KIND_PING, peer.send_session, peer.send_sequence, b""), now):
            peer.counters.pings_sent += 1

    def reject(self, peer: Peer | None, frame: Frame, address: Address, now: float) -> None:
        """A reliable frame at an unreliable endpoint, or the reverse: answered
        with a REJECT (not to a group frame, at most once a second)."""
        if frame.group:
            return
        last = self._reject_at if peer is None else peer.reject_at
        counters = self._own if peer is None else peer.counters
        if now - last < REJECT_INTERVAL:
            counters.control_suppressed += 1
            return
        reason = REJECT_NOT_RELIABLE if frame.packet >= 0 else REJECT_RELIABLE_ONLY
        datagram = self._frame(KIND_REJECT, frame.session, reason, b"")
        if peer is None:
            # Nobody to charge it to: one a second for all strangers together,
            # never larger than the frame it answers.
            self._reject_at = now
            counters.datagrams_sent += 1
            counters.bytes_sent += len(datagram)
            self._output.add_to(address, datagram)
        elif self.send(peer, datagram, now):
            peer.reject_at = now

    # -- in ---------------------------------------------------------------------------

    def receive(self, peer: Peer, frame: Frame, now: float) -> None:
        """A CONTROL frame from a known peer (counted received already)."""
        counters = peer.counters
        kind = frame.kind
        ack: Ack | None = None
        if kind == KIND_ACK:
            try:
                ack = decode_ack_untrusted(frame.payload)
            except BadFrame as exc:
                counters.drop(exc.reason)
                return
        if kind != KIND_PING and frame.session != peer.send_session:
            counters.datagrams_stale_session += 1
            return
        counters.datagrams_control += 1
        peer.last_activity = now
        self._engine.heard(peer, now)
        if kind == KIND_PING:
            self._pinged(peer, frame, now)
        elif ack is not None:
            # It names our session towards it, which only a receiver of what we
            # sent there knows (or, with a key, could authenticate): the address
            # is really there (RFC 9000 §8.2, the session as the challenge).
            peer.validated = True
            sender = peer.sender
            if sender is not None:
                sender.on_ack(ack, frame.sequence, now)
                self._engine.progress(peer)
                self._engine.ready(peer)
        else:
            reason = _REJECT_REASONS.get(frame.sequence, LostReason.REJECTED)
            self._engine.fail(peer, reason)

    def _pinged(self, peer: Peer, frame: Frame, now: float) -> None:
        """A PING: answered with an ACK now (an empty one where no reliable
        stream of this session is known)."""
        stream = peer.unicast
        if stream is not None and stream.session == frame.session and stream.acks is not None:
            if sequence_difference(frame.sequence, stream.ordered().base) > 0:
                self._reception.catch_up(peer, stream, frame.sequence)
            packet = probe_packet(frame.payload)
            if packet is not None:  # a path MTU probe: it arrived whole
                stream.acks.record(packet, now)
            stream.acks.due = now
        else:
            limit = (frame.sequence + self._config.reorder_window - 1) & 0xFFFFFFFF
            body = encode_ack_body(0.0, peer.send_session, frame.sequence, [])
            if self.send(peer, self._frame(KIND_ACK, frame.session, limit, body), now):
                peer.counters.acks_sent += 1
        self._engine.ready(peer)

    def acknowledges_new(self, sender: Sender, frame: Frame) -> bool:
        """Whether an ACK frame decodes and acknowledges a packet beyond every
        one ``sender`` had acknowledged (a recording acknowledges nothing new)."""
        try:
            ack = decode_ack_untrusted(frame.payload)
        except BadFrame:
            return False
        return sender.acknowledges_new(ack)

    def unknown(self, frame: Frame, size: int) -> None:
        """A control frame from an address no peer owns (not a PING): stale, or
        malformed if it is an ACK that does not decode."""
        own = self._own
        own.datagrams_received += 1
        own.bytes_received += size
        if frame.kind == KIND_ACK:
            try:
                decode_ack_untrusted(frame.payload)
            except BadFrame as exc:
                own.drop(exc.reason)
                return
        own.datagrams_stale_session += 1
