"""Path MTU discovery for a reliable sender (DPLPMTUD, RFC 8899), sans-IO.

A reliable sender starts with datagrams of at most ``max_datagram_size``
(1200 bytes by default, which cross any Internet path: RFC 8899's base
PLPMTU). Once it has cut a message into fragments, so that larger datagrams
would help, and the peer's address is validated, it probes for more: one
probe at a time, a PING padded to the size tried, with a packet number in its
body that a receiver acknowledges as it does a data packet's
(docs/protocol.md). An acknowledged probe confirms its size, and the messages
queued from then on are cut to it.

The sizes tried are the UDP payloads of the common links, smallest first:
Ethernet's 1500-byte MTU, jumbo frames' 9000 and the loopback's 65536, less
the IP and UDP headers. Each is tried up to MAX_PROBES times, a probe timeout
apart; a size lost that often stops the search at the last size confirmed
for RAISE_INTERVAL, and one the kernel refuses at once as larger than the
interface takes (EMSGSIZE; the socket never lets IP fragment a datagram,
IP_PMTUDISC_PROBE) ends it. A receiver that predates probes ignores a PING's
body and never acknowledges one: the sender stays at the base. Bundles of
small messages stay within the base size (a receiver takes a bundle whole or
not at all), and a message one of whose fragments ever went keeps its cut.

A probe is not data: it carries no message, is not counted in flight, and
its loss is not taken for congestion (RFC 8899 §3). Not done: noticing a path
whose MTU shrinks after it was confirmed (a route change; RFC 8899 §4.3's
black-hole detection). Fragments already cut to the larger size would then
be lost until the peer is given up; turn probing off
(``probe_path_mtu=False``) on such paths.
"""

from __future__ import annotations

from math import inf
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import Config

#: Datagram sizes probed, smallest first: 1500, 9000 and 65536-byte MTUs less
#: the IPv4 and UDP headers (28 bytes), or IPv6's (48); at most UDP's 65507.
PROBE_SIZES_IPV4 = (1472, 8972, 65507)
PROBE_SIZES_IPV6 = (1452, 8952, 65487)
#: The largest ``max_datagram_size`` probing starts from: what crosses any
#: path (the default). An application that set a larger one chose it for a
#: path it knows: its datagrams go as they are (IP may fragment them).
PROBED_FROM = 1200
#: Probes of one size lost before the search stops below it (RFC 8899 §5.1.2).
MAX_PROBES = 3
#: Seconds after which a search stopped by lost probes tries that size again
#: (RFC 8899 §5.1.1's PMTU_RAISE_TIMER): the path, or the loss, may have changed.
RAISE_INTERVAL = 600.0


def will_probe(config: Config) -> bool:
    """Whether a reliable sender under ``config`` probes (the shell turns
    ``probe_path_mtu`` off where its socket cannot forbid IP fragmentation)."""
    return config.probe_path_mtu and config.max_datagram_size <= PROBED_FROM


class PathMtu:
    """The search for one reliable sender's largest datagram."""

    __slots__ = ("_attempts", "_due", "_packet", "_sizes", "base", "size", "wanted")

    def __init__(self, base: int, sizes: tuple[int, ...]) -> None:
        #: The size every path takes (``max_datagram_size``), and the largest
        #: datagram confirmed to cross this one.
        self.base: int = base
        self.size: int = base
        #: The sizes still to try, smallest first.
        self._sizes: list[int] = [size for size in sizes if size > base]
        #: Set once a message had to be fragmented: only then is there
        #: anything to gain.
        self.wanted: bool = False
        self._attempts = 0
        #: The probe in flight: its packet number (-1: none; -2: none until
        #: ``_due``, after MAX_PROBES were lost), and when it is taken for lost.
        self._packet: int = -1
        self._due: float = inf

    @property
    def searching(self) -> bool:
        return bool(self._sizes)

    def probe_due(self) -> int | None:
        """The size to probe now, if a probe may go (none is in flight)."""
        if self.wanted and self._sizes and self._packet == -1:
            return self._sizes[0]
        return None

    def sent(self, packet: int, timeout: float) -> None:
        """The probe went as ``packet``; it is lost if not acknowledged by ``timeout``."""
        self._packet = packet
        self._due = timeout

    def acknowledged(self, spans: list[tuple[int, int]]) -> int:
        """If an ACK's ``(smallest, largest)`` packet number spans take in the
        probe in flight, its packet number (else -1): its size is confirmed,
        and the next one is due."""
        packet = self._packet
        if packet < 0 or not any(low <= packet <= high for low, high in spans):
            return -1
        self.size = self._sizes.pop(0)
        self._attempts = 0
        self._packet = -1
        self._due = inf
        return packet

    def deadline(self) -> float:
        return self._due

    def on_timer(self, now: float) -> None:
        """The probe in flight went unacknowledged for a probe timeout (lost);
        or the wait after MAX_PROBES lost is over, and the size is tried again."""
        if self._packet == -1 or now < self._due:
            return
        if self._packet == -2:
            # Tried again with the next message cut into fragments, not on an
            # idle session (whose probes' answers would keep it alive).
            self._packet = -1
            self._due = inf
            self.wanted = False
            return
        self._attempts += 1
        if self._attempts >= MAX_PROBES:
            self._attempts = 0
            self._packet = -2
            self._due = now + RAISE_INTERVAL
        else:
            self._packet = -1
            self._due = inf

    def refused(self, size: int) -> bool:
        """The kernel refused a datagram of ``size`` as too large for the
        interface: if it was the probe, the search ends below it for good (True)."""
        if self._packet < 0 or not self._sizes or size != self._sizes[0]:
            return False
        self._packet = -1
        self._due = inf
        self._sizes.clear()
        return True
