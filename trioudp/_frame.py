"""The trioudp frame: encoding, and decoding of untrusted bytes.

A frame is one UDP datagram (docs/protocol.md is the full specification)::

    offset  size  field
    0       2     magic, the bytes "tU" (0x74 0x55)
    2       1     version, 1
    3       1     flags: 0x01 FRAGMENT, 0x02 TOPIC, 0x04 GROUP, 0x08 AUTH,
                  0x10 RELIABLE, 0x20 CONTROL, 0x40 BUNDLE; the rest 0
    4       8     session id, random per sender and destination
    12      4     sequence number of the message, wraps at 2**32
    -- only when RELIABLE is set:
    +0      4     packet number of this datagram (never reused in a session), wraps
    +4      4     the sender's oldest unacknowledged sequence number
    -- only when FRAGMENT is set:
    +0      4     message length, the whole message's payload in bytes
    +4      2     fragment index, 0-based
    +6      2     fragment count, 1 to 65535
    -- only when TOPIC is set:
    +0      1     topic length, 1 to 255
    +1      n     topic, UTF-8
    -- then:
    ...     n     payload (the message, or this fragment of it), or with BUNDLE:
                  several whole messages, each a 2-byte length and its bytes,
                  numbered from the sequence number on
    end-4   4     CRC32C (Castagnoli) of every byte before it, or with AUTH:
    end-16  16    BLAKE2b-128 keyed with the shared key, of every byte before it

GROUP marks a frame sent to a multicast or broadcast address. BUNDLE (never
with FRAGMENT) carries small messages sent together, under one checksum. A CONTROL frame
carries no message: its sequence field is a value and its payload starts with a
kind byte (ACK, PING, REJECT; see docs/protocol.md and _reliable.py), and it may
have no flag but AUTH. All integers are
big-endian. Decoding follows the rule at the top of trio's ``_dtls.py``: a
function whose name ends in ``_untrusted`` reads bytes from the network and
may raise ``BadFrame`` and nothing else, whatever the bytes are.
"""

from __future__ import annotations

import struct
from hashlib import blake2b
from hmac import compare_digest
from typing import TYPE_CHECKING, NamedTuple

from crc32c import crc32c

from ._reasons import DropReason

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from typing_extensions import Buffer

MAGIC = b"tU"
VERSION = 1
FLAG_FRAGMENT = 0x01
FLAG_TOPIC = 0x02
FLAG_GROUP = 0x04
FLAG_AUTH = 0x08
FLAG_RELIABLE = 0x10
FLAG_CONTROL = 0x20
FLAG_BUNDLE = 0x40
KNOWN_FLAGS = (
    FLAG_FRAGMENT | FLAG_TOPIC | FLAG_GROUP | FLAG_AUTH | FLAG_RELIABLE | FLAG_CONTROL | FLAG_BUNDLE
)
#: Control frame kinds (the first payload byte of a CONTROL frame).
KIND_DATA = 0
KIND_ACK = 1
KIND_PING = 2
KIND_REJECT = 3
#: REJECT reasons (the value field of a REJECT frame).
REJECT_NOT_RELIABLE = 1
REJECT_RELIABLE_ONLY = 2
#: Ranges one ACK frame carries at most.
MAX_ACK_RANGES = 32
#: Bytes of the BLAKE2b tag that replaces the CRC32C on authenticated frames.
TAG_SIZE = 16
#: Key lengths BLAKE2b takes.
KEY_SIZES = range(16, 65)
MAX_TOPIC = 255

_HEADER = struct.Struct("!2sBBQI")
#: The header with magic and version as one 3-byte field, compared at once.
_PREFIXED_HEADER = struct.Struct("!3sBQI")
_PREFIX = MAGIC + bytes((VERSION,))
_FRAGMENT_HEADER = struct.Struct("!IHH")
_CRC = struct.Struct("!I")
#: A path MTU probe's packet number, at the start of its PING's body.
_PROBE_PACKET = struct.Struct("!BI")
#: The first byte of a PING body that is a path MTU probe (other values are
#: left for later uses of the body, which a receiver ignores).
PROBE_BODY = 1
_RELIABLE_HEADER = struct.Struct("!II")
_ACK_RANGE = struct.Struct("!II")
_PART_LENGTH = struct.Struct("!H")

HEADER_SIZE = _HEADER.size  # 16
FRAGMENT_HEADER_SIZE = HEADER_SIZE + _FRAGMENT_HEADER.size  # 24
CRC_SIZE = _CRC.size  # 4
#: Bytes a whole (unfragmented) message adds to its payload.
OVERHEAD = HEADER_SIZE + CRC_SIZE
#: Bytes each fragment of a fragmented message adds to its piece of payload.
FRAGMENT_OVERHEAD = FRAGMENT_HEADER_SIZE + CRC_SIZE
#: Bytes the RELIABLE flag adds to a frame (packet number, oldest unacknowledged).
RELIABLE_SIZE = _RELIABLE_HEADER.size
#: Bytes each message in a BUNDLE frame adds to its payload (its length).
PART_OVERHEAD = _PART_LENGTH.size
#: The largest message a BUNDLE frame carries.
MAX_PART = 0xFFFF
MAX_FRAGMENTS = 0xFFFF
SEQUENCE_MODULUS = 2**32
_UNAUTHENTICATED = DropReason.UNAUTHENTICATED


class BadFrame(Exception):
    """Bytes that are not a valid frame. ``reason`` is the statistics outcome it
    counts as: a checksum mismatch (CRC_ERROR), a frame that failed or lacked
    authentication (UNAUTHENTICATED), or any other fault (MALFORMED)."""

    def __init__(self, message: str, reason: DropReason = DropReason.MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason


class Frame:
    """One decoded frame. ``payload`` is a view into the datagram: copy what you
    keep (the receive buffer is reused)."""

    __slots__ = (
        "fragment_count",
        "fragment_index",
        "group",
        "kind",
        "message_length",
        "oldest",
        "packet",
        "parts",
        "payload",
        "sequence",
        "session",
        "topic",
    )

    def __init__(
        self,
        session: int,
        sequence: int,
        payload: memoryview,
        message_length: int,
        fragment_index: int = 0,
        fragment_count: int = 1,
        topic: bytes = b"",
        group: bool = False,
        packet: int = -1,
        oldest: int = 0,
        kind: int = KIND_DATA,
        parts: tuple[memoryview, ...] = (),
    ) -> None:
        self.session = session
        #: The message's number; a CONTROL frame's value.
        self.sequence = sequence
        #: The message (or this fragment of it); a CONTROL frame's body after its kind.
        self.payload = payload
        #: The whole message's length (the payload's, for a whole message).
        self.message_length = message_length
        self.fragment_index = fragment_index
        self.fragment_count = fragment_count
        self.topic = topic
        self.group = group
        #: The packet number of a RELIABLE frame (-1 for others).
        self.packet = packet
        #: The sender's oldest unacknowledged message number (RELIABLE frames).
        self.oldest = oldest
        #: KIND_DATA for a message frame, else the kind of a CONTROL frame.
        self.kind = kind
        #: The messages of a BUNDLE frame (numbered from ``sequence`` on); empty
        #: for any other frame.
        self.parts = parts


def decode_frame_untrusted(
    data: Buffer, key: bytes | None = None, previous: tuple[bytes, ...] = ()
) -> Frame:
    """Decode one datagram. Raises BadFrame, and only BadFrame, if it is not a
    valid frame. With a ``key`` only frames authenticated with it (or with one
    of the ``previous`` keys, while keys are rotated) are valid."""
    view = data if type(data) is memoryview else memoryview(data)
    size = view.nbytes
    if view.ndim != 1 or view.itemsize != 1:
        raise BadFrame("not a flat byte buffer")
    if size < OVERHEAD:
        raise BadFrame(f"{size} bytes is shorter than the {OVERHEAD}-byte smallest frame")
    prefix, flags, session, sequence = _PREFIXED_HEADER.unpack_from(view)
    if prefix != _PREFIX:
        if prefix[:2] != MAGIC:
            raise BadFrame("wrong magic bytes: not a trioudp frame")
        raise BadFrame(f"unsupported frame version {prefix[2]}")
    if key is not None:
        if not flags & FLAG_AUTH:
            raise BadFrame("not authenticated, and this endpoint has a key", _UNAUTHENTICATED)
        end = size - TAG_SIZE
        if end < HEADER_SIZE:
            raise BadFrame(
                f"{size} bytes is too short for an authenticated frame", _UNAUTHENTICATED
            )
        body, tag = view[:end], view[end:]
        if not compare_digest(blake2b(body, key=key, digest_size=TAG_SIZE).digest(), tag) and (
            not any(
                compare_digest(blake2b(body, key=other, digest_size=TAG_SIZE).digest(), tag)
                for other in previous
            )
        ):
            raise BadFrame(
                "authentication tag mismatch: forged, damaged or another key", _UNAUTHENTICATED
            )
    elif flags & FLAG_AUTH:
        raise BadFrame("authenticated with a key this endpoint does not have", _UNAUTHENTICATED)
    else:
        end = size - CRC_SIZE
        (checksum,) = _CRC.unpack_from(view, end)
        if crc32c(view[:end]) != checksum:
            raise BadFrame("CRC32C mismatch", DropReason.CRC_ERROR)
        if not flags:
            # The commonest frame, a whole message without options, the fast
            # way: what _decode_fields_untrusted makes of it (tests/test_fast_paths.py).
            return Frame(session, sequence, view[HEADER_SIZE:end], end - HEADER_SIZE)
    return _decode_fields_untrusted(view, flags, session, sequence, end)


def _decode_fields_untrusted(
    view: memoryview, flags: int, session: int, sequence: int, end: int
) -> Frame:
    """The fields after the header of a frame whose seal has been checked
    (``end``: where its payload ends)."""
    size = view.nbytes
    if flags & ~KNOWN_FLAGS:
        raise BadFrame(f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:02x}")
    if flags & FLAG_CONTROL:
        if flags & ~(FLAG_CONTROL | FLAG_AUTH):
            raise BadFrame(f"a control frame with other flags (0x{flags:02x})")
        if end == HEADER_SIZE or not KIND_ACK <= view[HEADER_SIZE] <= KIND_REJECT:
            raise BadFrame("a control frame without a known kind")
        body = view[HEADER_SIZE + 1 : end]
        return Frame(session, sequence, body, message_length=0, kind=view[HEADER_SIZE])
    offset = HEADER_SIZE
    packet = -1
    oldest = 0
    if flags & FLAG_RELIABLE:
        if flags & FLAG_GROUP:
            raise BadFrame("a group frame cannot be reliable")
        if end < HEADER_SIZE + RELIABLE_SIZE:
            raise BadFrame(f"{size} bytes is too short for a reliable frame")
        packet, oldest = _RELIABLE_HEADER.unpack_from(view, HEADER_SIZE)
        offset += RELIABLE_SIZE
    length = index = 0
    count = 1
    fragmented = flags & FLAG_FRAGMENT
    if fragmented:
        if end < offset + _FRAGMENT_HEADER.size:
            raise BadFrame(f"{size} bytes is too short for a fragment")
        length, index, count = _FRAGMENT_HEADER.unpack_from(view, offset)
        offset += _FRAGMENT_HEADER.size
    topic = b""
    if flags & FLAG_TOPIC:
        if offset >= end or not 1 <= view[offset] <= end - offset - 1:
            raise BadFrame("topic length missing, zero, or past the end of the frame")
        topic = bytes(view[offset + 1 : offset + 1 + view[offset]])
        offset += 1 + len(topic)
        try:
            topic.decode()
        except UnicodeDecodeError:
            raise BadFrame("topic is not UTF-8") from None
    payload = view[offset:end]
    group = bool(flags & FLAG_GROUP)
    if flags & FLAG_BUNDLE:
        if fragmented:
            raise BadFrame("a bundle frame cannot be a fragment")
        parts = _split_bundle_untrusted(payload)
        return Frame(
            session,
            sequence,
            payload,
            message_length=0,
            topic=topic,
            group=group,
            packet=packet,
            oldest=oldest,
            parts=parts,
        )
    if not fragmented:
        return Frame(
            session,
            sequence,
            payload,
            message_length=len(payload),
            topic=topic,
            group=group,
            packet=packet,
            oldest=oldest,
        )
    if index >= count:
        raise BadFrame(f"fragment index {index} is not below its count {count}")
    # Every fragment carries at least one byte, so a message of n bytes has at
    # most n fragments; a lone fragment is the whole message.
    if not payload or count > length or len(payload) > length:
        raise BadFrame(f"fragment of {len(payload)} bytes, {count} fragments, {length} total")
    if count == 1 and len(payload) != length:
        raise BadFrame("a single fragment that is not the whole message")
    return Frame(
        session,
        sequence,
        payload,
        message_length=length,
        fragment_index=index,
        fragment_count=count,
        topic=topic,
        group=group,
        packet=packet,
        oldest=oldest,
    )


def _split_bundle_untrusted(body: memoryview) -> tuple[memoryview, ...]:
    """The messages in a BUNDLE frame's body, which they must fill exactly."""
    parts: list[memoryview] = []
    offset = 0
    end = body.nbytes
    unpack = _PART_LENGTH.unpack_from
    while offset < end:
        if offset + PART_OVERHEAD > end:
            raise BadFrame("a bundle's last message length is cut off")
        (length,) = unpack(body, offset)
        offset += PART_OVERHEAD
        if offset + length > end:
            raise BadFrame(f"a bundled message of {length} bytes runs past the frame's end")
        parts.append(body[offset : offset + length])
        offset += length
    if not parts:
        raise BadFrame("a bundle frame without messages")
    return tuple(parts)


def byte_view(payload: object) -> memoryview:
    """``payload`` as a flat view of its bytes, whatever its item type or shape
    (an ``array('I')``, a 2-D memoryview): messages are sent byte by byte.
    Raises TypeError, naming the type, for anything that is not a C-contiguous
    bytes-like object."""
    try:
        view = memoryview(payload)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"a payload must be bytes-like (bytes, bytearray, memoryview, array, ...), "
            f"got {type(payload).__name__}; encode text first, e.g. text.encode()"
        ) from None
    if not view.c_contiguous:
        raise TypeError(
            f"a payload must be C-contiguous, and this {type(payload).__name__} is not; "
            f"send a contiguous copy, e.g. bytes(payload) or numpy.ascontiguousarray()"
        )
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def bundle_body(payloads: Sequence[Buffer]) -> bytes:
    """A BUNDLE frame's body: each payload (at most MAX_PART bytes) after its length."""
    pack = _PART_LENGTH.pack
    pieces: list[Buffer] = []
    for payload in payloads:
        pieces.append(pack(memoryview(payload).nbytes))
        pieces.append(payload)
    return b"".join(pieces)


def encode_bundle(
    session: int,
    sequence: int,
    payloads: Sequence[Buffer],
    *,
    topic: bytes = b"",
    group: bool = False,
    key: bytes | None = None,
) -> bytes:
    """One BUNDLE frame carrying ``payloads`` as messages ``sequence``,
    ``sequence + 1``, ... (the caller checks that it fits a datagram)."""
    flags, extra = _flags_and_topic(topic, group=group, key=key)
    header = _HEADER.pack(MAGIC, VERSION, flags | FLAG_BUNDLE, session, sequence)
    return sealer(key)(header + extra + bundle_body(payloads))


def _flags_and_topic(topic: bytes, *, group: bool, key: bytes | None) -> tuple[int, bytes]:
    """The flags a message frame's options set, and its topic field."""
    flags = (FLAG_GROUP if group else 0) | (FLAG_AUTH if key is not None else 0)
    extra = _topic_field(topic)
    if extra:
        flags |= FLAG_TOPIC
    return flags, extra


def frame_overhead(*, topic: bytes, key: bytes | None, reliable: bool) -> int:
    """Bytes a whole-message frame adds to its payload (a BUNDLE frame adds
    PART_OVERHEAD more per message)."""
    fixed = HEADER_SIZE + _trailer(key) + len(_topic_field(topic))
    return fixed + RELIABLE_SIZE if reliable else fixed


def _seal(body: bytes) -> bytes:
    return body + _CRC.pack(crc32c(body))


def _signer(key: bytes) -> Callable[[bytes], bytes]:
    def sign(body: bytes) -> bytes:
        return body + blake2b(body, key=key, digest_size=TAG_SIZE).digest()

    return sign


def sealer(key: bytes | None) -> Callable[[bytes], bytes]:
    """What ends a frame: a CRC32C, or with a key a BLAKE2b tag."""
    return _seal if key is None else _signer(key)


def _trailer(key: bytes | None) -> int:
    return CRC_SIZE if key is None else TAG_SIZE


def _topic_field(topic: bytes) -> bytes:
    if not topic:
        return b""
    if len(topic) > MAX_TOPIC:
        raise ValueError(f"a topic is at most {MAX_TOPIC} bytes of UTF-8, got {len(topic)}")
    return bytes((len(topic),)) + topic


def fragment_size(
    length: int, max_datagram_size: int, *, topic: bytes, key: bytes | None, reliable: bool
) -> int:
    """How many payload bytes each datagram of a ``length``-byte message carries:
    ``length`` itself if the message fits in one datagram (not fragmented)."""
    fixed = frame_overhead(topic=topic, key=key, reliable=reliable)
    if length + fixed <= max_datagram_size:
        return length
    chunk = max_datagram_size - fixed - _FRAGMENT_HEADER.size
    if chunk < 1:
        raise ValueError(f"a {len(topic)}-byte topic leaves no room in {max_datagram_size} bytes")
    if -(-length // chunk) > MAX_FRAGMENTS:
        raise ValueError(
            f"a message of {length} bytes needs more than {MAX_FRAGMENTS} fragments of "
            f"{chunk} bytes; raise max_datagram_size or send less"
        )
    return chunk


def encode_message(
    session: int,
    sequence: int,
    payload: Buffer,
    max_datagram_size: int,
    *,
    topic: bytes = b"",
    group: bool = False,
    key: bytes | None = None,
) -> list[bytes]:
    """The datagrams that carry one message: one frame if it fits in
    ``max_datagram_size`` bytes, otherwise fragments of at most that size. With
    a ``key`` each frame ends in a BLAKE2b tag instead of a CRC32C."""
    view = byte_view(payload)
    length = view.nbytes
    flags, extra = _flags_and_topic(topic, group=group, key=key)
    seal = sealer(key)
    chunk = fragment_size(length, max_datagram_size, topic=topic, key=key, reliable=False)
    if chunk == length:
        return [seal(_HEADER.pack(MAGIC, VERSION, flags, session, sequence) + extra + view)]
    count = -(-length // chunk)
    header = _HEADER.pack(MAGIC, VERSION, flags | FLAG_FRAGMENT, session, sequence)
    pack = _FRAGMENT_HEADER.pack
    return [
        seal(
            header + pack(length, index, count) + extra + view[index * chunk : (index + 1) * chunk]
        )
        for index in range(count)
    ]


def encode_plain(session: int, sequence: int, payload: bytes) -> bytes:
    """A whole message in a frame without options (the caller checks that it
    fits): what ``encode_message`` makes of it, with less work."""
    body = _HEADER.pack(MAGIC, VERSION, 0, session, sequence) + payload
    return body + _CRC.pack(crc32c(body))


def encode_reliable(
    session: int,
    sequence: int,
    packet: int,
    oldest: int,
    fragment: tuple[int, int, int] | None,
    topic: bytes,
    chunk: Buffer,
    seal: Callable[[bytes], bytes],
    *,
    authenticated: bool,
    bundled: bool = False,
) -> bytes:
    """One RELIABLE datagram: a whole message (``fragment`` None), the
    fragment ``(message length, index, count)`` of one, or with ``bundled``
    several whole messages (``chunk`` is then their bundle_body()). Made anew
    for each transmission, since the packet number and ``oldest`` change."""
    flags = FLAG_RELIABLE
    if authenticated:
        flags |= FLAG_AUTH
    if bundled:
        flags |= FLAG_BUNDLE
    extra = _topic_field(topic)
    if extra:
        flags |= FLAG_TOPIC
    middle = b""
    if fragment is not None:
        flags |= FLAG_FRAGMENT
        middle = _FRAGMENT_HEADER.pack(*fragment)
    return seal(
        _HEADER.pack(MAGIC, VERSION, flags, session, sequence)
        + _RELIABLE_HEADER.pack(packet & 0xFFFFFFFF, oldest)
        + middle
        + extra
        + chunk
    )


def encode_control(
    kind: int,
    session: int,
    value: int,
    body: bytes,
    seal: Callable[[bytes], bytes],
    *,
    authenticated: bool,
) -> bytes:
    """A CONTROL frame of ``kind`` (KIND_ACK, KIND_PING, KIND_REJECT)."""
    flags = FLAG_CONTROL | (FLAG_AUTH if authenticated else 0)
    return seal(_HEADER.pack(MAGIC, VERSION, flags, session, value) + bytes((kind,)) + body)


def encode_probe(
    session: int,
    oldest: int,
    packet: int,
    size: int,
    seal: Callable[[bytes], bytes],
    *,
    authenticated: bool,
) -> bytes:
    """A path MTU probe (_pmtu.py): a PING of exactly ``size`` bytes whose body
    is PROBE_BODY, a reliable packet number, then zeros. A receiver that knows
    probes acknowledges the packet number; one that does not ignores the body."""
    fixed = HEADER_SIZE + 1 + _PROBE_PACKET.size + (TAG_SIZE if authenticated else CRC_SIZE)
    body = _PROBE_PACKET.pack(PROBE_BODY, packet & 0xFFFFFFFF) + bytes(max(size - fixed, 0))
    return encode_control(KIND_PING, session, oldest, body, seal, authenticated=authenticated)


def probe_packet(body: Buffer) -> int | None:
    """The packet number a PING's body carries if it is a path MTU probe, or
    None (an empty body, or one of another kind)."""
    view = memoryview(body)
    if view.nbytes < _PROBE_PACKET.size or view[0] != PROBE_BODY:
        return None
    packet: int = _PROBE_PACKET.unpack_from(view)[1]
    return packet


class Ack(NamedTuple):
    """A decoded ACK body."""

    #: Seconds the receiver waited before sending it.
    delay: float
    #: The receiver's id for this stream (a new one after it restarted).
    receiver: int
    #: The next message the receiver will deliver: all before it were.
    delivered: int
    #: ``(largest, smallest)`` 32-bit packet number ranges, newest first.
    ranges: list[tuple[int, int]]


_ACK_FIXED = struct.Struct("!IQIB")
#: Bytes of an ACK body's fixed fields (delay, receiver, delivered, count), and
#: of each range it carries.
ACK_FIXED_SIZE = _ACK_FIXED.size
ACK_RANGE_SIZE = _ACK_RANGE.size


def control_size(body: int, key: bytes | None) -> int:
    """Bytes of a CONTROL frame whose body (after its kind byte) is ``body``
    bytes long: with a CRC32C trailer, or with a ``key`` a tag."""
    return HEADER_SIZE + 1 + body + _trailer(key)


def encode_ack_body(
    delay: float, receiver: int, delivered: int, ranges: list[tuple[int, int]]
) -> bytes:
    """An ACK's body: the delay (seconds) the receiver added before sending it,
    its id, the next message it will deliver, and up to MAX_ACK_RANGES
    ``(largest, smallest)`` packet number ranges, newest first."""
    ranges = ranges[:MAX_ACK_RANGES]
    micros = min(max(int(delay * 1e6), 0), 0xFFFFFFFF)
    parts = [_ACK_FIXED.pack(micros, receiver, delivered & 0xFFFFFFFF, len(ranges))]
    parts.extend(_ACK_RANGE.pack(high & 0xFFFFFFFF, low & 0xFFFFFFFF) for high, low in ranges)
    return b"".join(parts)


def decode_ack_untrusted(body: Buffer) -> Ack:
    """Decode an ACK's body. Raises BadFrame, and only BadFrame, if it is not valid."""
    view = memoryview(body)
    fixed = _ACK_FIXED.size
    if view.nbytes < fixed:
        raise BadFrame("an ACK shorter than its fixed fields")
    micros, receiver, delivered, count = _ACK_FIXED.unpack_from(view)
    if count > MAX_ACK_RANGES or view.nbytes != fixed + count * _ACK_RANGE.size:
        raise BadFrame(f"an ACK of {view.nbytes} bytes does not hold its {count} ranges")
    ranges = [_ACK_RANGE.unpack_from(view, fixed + i * _ACK_RANGE.size) for i in range(count)]
    for high, low in ranges:
        if sequence_difference(high, low) < 0:
            raise BadFrame("an ACK range whose largest is below its smallest")
    return Ack(micros / 1e6, receiver, delivered, ranges)


def sequence_difference(a: int, b: int) -> int:
    """``a - b`` in serial-number arithmetic (RFC 1982) over 32 bits: positive when
    ``a`` is after ``b``, within half the sequence space."""
    return (a - b + 2**31) % SEQUENCE_MODULUS - 2**31
