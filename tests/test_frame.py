"""The frame codec: round trips, CRC32C, and the _untrusted rule."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from crc32c import crc32c
from hypothesis import assume, example, given
from hypothesis import strategies as st

from trioudp._frame import (
    FLAG_BUNDLE,
    FLAG_CONTROL,
    FLAG_FRAGMENT,
    FLAG_GROUP,
    FLAG_RELIABLE,
    FLAG_TOPIC,
    FRAGMENT_OVERHEAD,
    KIND_ACK,
    KIND_PING,
    KIND_REJECT,
    MAGIC,
    OVERHEAD,
    Ack,
    BadFrame,
    decode_ack_untrusted,
    decode_frame_untrusted,
    encode_ack_body,
    encode_bundle,
    encode_control,
    encode_message,
    encode_reliable,
    fragment_size,
    sealer,
    sequence_difference,
)
from trioudp._reasons import DropReason


def reference_crc32c(data: bytes) -> int:
    """Bit-by-bit CRC-32C (reflected polynomial 0x82F63B78), as in RFC 3720 B.4."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def seal(body: bytes) -> bytes:
    return body + struct.pack("!I", crc32c(body))


def header(flags: int = 0, session: int = 7, sequence: int = 3, version: int = 1) -> bytes:
    return struct.pack("!2sBBQI", MAGIC, version, flags, session, sequence)


def test_crc32c_check_value() -> None:
    # The standard check value of CRC-32C (iSCSI, RFC 3720).
    assert crc32c(b"123456789") == reference_crc32c(b"123456789") == 0xE3069283


@given(st.binary(max_size=300))
def test_crc32c_matches_reference(data: bytes) -> None:
    assert crc32c(data) == reference_crc32c(data)


@given(
    session=st.integers(0, 2**64 - 1),
    sequence=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=5000),
    size=st.integers(64, 1500),
    topic=st.text(max_size=20).map(str.encode),
    group=st.booleans(),
)
@example(session=0, sequence=0, payload=b"", size=64, topic=b"", group=False)
@example(session=1, sequence=1, payload=b"x" * (1200 - OVERHEAD), size=1200, topic=b"", group=False)
@example(
    session=1, sequence=1, payload=b"x" * (1200 - OVERHEAD + 1), size=1200, topic=b"", group=True
)
@example(session=1, sequence=1, payload=b"x" * 1000, size=64, topic=b"t" * 30, group=True)
def test_round_trip(
    session: int, sequence: int, payload: bytes, size: int, topic: bytes, group: bool
) -> None:
    assume(len(topic) + 1 + FRAGMENT_OVERHEAD < size)
    datagrams = encode_message(session, sequence, payload, size, topic=topic, group=group)
    assert all(len(d) <= size for d in datagrams)
    frames = [decode_frame_untrusted(d) for d in datagrams]
    assert {(f.session, f.sequence, f.topic, f.group) for f in frames} == {
        (session, sequence, topic, group)
    }
    overhead = OVERHEAD + (1 + len(topic) if topic else 0)
    assert [f.fragment_index for f in frames] == list(range(len(frames)))
    assert {(f.fragment_count, f.message_length) for f in frames} == {(len(frames), len(payload))}
    assert b"".join(f.payload for f in frames) == payload
    if len(payload) + overhead <= size:
        assert len(datagrams) == 1
        assert len(datagrams[0]) == len(payload) + overhead
    else:
        chunk = size - FRAGMENT_OVERHEAD - (overhead - OVERHEAD)
        assert len(datagrams) == -(-len(payload) // chunk)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_bad_frame(data: bytes) -> None:
    with contextlib.suppress(BadFrame):
        decode_frame_untrusted(data)


@given(st.binary(max_size=120), st.integers(0, 255), st.integers(0, 2**64 - 1))
def test_sealed_garbage_raises_only_bad_frame(body: bytes, flags: int, session: int) -> None:
    # Garbage with a valid magic, version and CRC reaches the field checks.
    crc_error = False
    try:
        frame = decode_frame_untrusted(seal(header(flags, session) + body))
    except BadFrame as exc:
        crc_error = exc.reason is DropReason.CRC_ERROR
    else:
        assert frame.fragment_index < frame.fragment_count <= max(frame.message_length, 1)
        if frame.parts:
            # A bundle's messages tile its payload exactly, each after its length.
            assert sum(len(part) + 2 for part in frame.parts) == len(frame.payload)
        else:
            assert len(frame.payload) <= frame.message_length
        frame.topic.decode()
    assert not crc_error


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=20),
    st.integers(0, 2**32 - 1),
    st.text(max_size=10),
    st.booleans(),
)
def test_bundles_round_trip(payloads: list[bytes], sequence: int, topic: str, group: bool) -> None:
    datagram = encode_bundle(7, sequence, payloads, topic=topic.encode(), group=group)
    frame = decode_frame_untrusted(datagram)
    assert [bytes(part) for part in frame.parts] == payloads
    assert (frame.sequence, frame.topic, frame.group) == (sequence, topic.encode(), group)
    assert frame.fragment_count == 1


def test_every_single_bit_flip_is_caught() -> None:
    for frame in (
        encode_message(0x1122334455667788, 99, b"hello, world", 1200)[0],
        encode_message(5, 2**32 - 1, bytes(range(256)) * 10, 1200)[1],
    ):
        for bit in range(len(frame) * 8):
            damaged = bytearray(frame)
            damaged[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(BadFrame):
                decode_frame_untrusted(bytes(damaged))


def test_every_truncation_is_caught() -> None:
    frame = encode_message(1, 2, b"payload" * 300, 1200)[0]
    for length in range(len(frame)):
        with pytest.raises(BadFrame):
            decode_frame_untrusted(frame[:length])


def test_crc_errors_are_told_apart() -> None:
    frame = bytearray(encode_message(1, 2, b"abc", 1200)[0])
    frame[-5] ^= 0x10  # a payload byte
    with pytest.raises(BadFrame) as info:
        decode_frame_untrusted(bytes(frame))
    assert info.value.reason is DropReason.CRC_ERROR
    with pytest.raises(BadFrame) as info:
        decode_frame_untrusted(b"XX" + bytes(frame[2:]))
    assert info.value.reason is not DropReason.CRC_ERROR


def fragment(length: int, index: int, count: int, payload: bytes) -> bytes:
    return seal(header(FLAG_FRAGMENT) + struct.pack("!IHH", length, index, count) + payload)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (seal(header(version=2) + b"x"), "version"),
        (seal(header(version=0) + b"x"), "version"),
        (seal(header(flags=FLAG_BUNDLE) + b"x"), "last message length is cut off"),
        (seal(header(flags=FLAG_BUNDLE) + b"\x00\x05abc"), "runs past the frame's end"),
        (seal(header(flags=FLAG_BUNDLE) + b"\x00\x01a\x00"), "last message length is cut off"),
        (seal(header(flags=FLAG_BUNDLE)), "without messages"),
        (seal(header(flags=FLAG_BUNDLE | FLAG_FRAGMENT) + bytes(8) + b"\x00\x00"), "bundle"),
        (seal(header(flags=FLAG_RELIABLE) + b"1234567"), "too short for a reliable"),
        (seal(header(flags=FLAG_RELIABLE | FLAG_GROUP) + bytes(9)), "group frame cannot"),
        (seal(header(flags=FLAG_CONTROL)), "without a known kind"),
        (seal(header(flags=FLAG_CONTROL) + b"\x04"), "without a known kind"),
        (seal(header(flags=FLAG_CONTROL | FLAG_TOPIC) + b"\x01"), "control frame with other"),
        (
            seal(header(FLAG_RELIABLE | FLAG_FRAGMENT) + bytes(8) + b"\x00\x00"),
            "too short for a fragment",
        ),
        (seal(header(flags=0x08) + b"x"), "a key this endpoint does not have"),
        (seal(header(flags=0x80) + b"x"), "flag"),
        (seal(header(flags=FLAG_TOPIC)), "topic length missing"),
        (seal(header(flags=FLAG_TOPIC) + b"\x00abc"), "topic length missing, zero"),
        (seal(header(flags=FLAG_TOPIC) + b"\x05abc"), "past the end"),
        (seal(header(flags=FLAG_TOPIC) + b"\x02\xff\xfe"), "not UTF-8"),
        (
            seal(header(FLAG_FRAGMENT | FLAG_TOPIC) + struct.pack("!IHH", 3, 0, 2) + b"\x01t"),
            "fragment of 0",
        ),
        (seal(header(FLAG_FRAGMENT) + b"\x00\x00"), "too short"),
        (fragment(10, 2, 2, b"abcde"), "index"),
        (fragment(10, 0, 0, b"abcde"), "index"),
        (fragment(10, 65535, 65535, b"abcde"), "index"),
        (fragment(10, 0, 2, b""), "fragment of 0"),
        (fragment(3, 0, 4, b"abc"), "4 fragments"),
        (fragment(4, 0, 2, b"abcde"), "5 bytes"),
        (fragment(10, 0, 1, b"abcde"), "single fragment"),
        (fragment(0, 0, 1, b"x"), "fragment"),
        (b"tU\x01" + bytes(19), "CRC"),
        (b"", "shorter"),
        (b"tU\x01", "shorter"),
    ],
)
def test_malformed_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(BadFrame, match=reason):
        decode_frame_untrusted(frame)


def test_payload_is_a_view_not_a_copy() -> None:
    buffer = bytearray(encode_message(1, 2, b"stable", 1200)[0])
    frame = decode_frame_untrusted(memoryview(buffer))
    assert bytes(frame.payload) == b"stable"
    buffer[16:22] = b"change"
    assert bytes(frame.payload) == b"change"  # the engine copies what it keeps


@pytest.mark.parametrize(
    ("a", "b", "difference"),
    [
        (5, 3, 2),
        (3, 5, -2),
        (0, 2**32 - 1, 1),
        (2**32 - 1, 0, -1),
        (2**31 - 1, 0, 2**31 - 1),
        (2**31, 0, -(2**31)),
        (7, 7, 0),
    ],
)
def test_sequence_difference(a: int, b: int, difference: int) -> None:
    assert sequence_difference(a, b) == difference


def test_protocol_document_test_vectors() -> None:
    document = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    vectors = [
        *encode_message(0x0102030405060708, 1, b"hello", 1200),
        *encode_message(0x0102030405060708, 2, b"a message in two parts", 40),
    ]
    assert len(vectors) == 3
    for datagram in vectors:
        assert datagram.hex(" ") in document
    assert "0xE3069283" in document


def test_protocol_document_vectors_of_every_kind() -> None:
    """The vectors for TOPIC, BUNDLE, AUTH, RELIABLE, ACK, PING and REJECT in
    docs/protocol.md are what the encoder makes of the fields the document
    gives, and decode back to them."""
    document = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    session, key, crc = 0x0102030405060708, bytes(range(32)), sealer(None)
    ack_body = encode_ack_body(0.00025, 0x1112131415161718, 7, [(7, 5)])
    vectors = {
        "topic": encode_message(session, 3, b"hi", 1200, topic=b"t")[0],
        "bundle": encode_bundle(session, 4, [b"a", b"bc"]),
        "auth": encode_message(session, 5, b"hello", 1200, key=key)[0],
        "reliable": encode_reliable(session, 6, 7, 6, None, b"", b"ok", crc, authenticated=False),
        "ack": encode_control(KIND_ACK, session, 15, ack_body, crc, authenticated=False),
        "ping": encode_control(KIND_PING, session, 6, b"", crc, authenticated=False),
        "reject": encode_control(KIND_REJECT, session, 1, b"", crc, authenticated=False),
    }
    for name, datagram in vectors.items():
        assert datagram.hex(" ") in document, name
    topic = decode_frame_untrusted(vectors["topic"])
    assert (topic.sequence, topic.topic, bytes(topic.payload)) == (3, b"t", b"hi")
    bundle = decode_frame_untrusted(vectors["bundle"])
    assert (bundle.sequence, [bytes(part) for part in bundle.parts]) == (4, [b"a", b"bc"])
    auth = decode_frame_untrusted(vectors["auth"], key)
    assert (auth.sequence, bytes(auth.payload)) == (5, b"hello")
    with pytest.raises(BadFrame):
        decode_frame_untrusted(vectors["auth"])  # no key: refused
    reliable = decode_frame_untrusted(vectors["reliable"])
    assert (reliable.sequence, reliable.packet, reliable.oldest) == (6, 7, 6)
    ack = decode_frame_untrusted(vectors["ack"])
    assert (ack.kind, ack.session, ack.sequence) == (KIND_ACK, session, 15)
    assert decode_ack_untrusted(ack.payload) == Ack(0.00025, 0x1112131415161718, 7, [(7, 5)])
    ping, reject = (
        decode_frame_untrusted(vectors["ping"]),
        decode_frame_untrusted(vectors["reject"]),
    )
    assert (ping.kind, ping.sequence, bytes(ping.payload)) == (KIND_PING, 6, b"")
    assert (reject.kind, reject.sequence, bytes(reject.payload)) == (KIND_REJECT, 1, b"")


@pytest.mark.parametrize(
    ("key", "reliable", "whole", "chunk"),
    [
        (None, False, 1180, 1172),
        (bytes(range(32)), False, 1168, 1160),
        (None, True, 1172, 1164),
        (bytes(range(32)), True, 1160, 1152),
    ],
)
def test_the_sizes_protocol_md_gives_are_the_encoders(
    key: bytes | None, reliable: bool, whole: int, chunk: int
) -> None:
    """docs/protocol.md's sizes for 1200-byte datagrams, per key and reliable
    mode, and with a topic of n bytes 1 + n less (its formula once left the tag,
    the reliable field and the topic out: with a key the chunk is 1160)."""
    document = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    assert f"{whole} and {chunk}" in " ".join(document.split())
    for topic in (b"", b"topic"):
        less = len(topic) + 1 if topic else 0
        fits = fragment_size(whole - less, 1200, topic=topic, key=key, reliable=reliable)
        assert fits == whole - less  # whole
        cut = fragment_size(whole - less + 1, 1200, topic=topic, key=key, reliable=reliable)
        assert cut == chunk - less
