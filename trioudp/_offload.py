"""Linux UDP segmentation offload: many datagrams per system call.

GSO (``UDP_SEGMENT``, Linux 4.18+): one ``sendmsg`` hands the kernel up to
``GSO_MAX_SEGMENTS`` datagrams of one size (the last may be shorter) as one
buffer, and the kernel (or the network card) cuts it into datagrams.

GRO (``UDP_GRO``, Linux 5.0+): the kernel may hand one ``recvmsg`` several
datagrams of one flow, one after the other, with their size in a control
message; ``split_coalesced`` cuts them apart again.

Both are detected at run time: a system, socket or device without them gets
one datagram per call, as before. Nothing here is trio-specific.
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
import struct
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: Datagrams one GSO call carries at most (the kernel's UDP_MAX_SEGMENTS).
GSO_MAX_SEGMENTS = 64
#: Bytes one GSO call carries at most: a UDP payload's limit.
GSO_MAX_BYTES = 65507
#: Room for the GRO control message (an int).
GRO_ANCILLARY_SIZE = stdlib_socket.CMSG_SPACE(4) if hasattr(stdlib_socket, "CMSG_SPACE") else 0
#: Errors that say the kernel or the device cannot segment this send: fall back
#: to one datagram per call from then on.
GSO_UNSUPPORTED = frozenset({errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP})

_SEGMENT = struct.Struct("=H")
_GRO_SIZE = struct.Struct("=i")


def gso_available(sock: stdlib_socket.socket) -> bool:
    """Whether this socket's kernel knows UDP_SEGMENT (the device may still
    refuse a send: see GSO_UNSUPPORTED)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def enable_gro(sock: stdlib_socket.socket) -> bool:
    """Ask the kernel to coalesce received datagrams; False where it cannot."""
    if not sys.platform.startswith("linux") or not GRO_ANCILLARY_SIZE:
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def segment_cmsg(size: int) -> tuple[int, int, bytes]:
    """The control message that makes one sendmsg a GSO send of ``size``-byte
    datagrams."""
    return (SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(size))


def gso_runs(
    sizes: Sequence[int], keys: Sequence[object] | None = None
) -> Iterator[tuple[int, int]]:
    """Cut datagrams of these ``sizes`` into runs that one GSO send can carry:
    ``(start, stop)`` index pairs, each run of equal-sized datagrams but for a
    shorter last one, with equal ``keys`` (destination and marking), within
    GSO_MAX_SEGMENTS and GSO_MAX_BYTES. A run of one is sent as a plain
    datagram."""
    start = 0
    total = len(sizes)
    while start < total:
        size = sizes[start]
        key = keys[start] if keys is not None else None
        limit = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size) if size else 1
        stop = start + 1
        while stop < total and stop - start < limit:
            length = sizes[stop]
            if length > size or (keys is not None and keys[stop] != key):
                break
            stop += 1
            if length < size:
                break
        yield start, stop
        start = stop


def gro_segment_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The segment size the kernel reported for a coalesced receive, or 0."""
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= _GRO_SIZE.size:
            return int(_GRO_SIZE.unpack_from(data)[0])
    return 0


def split_coalesced(view: memoryview, size: int, segment: int) -> Iterator[memoryview]:
    """The datagrams in a coalesced receive of ``size`` bytes."""
    if segment <= 0 or segment >= size:
        yield view[:size]
        return
    for start in range(0, size, segment):
        yield view[start : min(start + segment, size)]
