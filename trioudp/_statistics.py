"""Statistics: mutable counters in the engine, frozen snapshots for users.

The accounting identity (docs/protocol.md, tested): every datagram that
reaches the socket is received or dropped by the kernel
(``datagrams_kernel_dropped``, Linux), and every datagram received ends in
exactly one outcome, or is still pending in a reassembly or reorder buffer::

    datagrams_received == datagrams_delivered + datagrams_duplicate
        + datagrams_late + datagrams_crc_error + datagrams_malformed
        + datagrams_stale_session + datagrams_reassembly_expired
        + datagrams_over_limit + datagrams_overflow_dropped + datagrams_filtered
        + datagrams_own + datagrams_unauthenticated + datagrams_control
        + datagrams_mismatched + datagrams_pending

A reliable sender's messages close too: ``messages_sent == messages_acked +
messages_failed + messages_unacknowledged``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ._reasons import DropReason

#: The per-datagram outcomes that add up to ``datagrams_received`` (with pending).
OUTCOMES = (
    "datagrams_delivered",
    "datagrams_duplicate",
    "datagrams_late",
    "datagrams_crc_error",
    "datagrams_malformed",
    "datagrams_stale_session",
    "datagrams_reassembly_expired",
    "datagrams_over_limit",
    "datagrams_overflow_dropped",
    "datagrams_filtered",
    "datagrams_own",
    "datagrams_unauthenticated",
    "datagrams_control",
    "datagrams_mismatched",
)


@attrs.define(slots=True)
class Counters:
    """The mutable counters the engine increments; one per peer, plus one for
    datagrams that no peer owns (garbage from unknown addresses). Their meaning
    is documented on :class:`PeerStatistics`, which has the same fields."""

    datagrams_received: int = 0
    bytes_received: int = 0
    datagrams_delivered: int = 0
    datagrams_duplicate: int = 0
    datagrams_late: int = 0
    datagrams_crc_error: int = 0
    datagrams_malformed: int = 0
    datagrams_stale_session: int = 0
    datagrams_reassembly_expired: int = 0
    datagrams_over_limit: int = 0
    datagrams_overflow_dropped: int = 0
    datagrams_filtered: int = 0
    datagrams_own: int = 0
    datagrams_unauthenticated: int = 0
    datagrams_control: int = 0
    datagrams_mismatched: int = 0
    messages_delivered: int = 0
    messages_lost: int = 0
    messages_overflow_dropped: int = 0
    datagrams_sent: int = 0
    bytes_sent: int = 0
    messages_sent: int = 0
    unreachable_errors: int = 0
    session_changes: int = 0
    datagrams_send_dropped: int = 0
    messages_acked: int = 0
    messages_failed: int = 0
    datagrams_retransmitted: int = 0
    datagrams_spurious: int = 0
    receiver_restarts: int = 0
    probe_timeouts: int = 0
    acks_sent: int = 0
    acks_received: int = 0
    pings_sent: int = 0
    control_suppressed: int = 0

    def add(self, other: Counters, names: tuple[str, ...] | None = None) -> None:
        """Add ``other``'s counters (only ``names``, if given) to these."""
        for name in COUNTERS if names is None else names:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def values(self) -> dict[str, int]:
        return attrs.asdict(self)

    def drop(self, reason: DropReason, count: int = 1) -> None:
        """Count ``count`` datagrams dropped for ``reason`` (its outcome field)."""
        setattr(self, reason.value, getattr(self, reason.value) + count)


#: Every counter's name.
COUNTERS = tuple(field.name for field in attrs.fields(Counters))


@attrs.frozen(kw_only=True)
class PeerStatistics:
    """What happened between this endpoint and one peer (or, as
    :class:`EndpointStatistics`, all of them).

    Every received datagram ends in exactly one ``datagrams_*`` outcome below or is
    still ``datagrams_pending``; ``datagrams_accounted`` adds them up and always
    equals ``datagrams_received``.
    """

    datagrams_received: int
    """Datagrams read from the socket."""
    bytes_received: int
    """Their bytes, headers included."""
    datagrams_delivered: int
    """Datagrams that carried (part of) a message put into a receive channel."""
    datagrams_duplicate: int
    """Copies of a datagram or message already received."""
    datagrams_late: int
    """Datagrams of a message whose place in the order was already given up."""
    datagrams_crc_error: int
    """Datagrams whose CRC32C did not match: damaged on the way."""
    datagrams_malformed: int
    """Datagrams that were not valid frames (wrong magic or version, bad fields)."""
    datagrams_stale_session: int
    """Datagrams from a peer's earlier session, after it restarted."""
    datagrams_reassembly_expired: int
    """Fragments of a message that stayed incomplete past ``reassembly_timeout``."""
    datagrams_over_limit: int
    """Datagrams dropped by a limit: message size, buffer bytes, partial messages,
    or (for an endpoint) ``max_peers``."""
    datagrams_overflow_dropped: int
    """Datagrams of messages dropped because a receive channel was full."""
    datagrams_filtered: int
    """Datagrams of messages whose topic this endpoint is not subscribed to."""
    datagrams_own: int
    """This endpoint's own multicast or broadcast datagrams, looped back to it."""
    datagrams_unauthenticated: int
    """Datagrams refused by authentication: no tag while this endpoint has a
    key, a tag that does not match it (forged, damaged, another key), or a tag
    this endpoint has no key for."""
    datagrams_control: int
    """Control frames taken: acknowledgements, PINGs (answered), REJECTs."""
    datagrams_mismatched: int
    """Frames a reliable endpoint got from an unreliable one, or the reverse:
    not delivered, answered with a REJECT that makes the sender fail clearly."""
    datagrams_pending: int
    """Datagrams held right now in reassembly or reorder buffers."""
    messages_delivered: int
    """Messages put into a receive channel."""
    messages_lost: int
    """Messages never received whose place in the order was given up (ordered
    mode), or that fell out of the duplicate window unseen (unordered mode)."""
    messages_overflow_dropped: int
    """Messages dropped because a receive channel was full."""
    datagrams_sent: int
    """Datagrams handed to the kernel."""
    bytes_sent: int
    """Their bytes, headers included."""
    messages_sent: int
    """Messages sent."""
    unreachable_errors: int
    """ICMP errors (port or host unreachable) reported by the kernel."""
    session_changes: int
    """Times the peer started a new session (restarted) while known."""
    datagrams_send_dropped: int
    """Datagrams to send that the kernel refused: no buffer (ENOBUFS) even after
    about half a second of backing off, no route, a firewall, an address that
    cannot be sent to (see the error policy in docs/design.md); dropped, as a
    network would."""
    messages_acked: int
    """Reliable messages the peer acknowledged (every fragment of them)."""
    messages_failed: int
    """Reliable messages given up on: the peer stopped answering for
    ``give_up_timeout`` or refused reliable delivery."""
    datagrams_retransmitted: int
    """Datagrams sent again because they were lost or a probe timeout fired
    (also counted in ``datagrams_sent``)."""
    datagrams_spurious: int
    """Datagrams taken for lost that were acknowledged later (only reordered):
    each one makes the loss detector wait for more reordering."""
    receiver_restarts: int
    """Times the peer's acknowledgements came from a new receiver (it restarted
    or forgot this session): every message it had not delivered was sent again."""
    probe_timeouts: int
    """Times nothing was acknowledged for a probe timeout (RFC 9002 PTO)."""
    acks_sent: int
    """Acknowledgements sent (in ``datagrams_sent`` too)."""
    acks_received: int
    """Acknowledgements that acknowledged something new."""
    pings_sent: int
    """PINGs sent: keepalives, and probes while the peer's window is closed."""
    control_suppressed: int
    """Datagrams the engine would have sent by itself (ACKs, REJECTs, PINGs,
    reliable retransmissions and probes) that were withheld because they would
    have made this endpoint send more than three times the bytes the peer sent
    it before it was validated (RFC 9000 §8.1, against spoofed addresses), or
    REJECTs sooner than one a second."""
    messages_unacknowledged: int = 0
    """Reliable messages queued or in flight, not yet acknowledged."""
    bytes_in_flight: int = 0
    """Bytes of reliable datagrams sent and not yet acknowledged or lost."""
    congestion_window: int = 0
    """Bytes the congestion controller lets be in flight (reliable mode)."""
    max_datagram_size: int = 0
    """The largest datagram (UDP payload) the reliable sender cuts new messages
    to: ``max_datagram_size``, or the larger size a path MTU probe confirmed
    (``probe_path_mtu``; reliable mode, 0 otherwise)."""
    rtt_smoothed: float = 0.0
    """Smoothed round-trip time in seconds (RFC 9002; reliable mode, 0 before a sample)."""
    rtt_variation: float = 0.0
    """Its mean deviation in seconds."""
    rtt_min: float = 0.0
    """The smallest round-trip time seen, in seconds."""

    def dropped(self, reason: DropReason) -> int:
        """Datagrams dropped for ``reason``: the outcome field it names."""
        return int(getattr(self, reason.value))

    @property
    def datagrams_accounted(self) -> int:
        """The sum of every outcome and ``datagrams_pending``."""
        total: int = self.datagrams_pending
        for name in OUTCOMES:
            total += getattr(self, name)
        return total


@attrs.frozen(kw_only=True)
class EndpointStatistics(PeerStatistics):
    """Totals for an endpoint: every peer it has known, plus datagrams that no peer
    owned (garbage from unknown addresses, peers over ``max_peers``)."""

    peers: int
    """Peers known right now."""
    peers_opened: int
    """Peers that have become known."""
    peers_closed: int
    """Peers forgotten: idle, replaced by a restart, or their handler returned."""
    receive_errors: int = 0
    """Errors the kernel reported when reading the socket (counted, not raised)."""
    datagrams_offloaded: int = 0
    """Datagrams sent in GSO runs: several per system call (``offload``)."""
    datagrams_coalesced: int = 0
    """Datagrams that arrived several per read, coalesced by the kernel (GRO)."""
    datagrams_kernel_dropped: int = 0
    """Datagrams that reached the socket and were dropped by the kernel before
    they could be read, since the endpoint took the socket: for want of room in
    its receive buffer (nearly always), or by a socket filter the application
    attached, or for a bad UDP checksum (Linux, the count SO_RXQ_OVFL and
    SO_MEMINFO report; 0 elsewhere). They never count as
    ``datagrams_received``: every datagram that arrived is received or dropped
    here. Under a flood the socket is read only as fast as the
    application takes messages, so what it cannot take is dropped here, in
    the kernel, undecoded (docs/performance.md)."""
    bytes_buffered: int = 0
    """What the endpoint holds right now for its peers and the application:
    partial messages, reorder buffers, messages waiting in receive channels and
    reliable messages queued to send, each charged its real cost (payload and
    the objects that carry it). At most ``total_buffer_bytes``, but for one
    reliable message per peer queued to send (so a reply never waits for the
    application to read)."""


def peer_statistics(counters: Counters, pending: int, **reliable: Any) -> PeerStatistics:
    """Freeze one peer's counters (with its reliable sender's figures, if any)."""
    return PeerStatistics(datagrams_pending=pending, **counters.values(), **reliable)


def endpoint_statistics(
    counters: Counters,
    pending: int,
    *,
    peers: int,
    **endpoint: Any,
) -> EndpointStatistics:
    """Freeze an endpoint's summed counters with its endpoint-only figures
    (``endpoint``: receive errors, offload counts, reliable senders' sums)."""
    return EndpointStatistics(
        datagrams_pending=pending, peers=peers, **counters.values(), **endpoint
    )
