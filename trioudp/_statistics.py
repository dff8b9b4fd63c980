"""Statistics: mutable counters in the engine, frozen snapshots for users.

The accounting identity (docs/protocol.md, tested): every datagram received
ends in exactly one outcome, or is still pending in a reassembly or reorder
buffer::

    datagrams_received == datagrams_delivered + datagrams_duplicate
        + datagrams_late + datagrams_crc_error + datagrams_malformed
        + datagrams_stale_session + datagrams_reassembly_expired
        + datagrams_over_limit + datagrams_overflow_dropped + datagrams_pending
"""

from __future__ import annotations

import attrs

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
)

#: Counters kept per peer (and summed for an endpoint).
COUNTERS = (
    "datagrams_received",
    "bytes_received",
    *OUTCOMES,
    "messages_delivered",
    "messages_lost",
    "messages_overflow_dropped",
    "datagrams_sent",
    "bytes_sent",
    "messages_sent",
    "unreachable_errors",
    "session_changes",
)


class Counters:
    """The mutable counters the engine increments; one per peer, plus one for
    datagrams that no peer owns (garbage from unknown addresses)."""

    __slots__ = COUNTERS

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)

    def add(self, other: Counters) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def values(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    # Declared for type checkers; __slots__ above holds them.
    datagrams_received: int
    bytes_received: int
    datagrams_delivered: int
    datagrams_duplicate: int
    datagrams_late: int
    datagrams_crc_error: int
    datagrams_malformed: int
    datagrams_stale_session: int
    datagrams_reassembly_expired: int
    datagrams_over_limit: int
    datagrams_overflow_dropped: int
    messages_delivered: int
    messages_lost: int
    messages_overflow_dropped: int
    datagrams_sent: int
    bytes_sent: int
    messages_sent: int
    unreachable_errors: int
    session_changes: int


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
    receive_errors: int
    """Errors the kernel reported when reading the socket (counted, not raised)."""


def peer_statistics(counters: Counters, pending: int) -> PeerStatistics:
    """Freeze one peer's counters."""
    return PeerStatistics(datagrams_pending=pending, **counters.values())


def endpoint_statistics(
    counters: Counters,
    pending: int,
    *,
    peers: int,
    peers_opened: int,
    peers_closed: int,
    receive_errors: int,
) -> EndpointStatistics:
    """Freeze an endpoint's summed counters with its endpoint-only figures."""
    return EndpointStatistics(
        datagrams_pending=pending,
        peers=peers,
        peers_opened=peers_opened,
        peers_closed=peers_closed,
        receive_errors=receive_errors,
        **counters.values(),
    )
