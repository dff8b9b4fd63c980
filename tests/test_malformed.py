"""A table of hand-made malformed frames, and long fuzzing of the decoder.

Every frame in the table is refused with BadFrame; frames whose checksum is
right are counted malformed, the others as CRC errors. None reaches an
application, and a live engine fed all of them keeps its accounting.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from sansio import take

from trioudp import Config
from trioudp._engine import Engine
from trioudp._frame import (
    FLAG_FRAGMENT,
    FLAG_GROUP,
    FLAG_TOPIC,
    KIND_PING,
    MAGIC,
    BadFrame,
    Frame,
    decode_frame_untrusted,
    encode_control,
    encode_message,
    sealer,
)
from trioudp._reasons import DropReason

#: 10,000 examples per property in CI (the issue's bar), fewer on a workstation.
FUZZ = settings(max_examples=10_000 if os.environ.get("CI") else 1_000, deadline=None)


def seal(body: bytes) -> bytes:
    return body + struct.pack("!I", crc32c(body))


def header(
    flags: int = 0, *, magic: bytes = MAGIC, version: int = 1, session: int = 1, sequence: int = 0
) -> bytes:
    return struct.pack("!2sBBQI", magic, version, flags, session, sequence)


def fragment(
    length: int, index: int, count: int, payload: bytes, flags: int = 0, topic: bytes = b""
) -> bytes:
    extra = bytes((len(topic),)) + topic if topic else b""
    return seal(
        header(FLAG_FRAGMENT | flags) + struct.pack("!IHH", length, index, count) + extra + payload
    )


def malformed_frames() -> list[tuple[str, bytes, bool]]:
    """(what, frame, is_crc_error) for every case."""
    cases: list[tuple[str, bytes, bool]] = []
    good = encode_message(7, 9, b"a good payload", 1200)[0]
    good_fragment = encode_message(7, 9, b"x" * 100, 64)[0]
    for length in range(20):
        cases.append((f"{length} bytes of a frame", good[:length], False))
    for length in range(16, 28):
        body = (header(FLAG_FRAGMENT) + struct.pack("!IHH", 10, 0, 2))[: length - 4]
        cases.append((f"fragment header cut at {length}", seal(body), False))
    for position in range(2):
        for value in (0x00, 0xFF, MAGIC[position] - 1, MAGIC[position] + 1):
            magic = bytearray(MAGIC)
            magic[position] = value
            cases.append(
                (f"magic byte {position} = {value}", seal(header(magic=bytes(magic)) + b"p"), False)
            )
    for version in (0, 2, 3, 127, 128, 255):
        cases.append((f"version {version}", seal(header(version=version) + b"p"), False))
    for flags in [0x08, 0x40, 0x80, 0xF8, 0xFF, 0x0F, 0x08 | FLAG_TOPIC, 0x30, 0x21, 0x24]:
        cases.append((f"flags 0x{flags:02x}", seal(header(flags) + b"\x01tpayload"), False))
    for count in (0, 1, 2, 65535):
        for index in {count, count + 1, 65535} - {n for n in (count + 1,) if n > 65535}:
            if index < 65536:
                cases.append(
                    (f"index {index} of {count}", fragment(10, index, count, b"abcde"), False)
                )
    for length, count, payload in [
        (0, 1, b"a"),
        (1, 2, b"a"),
        (3, 4, b"abc"),
        (2, 1, b"a"),
        (5, 1, b"abcd"),
        (4, 2, b"abcde"),
        (10, 2, b""),
        (0, 2, b""),
        (2**32 - 1, 1, b"a"),
        (1, 65535, b"a"),
    ]:
        cases.append(
            (
                f"length {length}, count {count}, {len(payload)} bytes",
                fragment(length, 0, count, payload),
                False,
            )
        )
    for topic_length, rest in [
        (0, b"payload"),
        (1, b""),
        (2, b"a"),
        (9, b"short"),
        (255, b"x" * 254),
        (200, b""),
    ]:
        cases.append(
            (
                f"topic length {topic_length} of {len(rest)}",
                seal(header(FLAG_TOPIC) + bytes((topic_length,)) + rest),
                False,
            )
        )
    for bad_utf8 in [
        b"\xff",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\x80",
        b"\xe2\x82",
        b"a\xfeb",
        b"\xf8\x88\x80\x80\x80",
        b"\xf4\x90\x80\x80",
    ]:
        cases.append(
            (
                f"topic {bad_utf8!r}",
                seal(header(FLAG_TOPIC) + bytes((len(bad_utf8),)) + bad_utf8 + b"p"),
                False,
            )
        )
        cases.append(
            (
                f"fragment topic {bad_utf8!r}",
                fragment(10, 0, 2, b"abcde", FLAG_TOPIC, bad_utf8),
                False,
            )
        )
    cases.append(
        (
            "topic flag with fragment and no room",
            fragment(10, 0, 2, b"", FLAG_TOPIC, b"topic"),
            False,
        )
    )
    for position in range(4):
        for delta in (1, -1, 0x80):
            damaged = bytearray(good)
            damaged[len(good) - 4 + position] = (damaged[len(good) - 4 + position] + delta) % 256
            cases.append((f"CRC byte {position} {delta:+d}", bytes(damaged), True))
    cases.append(("CRC all zeros", good[:-4] + bytes(4), True))
    cases.append(("CRC all ones", good[:-4] + b"\xff" * 4, True))
    for position in (4, 8, 12, 15, 16, 18, 20, 22, 24, len(good_fragment) - 5):
        damaged = bytearray(good_fragment)
        damaged[position] ^= 0x01
        cases.append((f"fragment byte {position} flipped", bytes(damaged), True))
    for field_offset, width in ((4, 8), (12, 4)):
        for value in (0, 1, 2 ** (8 * width) - 1):
            changed = bytearray(good[:-4])
            changed[field_offset : field_offset + width] = value.to_bytes(width, "big")
            # Valid frames, but the CRC no longer matches once a field changes.
            cases.append(
                (
                    f"field at {field_offset} = {value} with a stale CRC",
                    bytes(changed) + good[-4:],
                    True,
                )
            )
    for flags in (FLAG_GROUP | 0x10, FLAG_GROUP | FLAG_FRAGMENT | 0x20, FLAG_GROUP | 0x40):
        cases.append((f"group flags 0x{flags:02x}", seal(header(flags) + b"payload"), False))
    topical = encode_message(7, 9, b"payload", 1200, topic=b"a topic")[0]
    for frame in (good_fragment, topical):
        for length in range(len(frame) - 1):
            # Shorter than the smallest frame: malformed; longer: the last four
            # bytes are no longer the checksum.
            cases.append((f"{length} of {len(frame)} bytes", frame[:length], length >= 20))
    for count in (2, 3, 100, 65534, 65535):
        for length in (0, 1, count - 1):
            cases.append(
                (
                    f"{count} fragments of a {length}-byte message",
                    fragment(length, 0, count, b"a"),
                    False,
                )
            )
    for extra in (b"tU", b"tU\x01", b"tU\x01\x00", bytes(19), b"\xff" * 19):
        cases.append((f"short {extra!r}", extra, False))
    return cases


CASES = malformed_frames()


def test_the_table_is_large() -> None:
    assert len(CASES) >= 200


@pytest.mark.parametrize(("what", "frame", "crc"), CASES, ids=[c[0] for c in CASES])
def test_every_malformed_frame_is_refused(what: str, frame: bytes, crc: bool) -> None:
    with pytest.raises(BadFrame) as info:
        decode_frame_untrusted(frame)
    assert (info.value.reason is DropReason.CRC_ERROR) == crc


def test_an_engine_fed_the_table_delivers_nothing_and_accounts_for_all() -> None:
    engine = Engine(Config(), now=0.0)
    for number, (_what, frame, _crc) in enumerate(CASES):
        engine.receive_datagram(frame, ("127.0.0.1", 1000 + number % 7), 0.0)
    assert take(engine) == ([], [])
    stats = engine.statistics()
    assert stats.datagrams_received == len(CASES)
    assert stats.datagrams_crc_error == sum(crc for _what, _frame, crc in CASES)
    refused = stats.datagrams_crc_error + stats.datagrams_malformed
    assert refused + stats.datagrams_unauthenticated == len(CASES)
    assert stats.peers == 0


@FUZZ
@given(st.binary(max_size=1300))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    try:
        frame = decode_frame_untrusted(data)
    except BadFrame:
        return
    assert frame.fragment_index < frame.fragment_count  # pragma: no cover (2**-32 per try)


@FUZZ
@given(st.binary(min_size=16, max_size=16), st.binary(max_size=300))
def test_fuzz_sealed_frames_with_any_header(head: bytes, rest: bytes) -> None:
    # A valid checksum takes the fuzzing past the CRC into the field checks.
    frame_bytes = seal(MAGIC + b"\x01" + head[3:] + rest)
    try:
        frame = decode_frame_untrusted(frame_bytes)
    except BadFrame as exc:
        refused = exc
    else:
        check_decoded(frame)
        return
    assert refused.reason is not DropReason.CRC_ERROR


def check_decoded(frame: Frame) -> None:
    """What every frame the decoder accepts satisfies."""
    assert frame.fragment_index < frame.fragment_count <= max(frame.message_length, 1)
    assert len(frame.payload) <= frame.message_length or frame.fragment_count == 1
    frame.topic.decode()


@FUZZ
@given(
    st.integers(0, 0xFF),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=40),
    st.binary(max_size=200),
)
def test_fuzz_fragment_fields(
    flags: int, length: int, index: int, count: int, topic: bytes, payload: bytes
) -> None:
    extra = bytes((len(topic),)) + topic if topic else b""
    body = (
        header(flags | FLAG_FRAGMENT) + struct.pack("!IHH", length, index, count) + extra + payload
    )
    try:
        frame = decode_frame_untrusted(seal(body))
    except BadFrame as exc:
        refused = exc
    else:
        check_decoded(frame)
        assert len(frame.payload) > 0
        return
    assert refused.reason is not DropReason.CRC_ERROR


@pytest.mark.parametrize(
    "options",
    [{}, {"reliable": True}, {"framing": False}],
    ids=["unreliable", "reliable", "raw"],
)
def test_a_datagram_from_port_zero_opens_nothing_and_is_answered_by_nothing(
    options: dict[str, Any],
) -> None:
    """UDP source port 0 cannot be sent to: a datagram from it (a spoofed
    source) once opened a peer whose acknowledgement or reply failed with
    EINVAL, and ended the application's reply loop. It is dropped and counted."""
    config = Config(**options)
    client = Engine(config, now=0.0, connected_to=("10.0.0.1", 5000))
    assert client.client_peer is not None
    if config.reliable:
        client.queue(client.client_peer, b"hello", 0.0)
    else:
        client.send(client.client_peer, [b"hello"], 0.0)
    datagrams = [data for data, _, _ in client.datagrams_to_send(0.0)]
    datagrams.append(encode_control(KIND_PING, 7, 0, b"", sealer(None), authenticated=False))
    server = Engine(config, now=0.0)
    for datagram in datagrams:
        server.receive_datagram(datagram, ("10.0.0.2", 0), 0.0)
    assert take(server) == ([], [])
    assert server.datagrams_to_send(0.0) == []
    stats = server.statistics()
    assert stats.peers == 0
    assert stats.datagrams_received == stats.datagrams_malformed == len(datagrams)
