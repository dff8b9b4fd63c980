"""Why things end: a peer lost, a datagram dropped. Public enums, so that code
can branch on a reason rather than parse a message."""

from __future__ import annotations

import enum


class LostReason(str, enum.Enum):
    """Why a connection ended or its peer was lost: ``Connection.ended``, and
    ``PeerLostError.reason``. A ``str`` enum, so ``connection.ended == "idle"``
    reads as before."""

    IDLE = "idle"
    """A server forgot the peer after ``idle_timeout`` seconds of silence."""
    REPLACED = "replaced"
    """The peer restarted: its new session is a new connection."""
    EVICTED = "evicted"
    """The server needed room for another peer (``max_peers``)."""
    CLOSED = "closed"
    """This side ended it: its handler returned, ``aclose()``, or the endpoint closed."""
    TIMEOUT = "timeout"
    """A reliable peer acknowledged nothing for ``give_up_timeout`` seconds."""
    NOT_RELIABLE = "not_reliable"
    """The peer was opened without ``reliable=True`` and refused reliable messages."""
    RELIABLE_ONLY = "reliable_only"
    """The peer was opened with ``reliable=True`` and refused unreliable messages."""
    REJECTED = "rejected"
    """The peer refused our frames for a reason this version does not know."""
    UNREACHABLE = "unreachable"
    """The kernel refused to send to the peer (no route, not permitted, too
    large for the path...): ``PeerLostError.errno`` says which."""


class DropReason(enum.Enum):
    """Why a received datagram did not become (part of) a delivered message. Each
    is one outcome of the accounting identity: its value names the
    ``statistics()`` field that counts it (``PeerStatistics.dropped(reason)``)."""

    DUPLICATE = "datagrams_duplicate"
    """A copy of a datagram or message already received."""
    LATE = "datagrams_late"
    """Its place in the order was already given up."""
    CRC_ERROR = "datagrams_crc_error"
    """Damaged on the way: the CRC32C did not match."""
    MALFORMED = "datagrams_malformed"
    """Not a valid frame."""
    STALE_SESSION = "datagrams_stale_session"
    """From a session other than the peer's current one: an earlier one, after it
    restarted, or a new one while the current one still talks (see docs/protocol.md)."""
    REASSEMBLY_EXPIRED = "datagrams_reassembly_expired"
    """A fragment of a message that never completed in time."""
    OVER_LIMIT = "datagrams_over_limit"
    """Over a limit: message size, buffered bytes, partial messages, peers."""
    OVERFLOW = "datagrams_overflow_dropped"
    """Its message was dropped from (or never put into) a full receive channel."""
    FILTERED = "datagrams_filtered"
    """Its topic is not subscribed to."""
    OWN = "datagrams_own"
    """This endpoint's own multicast or broadcast datagram, looped back."""
    UNAUTHENTICATED = "datagrams_unauthenticated"
    """Refused by authentication (``key=``)."""
    MISMATCHED = "datagrams_mismatched"
    """Reliable at an unreliable endpoint, or the reverse."""
