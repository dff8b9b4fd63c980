"""The Wireshark dissector (trioudp/wireshark/trioudp.lua) and its installer.

The frames come from the library itself: the sans-IO engines, driven by hand
with an explicit ``now``, make every kind a peer sends (plain, fragments, a
topic, a bundle, a group frame, keyed, reliable data, ACK, keepalive PING, path
MTU probe, both REJECTs); the frame encoders make the malformed ones no engine
sends. They go into a classic libpcap file (raw IPv4 and UDP on 127.0.0.1),
tshark dissects it with the plugin (PDML: every field with its raw bytes), and
each frame is compared, field by field, with what trioudp's own decoder
(``decode_frame_untrusted``, ``decode_ack_untrusted``, ``probe_packet``) makes
of it, CRC verdict included.

The heuristic claims a datagram of at least 20 bytes with the magic and
version 1, and nothing else; on the port set by the preference trioudp.port,
or by Decode As, every datagram is taken, and one the library would not decode
(too short, wrong magic or version, bad CRC, malformed) carries an expert
error. What the dissector cannot do is check a tag: that needs the key, so a
keyed frame with a damaged tag looks valid to it.

Linux senders hand runs of equal-sized frames to the kernel as one buffer (UDP
GSO), which a capture on the sending host shows as one datagram: the tests
build such aggregates from the engines' frames, cut as the transport cuts them
(``gso_runs``), and check that each frame in one is dissected as the library
decodes it, that a damaged frame among them is still flagged, and that a
damaged single frame is not taken for an aggregate; and, where this host can
capture on loopback, that a real GSO send is shown that way.

tshark runs with HOME pointing at an empty folder, so neither the personal
preferences nor a dissector installed there get in the way. Debian's tshark
runs Lua scripts as root (its init.lua sets run_user_scripts_when_superuser);
the tests check that a script was loaded rather than trust it.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from xml.etree import ElementTree

import pytest
import trio

import trioudp
from trioudp import Config
from trioudp._engine import Engine
from trioudp._frame import (
    FLAG_AUTH,
    FLAG_BUNDLE,
    FLAG_CONTROL,
    FLAG_FRAGMENT,
    FLAG_GROUP,
    FLAG_RELIABLE,
    FLAG_TOPIC,
    KIND_ACK,
    KIND_PING,
    KIND_REJECT,
    MAGIC,
    TAG_SIZE,
    VERSION,
    BadFrame,
    decode_ack_untrusted,
    decode_frame_untrusted,
    encode_ack_body,
    encode_bundle,
    encode_control,
    encode_message,
    probe_packet,
    sealer,
)
from trioudp._offload import GSO_MAX_SEGMENTS, gso_available, gso_runs
from trioudp._reasons import DropReason
from trioudp._wireshark import (
    PLUGIN,
    install,
    personal_plugins_folder,
    plugin_path,
    plugin_source,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioudp._peer import Peer

TSHARK = shutil.which("tshark")
#: Set by the monitoring nox session, which installs tshark: there a missing
#: tshark or a Lua that will not run is a failure, not a reason to skip.
REQUIRED = os.environ.get("TRIOUDP_REQUIRE_TSHARK") == "1"
needs_tshark = pytest.mark.skipif(
    TSHARK is None and not REQUIRED,
    reason="tshark is not installed (Debian/Ubuntu: apt-get install tshark)",
)
#: Seconds any one tshark run may take.
TIMEOUT = 120.0

CLIENT = ("127.0.0.1", 41000)
SERVER = ("127.0.0.1", 41001)
KEY = bytes(range(1, 33))
#: The flag bits under the dissector's names for them.
FLAG_FIELDS = {
    "trioudp.flags.fragment": FLAG_FRAGMENT,
    "trioudp.flags.topic": FLAG_TOPIC,
    "trioudp.flags.group": FLAG_GROUP,
    "trioudp.flags.auth": FLAG_AUTH,
    "trioudp.flags.reliable": FLAG_RELIABLE,
    "trioudp.flags.control": FLAG_CONTROL,
    "trioudp.flags.bundle": FLAG_BUNDLE,
    "trioudp.flags.reserved": 0x80,
}
#: Fields whose value is bytes (compared as hex), and the one string.
BYTES_FIELDS = {
    "trioudp.payload",
    "trioudp.bundle.message",
    "trioudp.control.body",
    "trioudp.ping.padding",
    "trioudp.ping.body",
    "trioudp.reject.body",
    "trioudp.extra",
    "trioudp.tag",
    "trioudp.topic",
}
#: Fields that only group others (a bundled message, an ACK range): counted.
GROUP_FIELDS = {"trioudp.bundle.entry", "trioudp.ack.range"}
#: The generated fields of a frame in a GSO aggregate.
GSO_FIELDS = ("trioudp.gso.segment_size", "trioudp.gso.segments", "trioudp.gso.segment")

Value = int | str
Fields = dict[str, list[Value]]


class Datagram(NamedTuple):
    label: str
    data: bytes
    source: int = CLIENT[1]
    destination: int = SERVER[1]


# -- frames, as the library makes them -----------------------------------------------


def sent(engine: Engine, now: float = 0.0) -> list[bytes]:
    return [datagram for datagram, _, _ in engine.datagrams_to_send(now)]


def until_sent(engine: Engine) -> list[bytes]:
    """What the engine sends by itself at its next timers (a PING, a delayed ACK)."""
    for _ in range(20):
        now = engine.next_deadline()
        engine.handle_timer(now)
        if out := sent(engine, now):
            return out
    raise AssertionError("the engine sent nothing at its timers")


def real_frames() -> list[Datagram]:
    """One or more frames of every kind, from the sans-IO engines."""
    sessions = itertools.count(0x7E57_0000_0000_0001).__next__

    def engine(
        config: Config, *, to: tuple[str, int] | None = SERVER, key: bytes | None = None
    ) -> Engine:
        return Engine(config, now=0.0, connected_to=to, new_session_id=sessions, key=key)

    frames: list[Datagram] = []

    def add(label: str, datagrams: Sequence[bytes], *, reply: bool = False) -> None:
        assert datagrams, label
        ports = (SERVER[1], CLIENT[1]) if reply else (CLIENT[1], SERVER[1])
        frames.extend(Datagram(label, datagram, *ports) for datagram in datagrams)

    client = engine(Config(keepalive=15.0))
    peer = client.client_peer
    assert peer is not None
    client.send(peer, [b"hello"], 0.0)
    add("plain", sent(client))
    client.send(peer, [b""], 0.0)
    add("empty", sent(client))
    client.send(peer, [bytes(range(256)) * 10], 0.0)
    add("fragment", sent(client))
    client.send(peer, [b"22.5"], 0.0, topic="sensors/température")
    add("topic", sent(client))
    client.send(peer, [b"a", b"bc", b"", b"def"], 0.0)
    add("bundle", sent(client))
    add("ping", until_sent(client))

    sender = engine(Config(), to=None)
    group = sender.destination(("239.1.2.3", 5000), 0.0)
    sender.send(group, [b"to everyone"], 0.0, topic="news")
    add("group", sent(sender))

    # Reliable: a bundle (messages 0 and 1), three fragments, a whole message, and
    # a path MTU probe; a receiver that missed the second and fourth datagram
    # acknowledges the rest in three ranges.
    reliable = engine(Config(reliable=True, probe_path_mtu=True))
    reliable_peer = reliable.client_peer
    assert reliable_peer is not None
    for payload in (b"one", b"two", bytes(2500), b"four"):
        reliable.queue(reliable_peer, payload, 0.0)
    flight = sent(reliable)
    add("reliable", flight)
    receiver = engine(Config(reliable=True), to=None)
    for index, datagram in enumerate(flight):
        if index not in (1, 3):
            receiver.receive_datagram(datagram, CLIENT, 0.001 * index)
    add("ack", sent(receiver, 0.01), reply=True)

    # Each end rejects the other kind of frame.
    unreliable = engine(Config(), to=None)
    unreliable.receive_datagram(flight[0], CLIENT, 0.0)
    add("reject", sent(unreliable), reply=True)
    strict = engine(Config(reliable=True), to=None)
    strict.receive_datagram(frames[0].data, CLIENT, 0.0)
    add("reject", sent(strict), reply=True)

    # Keyed: reliable data and its ACK, each with a tag in place of the CRC.
    keyed = engine(Config(reliable=True), key=KEY)
    keyed_peer = keyed.client_peer
    assert keyed_peer is not None
    keyed.queue(keyed_peer, b"secret", 0.0)
    keyed_data = sent(keyed)
    add("keyed", keyed_data)
    keyed_receiver = engine(Config(reliable=True), to=None, key=KEY)
    keyed_receiver.receive_datagram(keyed_data[0], CLIENT, 0.0)
    add("keyed", until_sent(keyed_receiver), reply=True)
    return frames


def header(flags: int, session: int = 0xC0FFEE, value: int = 7) -> bytes:
    return struct.pack("!2sBBQI", MAGIC, VERSION, flags, session, value)


SEAL = sealer(None)


def edge_frames() -> list[Datagram]:
    """Valid frames that engines send only in rare states (numbers wrapping
    around 2**32, a PING or REJECT body of a kind not known yet), made with
    the library's encoders."""
    wrapped = encode_ack_body(0.0, 5, 1, [(2, 2**32 - 2), (2**32 - 4, 2**32 - 4)])
    return [
        Datagram(
            "ACK across the wrap",
            encode_control(KIND_ACK, 1, 9, wrapped, SEAL, authenticated=False),
        ),
        Datagram("bundle across the wrap", encode_bundle(1, 2**32 - 1, [b"last", b"first"])),
        Datagram(
            "PING, short body",
            encode_control(KIND_PING, 1, 2, b"\x01abc", SEAL, authenticated=False),
        ),
        Datagram(
            "PING, other body",
            encode_control(KIND_PING, 1, 2, b"\x02abcd", SEAL, authenticated=False),
        ),
        Datagram(
            "REJECT, unknown", encode_control(KIND_REJECT, 1, 7, b"why", SEAL, authenticated=False)
        ),
        Datagram(
            "topic of 4-byte characters",
            encode_message(1, 2, b"x", 1200, topic="π/🎉\U0010ffff".encode())[0],
        ),
        Datagram("keyed fragment", encode_message(3, 4, bytes(100), 60, topic=b"t", key=KEY)[-1]),
    ]


def malformed_frames() -> list[Datagram]:
    """Frames with a good CRC (or tag) that the library refuses as malformed,
    made with its encoders where they can make them."""
    ack = encode_ack_body(0.001, 5, 3, [(9, 4)])
    bodies = {
        "reserved flag": SEAL(header(0x80) + b"x"),
        "unknown control kind": encode_control(9, 1, 2, b"", SEAL, authenticated=False),
        "control without a kind": SEAL(header(FLAG_CONTROL)),
        "control with data flags": SEAL(header(FLAG_CONTROL | FLAG_TOPIC) + bytes((KIND_PING,))),
        "ACK too short": encode_control(KIND_ACK, 1, 2, ack[:10], SEAL, authenticated=False),
        "ACK count off": encode_control(KIND_ACK, 1, 2, ack + b"\0", SEAL, authenticated=False),
        "ACK range upside down": encode_control(
            KIND_ACK, 1, 2, encode_ack_body(0.0, 5, 3, [(4, 9)]), SEAL, authenticated=False
        ),
        "fragment index past count": SEAL(
            header(FLAG_FRAGMENT) + struct.pack("!IHH", 9, 3, 3) + b"abc"
        ),
        "fragment count past length": SEAL(
            header(FLAG_FRAGMENT) + struct.pack("!IHH", 2, 0, 3) + b"ab"
        ),
        "lone fragment not whole": SEAL(
            header(FLAG_FRAGMENT) + struct.pack("!IHH", 5, 0, 1) + b"abc"
        ),
        "fragment without payload": SEAL(header(FLAG_FRAGMENT) + struct.pack("!IHH", 5, 0, 2)),
        "fragment header cut": SEAL(header(FLAG_FRAGMENT) + b"\0\0\0"),
        "bundle cut off": SEAL(header(FLAG_BUNDLE) + b"\0\5ab"),
        "bundle length cut": SEAL(header(FLAG_BUNDLE) + b"\0\1a\0"),
        "empty bundle": SEAL(header(FLAG_BUNDLE)),
        "bundle fragment": SEAL(
            header(FLAG_BUNDLE | FLAG_FRAGMENT) + struct.pack("!IHH", 1, 0, 1) + b"\0\1a"
        ),
        "topic length zero": SEAL(header(FLAG_TOPIC) + b"\0hi"),
        "topic past end": SEAL(header(FLAG_TOPIC) + b"\x09hi"),
        "topic not UTF-8": SEAL(header(FLAG_TOPIC) + b"\x01\xffhi"),
        "topic surrogate": SEAL(header(FLAG_TOPIC) + b"\x03\xed\xa0\x80hi"),
        "topic overlong": SEAL(header(FLAG_TOPIC) + b"\x02\xc0\x80hi"),
        "topic overlong, 4 bytes": SEAL(header(FLAG_TOPIC) + b"\x04\xf0\x80\x80\x80hi"),
        "topic above U+10FFFF": SEAL(header(FLAG_TOPIC) + b"\x04\xf4\x90\x80\x80hi"),
        "topic cut in a character": SEAL(header(FLAG_TOPIC) + b"\x02\xe2\x82hi"),
        "reliable group": SEAL(header(FLAG_RELIABLE | FLAG_GROUP) + bytes(8) + b"x"),
        "reliable cut": SEAL(header(FLAG_RELIABLE) + bytes(5)),
        "keyed too short": sealer(KEY)(header(FLAG_AUTH)[:12]),
    }
    return [Datagram(label, data) for label, data in bodies.items()]


def damaged(frames: Sequence[Datagram]) -> list[Datagram]:
    """Good frames damaged on the way: a flipped bit, a cut, a foreign version."""
    by_label = {frame.label: frame.data for frame in reversed(frames)}
    plain, fragment, topic = by_label["plain"], by_label["fragment"], by_label["topic"]
    return [
        Datagram("flipped payload bit", flip(plain, 17)),
        Datagram("flipped topic bit", flip(topic, 20)),
        Datagram("flipped CRC bit", flip(plain, len(plain) - 1)),
        Datagram("truncated fragment", fragment[:40]),
        Datagram("shorter than a frame", plain[:12]),
        Datagram("other version", plain[:2] + b"\x02" + plain[3:]),
        Datagram("other magic", b"tV" + plain[2:]),
    ]


def flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x04
    return bytes(changed)


def mutants(frames: Sequence[Datagram], count: int, seed: int = 15) -> list[Datagram]:
    """Frames changed at random and sealed again (with the key if AUTH is set),
    so that what is wrong with them, if anything, is their structure; a few
    also get a damaged CRC."""
    rng = random.Random(seed)
    made: list[Datagram] = []
    for number in range(count):
        data = rng.choice(frames).data
        body = bytearray(data[: -(TAG_SIZE if data[3] & FLAG_AUTH else 4)])
        how = rng.choice(["byte", "byte", "flags", "cut", "grow", "length"])
        if how == "byte" and body:
            body[rng.randrange(min(len(body), 48))] = rng.randrange(256)
        elif how == "flags":
            body[3] = rng.choice([rng.randrange(256), rng.randrange(128) & ~FLAG_AUTH])
        elif how == "cut":
            del body[rng.randrange(len(body) + 1) :]
        elif how == "grow":
            body += rng.randbytes(rng.randrange(1, 12))
        elif body[16:]:  # a length or count field (ACK range count, topic length, ...)
            body[rng.randrange(16, min(len(body), 36))] = rng.choice([0, 1, 2, 3, 5, 33, 255])
        keyed = len(body) > 3 and body[3] & FLAG_AUTH
        sealed = sealer(KEY if keyed else None)(bytes(body))
        if not keyed and rng.random() < 0.1:
            sealed = flip(sealed, len(sealed) - 2)
        made.append(Datagram(f"mutant {number} ({how})", sealed))
    return made


class Run(NamedTuple):
    """Frames one GSO send carries: a capture on the sending host shows them as
    one datagram, back to back."""

    label: str
    frames: list[bytes]

    @property
    def data(self) -> bytes:
        return b"".join(self.frames)


def gso_aggregates() -> list[Run]:
    """The runs of two or more frames that the transport would hand to one GSO
    send (cut by ``gso_runs``, as it cuts them) when the engines send large
    messages and bursts: fragments with a shorter last one, whole messages of
    one size, bundles, a run of the most segments a send takes, reliable and
    keyed fragments."""
    sessions = itertools.count(0x6750_0000_0000_0001).__next__
    runs: list[Run] = []

    def add(label: str, datagrams: Sequence[bytes]) -> None:
        for start, stop in gso_runs([len(datagram) for datagram in datagrams]):
            if stop - start > 1:
                name = f"{label}, from frame {start}" if start else label
                runs.append(Run(name, list(datagrams[start:stop])))

    def engine(config: Config, key: bytes | None = None) -> Engine:
        return Engine(config, now=0.0, connected_to=SERVER, new_session_id=sessions, key=key)

    def peer_of(engine: Engine) -> Peer:
        peer = engine.client_peer
        assert peer is not None
        return peer

    plain = engine(Config())
    plain.send(peer_of(plain), [bytes(range(256)) * 20], 0.0)
    add("fragments", sent(plain))
    plain.send(peer_of(plain), [bytes((n,)) * 1100 for n in range(3)], 0.0)
    add("whole messages", sent(plain))
    plain.send(peer_of(plain), [bytes((n,)) * 500 for n in range(9)], 0.0)
    add("bundles", sent(plain))
    plain.send(peer_of(plain), [bytes((n,)) * 700 for n in range(GSO_MAX_SEGMENTS + 6)], 0.0)
    add("many", sent(plain))
    reliable = engine(Config(reliable=True))
    reliable.queue(peer_of(reliable), bytes(range(250)) * 12, 0.0)
    add("reliable", sent(reliable))
    keyed = engine(Config(reliable=True), key=KEY)
    keyed.queue(peer_of(keyed), bytes(range(250)) * 12, 0.0)
    add("keyed reliable", sent(keyed))
    keyed_plain = engine(Config(), key=KEY)
    keyed_plain.send(peer_of(keyed_plain), [bytes(4000)], 0.0, topic="bulk")
    add("keyed", sent(keyed_plain))
    return runs


def damaged_runs(runs: Sequence[Run]) -> list[Run]:
    """Aggregates with one frame damaged on the way: one in the middle, the
    shorter last one, one of many. (A damaged first frame hides the others:
    see test_damaged_single_frames_are_not_taken_for_aggregates.)"""
    by_label = {run.label: run.frames for run in runs}
    made: list[Run] = []
    for label, index, at in (("reliable", 1, 100), ("fragments", -1, 50), ("many", 40, -1)):
        frames = list(by_label[label])
        frames[index] = flip(frames[index], at)
        made.append(Run(f"{label}, frame {index} damaged", frames))
    return made


# -- what the library makes of them --------------------------------------------------


def verdict(data: bytes) -> DropReason | None:
    """Why the library's receiver drops this datagram before any per-stream rule
    (None: it decodes). A keyed frame is checked with the key it was made with."""
    key = KEY if len(data) > 3 and data[3] & FLAG_AUTH else None
    try:
        frame = decode_frame_untrusted(data, key)
        if frame.kind == KIND_ACK:
            decode_ack_untrusted(frame.payload)
    except BadFrame as exc:
        return exc.reason
    return None


def decoded(data: bytes) -> Fields:
    """The fields of a valid frame, as the library decodes them, under the
    dissector's names."""
    key = KEY if data[3] & FLAG_AUTH else None
    frame = decode_frame_untrusted(data, key)
    flags = data[3]  # (the one field a Frame does not keep as it is)
    assert frame.group == bool(flags & FLAG_GROUP)
    fields: Fields = {
        "trioudp.magic": [int.from_bytes(MAGIC, "big")],
        "trioudp.version": [VERSION],
        "trioudp.flags": [flags],
        **{name: [int(bool(flags & bit))] for name, bit in FLAG_FIELDS.items()},
        "trioudp.session": [frame.session],
    }
    payload = bytes(frame.payload)
    if flags & FLAG_CONTROL:
        fields["trioudp.control.kind"] = [frame.kind]
        if frame.kind == KIND_ACK:
            ack = decode_ack_untrusted(payload)
            fields["trioudp.ack.window"] = [frame.sequence]
            fields["trioudp.ack.delay"] = [round(ack.delay * 1e6)]
            fields["trioudp.ack.receiver"] = [ack.receiver]
            fields["trioudp.ack.delivered"] = [ack.delivered]
            fields["trioudp.ack.range_count"] = [len(ack.ranges)]
            fields["trioudp.ack.range"] = [len(ack.ranges)]
            fields["trioudp.ack.largest"] = [high for high, _ in ack.ranges]
            fields["trioudp.ack.smallest"] = [low for _, low in ack.ranges]
        elif frame.kind == KIND_PING:
            fields["trioudp.ping.oldest"] = [frame.sequence]
            packet = probe_packet(payload)
            if packet is not None:
                fields["trioudp.ping.body_kind"] = [payload[0]]
                fields["trioudp.ping.probe_packet"] = [packet]
                fields["trioudp.ping.padding"] = [payload[5:].hex()] if payload[5:] else []
            elif payload:
                fields["trioudp.ping.body"] = [payload.hex()]
        else:
            assert frame.kind == KIND_REJECT
            fields["trioudp.reject.reason"] = [frame.sequence]
            fields["trioudp.reject.body"] = [payload.hex()] if payload else []
    else:
        fields["trioudp.seq"] = [frame.sequence]
        if frame.packet >= 0:
            fields["trioudp.packet"] = [frame.packet]
            fields["trioudp.oldest"] = [frame.oldest]
        if flags & FLAG_FRAGMENT:
            fields["trioudp.msg_length"] = [frame.message_length]
            fields["trioudp.frag_index"] = [frame.fragment_index]
            fields["trioudp.frag_count"] = [frame.fragment_count]
        if frame.topic:
            fields["trioudp.topic_length"] = [len(frame.topic)]
            fields["trioudp.topic"] = [frame.topic.hex()]
        if frame.parts:
            parts = [bytes(part) for part in frame.parts]
            fields["trioudp.bundle.count"] = [len(parts)]
            fields["trioudp.bundle.entry"] = [len(parts)]
            fields["trioudp.bundle.length"] = [len(part) for part in parts]
            fields["trioudp.bundle.seq"] = [(frame.sequence + i) % 2**32 for i in range(len(parts))]
            fields["trioudp.bundle.message"] = [part.hex() for part in parts]
        else:
            fields["trioudp.payload"] = [payload.hex()]
    if key is None:
        fields["trioudp.crc"] = [int.from_bytes(data[-4:], "big")]
        fields["trioudp.crc.status"] = [1]
    else:
        fields["trioudp.tag"] = [data[-TAG_SIZE:].hex()]
    return {name: values for name, values in fields.items() if values}


# -- what tshark makes of them -------------------------------------------------------


def ip_checksum(ip_header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(ip_header) // 2}H", ip_header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_pcap(path: Path, datagrams: Sequence[Datagram], snaplen: int = 65535) -> None:
    """A classic libpcap file (link type 101, raw IP): each datagram in an IPv4
    and a UDP header, from 127.0.0.1 to 127.0.0.1, a second apart; of each
    packet, the first ``snaplen`` bytes captured."""
    records = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 101)]
    loopback = bytes((127, 0, 0, 1))
    for number, datagram in enumerate(datagrams):
        udp = struct.pack("!HHHH", datagram.source, datagram.destination, 8 + len(datagram.data), 0)
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            28 + len(datagram.data),
            number & 0xFFFF,
            0x4000,
            64,
            17,
            0,
            loopback,
            loopback,
        )
        ip = ip[:10] + struct.pack("!H", ip_checksum(ip)) + ip[12:]
        packet = ip + udp + datagram.data
        captured = packet[:snaplen]
        records.append(struct.pack("<IIII", number, 0, len(captured), len(packet)) + captured)
    path.write_bytes(b"".join(records))


@functools.cache
def lua_refused() -> str | None:
    """Why this tshark would run no Lua script of ours, if it would not: its
    init.lua turns Lua off, or off for root (Debian's leaves both on)."""
    assert TSHARK is not None
    folders = subprocess.run(
        [TSHARK, "-G", "folders"], capture_output=True, text=True, timeout=TIMEOUT, check=True
    ).stdout
    init = Path(
        next(
            (
                line.split(":", 1)[1].strip()
                for line in folders.splitlines()
                if line.startswith("Global configuration:")
            ),
            "",
        ),
        "init.lua",
    )
    text = init.read_text(errors="replace") if init.is_file() else ""
    if re.search(r"^\s*enable_lua\s*=\s*false", text, re.MULTILINE):
        return f"tshark's Lua is turned off (enable_lua = false in {init})"
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if root and re.search(r"^\s*run_user_scripts_when_superuser\s*=\s*false", text, re.MULTILINE):
        return (
            f"tshark runs no Lua scripts as root here: set run_user_scripts_when_superuser = "
            f"true in {init}, or run the tests as another user"
        )
    return None


@pytest.fixture
def tshark_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose Wireshark folders are empty and ours."""
    if (reason := lua_refused()) is not None:
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    home = tmp_path / "home"
    home.mkdir()
    env = {name: value for name, value in os.environ.items() if not name.startswith("WIRESHARK")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), LC_ALL="C.UTF-8")
    return env


def tshark(env: dict[str, str], *arguments: str, plugin: bool = True) -> str:
    assert TSHARK is not None
    command = [TSHARK, "-n"]
    if plugin:
        command += ["-X", f"lua_script:{plugin_path()}"]
    result = subprocess.run(
        [*command, *arguments],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Lua" not in result.stderr, result.stderr  # a script that failed to load
    return result.stdout


class Tree(NamedTuple):
    """One trioudp tree: a frame's fields in order, and its expert infos."""

    fields: Fields
    experts: list[tuple[str, str]]


class Dissected(NamedTuple):
    """One packet as tshark dissected it: trioudp's fields in order (None if it
    did not take the packet; the first frame's, in a GSO aggregate), the
    expert infos, anything that went wrong, and each frame's tree."""

    fields: Fields | None
    experts: list[tuple[str, str]]
    errors: list[str]
    trees: list[Tree]


def field_value(element: ElementTree.Element) -> Value:
    name = element.get("name", "")
    if name in GROUP_FIELDS:
        return 1
    raw = element.get("value")
    if name in BYTES_FIELDS:
        return raw or ""
    return int(raw, 16) if raw else int(element.get("show", ""), 0)


def dissect(env: dict[str, str], pcap: Path, *options: str, plugin: bool = True) -> list[Dissected]:
    out = tshark(env, "-r", str(pcap), "-T", "pdml", *options, plugin=plugin)
    packets: list[Dissected] = []
    for packet in ElementTree.fromstring(out).iter("packet"):
        errors = [
            element.get("show", "") or element.get("showname", "")
            for element in packet.iter()
            if element.get("name", "").startswith("_ws.lua.error")
            or "Lua Error" in element.get("show", "") + element.get("showname", "")
        ]
        trees: list[Tree] = []
        for proto in packet.iter("proto"):
            if proto.get("name") == "trioudp":
                trees.append(Tree({}, []))
                collect(proto, trees[-1].fields, trees[-1].experts)
        experts = [expert for tree in trees for expert in tree.experts]
        packets.append(Dissected(trees[0].fields if trees else None, experts, errors, trees))
    return packets


def collect(element: ElementTree.Element, fields: Fields, experts: list[tuple[str, str]]) -> None:
    for child in element:
        name = child.get("name", "")
        if name == "_ws.expert":
            kind = child[0].get("name", "")
            message = next(
                (
                    each.get("show", "")
                    for each in child
                    if each.get("name") == "_ws.expert.message"
                ),
                "",
            )
            experts.append((kind, message))
            continue
        if name.startswith("trioudp."):
            values = fields.setdefault(name, [])
            if name in GROUP_FIELDS:
                fields[name] = [int(values[0]) + 1] if values else [1]
            else:
                values.append(field_value(child))
        collect(child, fields, experts)


def summaries(env: dict[str, str], pcap: Path) -> list[str]:
    """The Info column of every packet."""
    out = tshark(env, "-r", str(pcap), "-o", 'gui.column.format:"No.","%m","Info","%i"')
    return [line.strip().split(maxsplit=1)[1] for line in out.splitlines() if line.strip()]


def claimed_by_heuristic(data: bytes) -> bool:
    return len(data) >= 20 and data[:3] == MAGIC + bytes((VERSION,))


def check(datagram: Datagram, packet: Dissected) -> None:
    """tshark's dissection of a datagram it took as trioudp agrees with the library."""
    label = datagram.label
    assert packet.errors == [], label
    assert packet.fields is not None, label
    assert len(packet.trees) == 1, label  # (not taken for a GSO aggregate)
    reason = verdict(datagram.data)
    kinds = {kind for kind, _ in packet.experts}
    if reason is None:
        assert packet.experts == [], label
        assert packet.fields == decoded(datagram.data), label
    elif reason is DropReason.CRC_ERROR:
        assert "trioudp.crc.bad" in kinds, label
        assert packet.fields["trioudp.crc.status"] == [0], label
        (wanted,) = packet.fields["trioudp.crc"]
        assert wanted == int.from_bytes(datagram.data[-4:], "big"), label
        assert packet.fields["trioudp.crc.calculated"] != [wanted], label
    else:
        assert reason in (DropReason.MALFORMED, DropReason.UNAUTHENTICATED), label
        assert "trioudp.malformed" in kinds, label
        assert packet.fields.get("trioudp.crc.status", [1]) == [1], label
    assert kinds <= {"trioudp.malformed", "trioudp.crc.bad"}, label


@pytest.fixture(scope="module")
def frames() -> list[Datagram]:
    return real_frames()


# -- the tests -----------------------------------------------------------------------


def test_the_frames_cover_every_kind(frames: list[Datagram]) -> None:
    """(What the dissector tests below rely on, checked without tshark.)"""
    decoded_frames = [
        decode_frame_untrusted(f.data, KEY if f.label == "keyed" else None) for f in frames
    ]
    assert {frame.kind for frame in decoded_frames} == {0, KIND_ACK, KIND_PING, KIND_REJECT}
    assert {frame.sequence for frame in decoded_frames if frame.kind == KIND_REJECT} == {1, 2}
    assert any(probe_packet(frame.payload) is not None for frame in decoded_frames)
    assert any(frame.kind == KIND_PING and not frame.payload for frame in decoded_frames)
    acks = [decode_ack_untrusted(f.payload) for f in decoded_frames if f.kind == KIND_ACK]
    assert max(len(ack.ranges) for ack in acks) >= 3
    flags = {f.data[3] for f in frames}
    for bit in (FLAG_FRAGMENT, FLAG_TOPIC, FLAG_GROUP, FLAG_AUTH, FLAG_RELIABLE, FLAG_BUNDLE):
        assert any(each & bit for each in flags), hex(bit)
    assert any(f.data[3] & FLAG_AUTH and f.data[3] & FLAG_CONTROL for f in frames)
    assert any(f.data[3] & FLAG_RELIABLE and f.data[3] & FLAG_BUNDLE for f in frames)
    assert all(verdict(f.data) is None for f in frames + edge_frames())
    assert [verdict(f.data) for f in malformed_frames()] == [DropReason.MALFORMED] * (
        len(malformed_frames()) - 1
    ) + [DropReason.UNAUTHENTICATED]  # (keyed, too short for a tag)
    assert [verdict(f.data) for f in damaged(frames)][:4] == [DropReason.CRC_ERROR] * 4


@needs_tshark
def test_tshark_shows_every_field_of_every_kind_as_the_library_decodes_it(
    frames: list[Datagram], tshark_env: dict[str, str], tmp_path: Path
) -> None:
    datagrams = frames + edge_frames() + malformed_frames() + damaged(frames)
    pcap = tmp_path / "trioudp.pcap"
    write_pcap(pcap, datagrams)
    packets = dissect(tshark_env, pcap)
    assert len(packets) == len(datagrams)
    for datagram, packet in zip(datagrams, packets, strict=True):
        if claimed_by_heuristic(datagram.data):
            check(datagram, packet)
        else:  # left to other dissectors: shown as UDP data
            assert packet.fields is None, datagram.label
    topics = [
        p.fields["trioudp.topic"] for p in packets if p.fields and "trioudp.topic" in p.fields
    ]
    assert ["sensors/température".encode().hex()] in topics


@needs_tshark
@pytest.mark.parametrize(
    "option",
    [("-o", f"trioudp.port:{SERVER[1]}"), ("-d", f"udp.port=={SERVER[1]},trioudp")],
    ids=["preference", "decode-as"],
)
def test_on_its_port_every_datagram_is_dissected_and_the_foreign_ones_flagged(
    frames: list[Datagram], tshark_env: dict[str, str], tmp_path: Path, option: tuple[str, str]
) -> None:
    datagrams = damaged(frames) + frames[:2]
    pcap = tmp_path / "port.pcap"
    write_pcap(pcap, datagrams)
    packets = dissect(tshark_env, pcap, *option)
    for datagram, packet in zip(datagrams, packets, strict=True):
        check(datagram, packet)
    assert [[message for _, message in p.experts] for p in packets[4:7]] == [
        ["12 bytes is shorter than the 20-byte smallest frame"],
        ["unsupported frame version 2"],
        ["wrong magic bytes: not a trioudp frame"],
    ]


@needs_tshark
def test_a_frame_the_capture_cut_short_shows_its_header_and_no_verdict(
    frames: list[Datagram], tshark_env: dict[str, str], tmp_path: Path
) -> None:
    pcap = tmp_path / "snaplen.pcap"
    fragment = next(f for f in frames if f.label == "fragment")
    write_pcap(pcap, [fragment], snaplen=28 + 14)  # the IP and UDP headers, 14 bytes of it
    (packet,) = dissect(tshark_env, pcap)
    assert packet.errors == []
    assert packet.experts == []  # a CRC it cannot see is neither good nor bad
    assert packet.fields is not None
    assert packet.fields["trioudp.flags"] == [FLAG_FRAGMENT]
    assert "trioudp.seq" not in packet.fields  # (bytes 12 to 15: not captured)
    assert "trioudp.crc" not in packet.fields


@needs_tshark
def test_randomly_changed_frames_get_the_librarys_verdict_and_fields(
    frames: list[Datagram], tshark_env: dict[str, str], tmp_path: Path
) -> None:
    """Whatever the bytes, the dissector raises no Lua error, flags exactly
    the frames the library refuses, and shows the fields of the others as the
    library decodes them."""
    datagrams = mutants(frames + edge_frames(), 600)
    pcap = tmp_path / "mutants.pcap"
    write_pcap(pcap, datagrams)
    packets = dissect(tshark_env, pcap, "-o", f"trioudp.port:{SERVER[1]}")
    outcomes = {verdict(d.data) for d in datagrams}
    assert {None, DropReason.MALFORMED, DropReason.CRC_ERROR} <= outcomes  # a fair mix
    for datagram, packet in zip(datagrams, packets, strict=True):
        check(datagram, packet)


@needs_tshark
def test_the_info_column_sums_up_each_frame(
    frames: list[Datagram], tshark_env: dict[str, str], tmp_path: Path
) -> None:
    datagrams = frames + damaged(frames)[:1] + malformed_frames()[:1]
    pcap = tmp_path / "info.pcap"
    write_pcap(pcap, datagrams)
    lines = summaries(tshark_env, pcap)
    info = dict(zip([d.label for d in datagrams], lines, strict=True))  # (the last of a label)
    assert lines[0] == info["plain"] == "DATA seq=0 len=5"
    assert info["empty"] == "DATA seq=1 len=0"
    assert "DATA seq=2 frag=0/3 len=1172" in lines
    assert info["topic"] == "DATA seq=3 topic=sensors/température len=4"
    assert info["bundle"] == "BUNDLE seq=4..7 n=4"
    assert info["ping"].startswith("PING oldest=")
    assert info["group"] == "DATA seq=0 topic=news len=11 [GROUP]"
    assert "BUNDLE seq=0..1 n=2 pkt=0 oldest=0" in lines
    assert any(line.startswith("PING oldest=0 probe packet=") for line in lines)
    assert info["ack"].startswith("ACK window=")
    assert info["ack"].endswith("ranges=5-4,2,0")
    assert "REJECT reason=1 (the receiver is not reliable)" in lines
    assert "REJECT reason=2 (the receiver takes only reliable frames)" in lines
    assert info["keyed"].endswith("[AUTH]")
    assert info["flipped payload bit"] == "DATA seq=0 len=5 [CRC BAD]"
    assert info["reserved flag"].endswith("[MALFORMED: unknown flag bits 0x80]")


def segment(run: Run, index: int, tree: Tree, errors: list[str]) -> tuple[Datagram, Dissected]:
    """A frame of an aggregate, and what tshark showed of it (less the GSO
    fields, checked here), for ``check``."""
    label = f"{run.label}, frame {index}"
    fields = dict(tree.fields)
    assert [fields.pop(name, None) for name in GSO_FIELDS] == [
        [len(run.frames[0])],
        [len(run.frames)],
        [index + 1],
    ], label
    return Datagram(label, run.frames[index]), Dissected(fields, tree.experts, errors, [tree])


@pytest.fixture(scope="module")
def aggregates() -> list[Run]:
    return gso_aggregates()


def test_the_aggregates_are_gso_runs(aggregates: list[Run]) -> None:
    """(What the tests below rely on, checked without tshark.)"""
    assert {run.label for run in aggregates} >= {
        "fragments",
        "whole messages",
        "bundles",
        "many",
        "reliable",
        "keyed reliable",
        "keyed",
    }
    for run in aggregates:
        sizes = [len(frame) for frame in run.frames]
        assert sizes[:-1] == [sizes[0]] * (len(sizes) - 1), run.label
        assert sizes[-1] <= sizes[0], run.label
        assert all(verdict(frame) is None for frame in run.frames), run.label
        assert verdict(run.data) is not None, run.label  # not one frame
    assert any(len(run.frames[-1]) < len(run.frames[0]) for run in aggregates)
    assert any(len(set(map(len, run.frames))) == 1 for run in aggregates)
    assert max(len(run.frames) for run in aggregates) == GSO_MAX_SEGMENTS
    flags = {run.frames[0][3] for run in aggregates}
    for bit in (FLAG_FRAGMENT, FLAG_BUNDLE, FLAG_RELIABLE, FLAG_AUTH):
        assert any(each & bit for each in flags), hex(bit)
    assert any(not each & FLAG_FRAGMENT for each in flags)


@needs_tshark
def test_each_frame_of_a_gso_aggregate_is_dissected_as_the_library_decodes_it(
    aggregates: list[Run], tshark_env: dict[str, str], tmp_path: Path
) -> None:
    pcap = tmp_path / "gso.pcap"
    write_pcap(pcap, [Datagram(run.label, run.data) for run in aggregates])
    packets = dissect(tshark_env, pcap)
    for run, packet in zip(aggregates, packets, strict=True):
        assert packet.errors == [], run.label
        assert len(packet.trees) == len(run.frames), run.label
        for index, tree in enumerate(packet.trees):
            datagram, shown = segment(run, index, tree, packet.errors)
            assert shown.experts == [], datagram.label
            assert shown.fields == decoded(datagram.data), datagram.label


@needs_tshark
def test_the_info_column_lists_an_aggregates_frames(
    aggregates: list[Run], tshark_env: dict[str, str], tmp_path: Path
) -> None:
    """As the frames would be shown one by one, then how many, of what size."""
    runs = [run for run in aggregates if run.label in ("fragments", "bundles", "keyed reliable")]
    alone = [Datagram(run.label, frame) for run in runs for frame in run.frames]
    pcap = tmp_path / "gso-info.pcap"
    write_pcap(pcap, [Datagram(run.label, run.data) for run in runs] + alone)
    lines = summaries(tshark_env, pcap)
    shown, one_by_one = lines[: len(runs)], iter(lines[len(runs) :])
    for run, line in zip(runs, shown, strict=True):
        frames = " | ".join(next(one_by_one) for _ in run.frames)
        assert line == f"{frames} [GSO {len(run.frames)} \u00d7 {len(run.frames[0])}]"
    assert shown[0].startswith("DATA seq=0 frag=0/5 len=1172 | DATA seq=0 frag=1/5 len=1172 | ")
    assert shown[0].endswith(" [GSO 5 \u00d7 1200]")


@needs_tshark
def test_a_damaged_frame_in_an_aggregate_is_flagged_and_the_others_are_not(
    aggregates: list[Run], tshark_env: dict[str, str], tmp_path: Path
) -> None:
    runs = damaged_runs(aggregates)
    pcap = tmp_path / "gso-damaged.pcap"
    write_pcap(pcap, [Datagram(run.label, run.data) for run in runs])
    packets = dissect(tshark_env, pcap)
    for run, packet in zip(runs, packets, strict=True):
        assert len(packet.trees) == len(run.frames), run.label
        reasons: list[DropReason | None] = []
        for index, tree in enumerate(packet.trees):
            check(*segment(run, index, tree, packet.errors))
            reasons.append(verdict(run.frames[index]))
        assert reasons.count(DropReason.CRC_ERROR) == 1, run.label
        assert reasons.count(None) == len(run.frames) - 1, run.label
        assert [kind for kind, _ in packet.experts] == ["trioudp.crc.bad"], run.label


@needs_tshark
def test_damaged_single_frames_are_not_taken_for_aggregates(
    frames: list[Datagram], aggregates: list[Run], tshark_env: dict[str, str], tmp_path: Path
) -> None:
    """A frame whose CRC is bad stays one frame, flagged: however large, and
    even when it carries an aggregate's bytes. The same goes for an aggregate
    whose first frame is damaged: its CRC is what proves where the frames
    end, so it is shown as one frame with a bad CRC (the limit the plugin's
    header comment names)."""
    by_label = {run.label: run.data for run in aggregates}
    probe = next(f.data for f in frames if f.data[3] & FLAG_CONTROL and len(f.data) > 1000)
    carrier = encode_message(7, 8, by_label["reliable"], 65507)
    keyed_carrier = encode_message(7, 8, by_label["keyed reliable"], 65507, key=KEY)
    assert len(carrier) == len(keyed_carrier) == 1
    datagrams = [
        *damaged(frames),
        Datagram("damaged probe", flip(probe, 700)),
        Datagram("an aggregate carried", carrier[0]),
        Datagram("an aggregate carried, damaged", flip(carrier[0], len(carrier[0]) - 30)),
        Datagram("a keyed aggregate carried", keyed_carrier[0]),
        Datagram("first frame damaged", flip(by_label["reliable"], 100)),
    ]
    pcap = tmp_path / "not-gso.pcap"
    write_pcap(pcap, datagrams)
    for datagram, packet in zip(datagrams, dissect(tshark_env, pcap), strict=True):
        if claimed_by_heuristic(datagram.data):
            check(datagram, packet)
            assert not set(GSO_FIELDS) & set(packet.fields or {}), datagram.label
    assert verdict(datagrams[-1].data) is DropReason.CRC_ERROR


#: A capture filter for the first datagram to ``port`` longer than a frame
#: (1200 bytes, in a packet of 1242 on lo) whose flags (the UDP payload's 4th
#: byte) lack CONTROL, so not a path MTU probe: a GSO buffer of data frames.
LARGE_DATA = "udp dst port {port} and greater 1350 and udp[11] & 0x20 = 0"


async def capture_gso_send(dumpcap: str, pcap: Path, payload: bytes) -> bytes | str:
    """Capture on loopback the first large data datagram while trioudp sends
    ``payload`` reliably from one endpoint to another: what the receiver got,
    or why nothing could be captured."""
    async with trioudp.open_udp_server("127.0.0.1", 0, reliable=True) as server:
        port = server.local_address[1]
        command = [dumpcap, "-i", "lo", "-f", LARGE_DATA.format(port=port), "-c", "1"]
        process = await trio.lowlevel.open_process(
            [*command, "-w", str(pcap)], stderr=subprocess.PIPE
        )
        try:
            assert process.stderr is not None
            said = b""
            with trio.move_on_after(10):
                while b"File:" not in said:  # (it captures from then on)
                    chunk = await process.stderr.receive_some()
                    if not chunk:
                        break
                    said += chunk
            if b"File:" not in said:
                return f"dumpcap cannot capture on lo here: {said.decode(errors='replace')}"
            with trio.fail_after(10):
                async with trioudp.open_udp_connection("127.0.0.1", port, reliable=True) as conn:
                    await conn.send(payload)
                    message = await server.receive()
            with trio.move_on_after(5):
                await process.wait()  # (-c 1: done once it has the datagram)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        return bytes(message.payload)


@needs_tshark
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="UDP GSO is Linux's")
def test_a_real_gso_send_captured_on_loopback_is_shown_frame_by_frame(
    tshark_env: dict[str, str], tmp_path: Path
) -> None:
    """A message in three fragments, sent with GSO as one buffer: a capture on
    the sending host shows one datagram. (Skipped where this host cannot
    capture: it needs dumpcap, and the right to capture on lo.)"""
    dumpcap = shutil.which("dumpcap")
    if dumpcap is None:
        pytest.skip("dumpcap is not installed")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if not gso_available(sock):
            pytest.skip("this kernel has no UDP GSO")
    payload = bytes(range(250)) * 12
    pcap = tmp_path / "real.pcapng"
    got = trio.run(capture_gso_send, dumpcap, pcap, payload)
    if isinstance(got, str):
        pytest.skip(got)
    assert got == payload
    packets = dissect(tshark_env, pcap)
    assert len(packets) == 1, "no datagram longer than a frame: was GSO used?"
    (packet,) = packets
    fields = tshark(tshark_env, "-r", str(pcap), "-T", "fields", "-e", "udp.payload")
    data = bytes.fromhex(fields.strip())
    assert len(packet.trees) == 3, "not one GSO buffer"
    (size,) = packet.trees[0].fields["trioudp.gso.segment_size"]
    assert isinstance(size, int)
    run = Run("captured", [data[at : at + size] for at in range(0, len(data), size)])
    for index, tree in enumerate(packet.trees):
        datagram, shown = segment(run, index, tree, packet.errors)
        assert shown.experts == [], datagram.label
        assert shown.fields == decoded(datagram.data), datagram.label
    assert [frame[3] for frame in run.frames] == [FLAG_RELIABLE | FLAG_FRAGMENT] * 3


def test_install_copies_the_plugin_into_the_folder_given(tmp_path: Path) -> None:
    installed = install(tmp_path / "new" / "plugins")
    assert installed == tmp_path / "new" / "plugins" / PLUGIN
    assert installed.read_bytes() == plugin_path().read_bytes() == plugin_source()
    assert plugin_source().startswith(b"-- Wireshark dissector for the trioudp wire protocol")
    assert [p.name for p in installed.parent.iterdir()] == [PLUGIN]  # nothing left aside
    install(installed.parent)  # again: replaced
    assert installed.read_bytes() == plugin_source()


def test_install_says_where_it_could_not_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"could not install the Wireshark dissector as .*--dir"):
        install(blocker / "plugins")


def test_without_tshark_the_personal_folder_is_the_default_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".local" / "lib" / "wireshark" / "plugins"
    assert personal_plugins_folder() == expected
    assert install() == expected / PLUGIN


@pytest.mark.skipif(os.name != "posix", reason="a shell script stands in for tshark")
def test_install_goes_where_tshark_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "where tshark says"
    fake = tmp_path / "bin" / "tshark"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        f"printf 'Personal Plugins:\\t/elsewhere\\nPersonal Lua Plugins:\\t{folder}\\n'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert personal_plugins_folder() == folder
    assert install() == folder / PLUGIN
    assert (folder / PLUGIN).read_bytes() == plugin_source()


@needs_tshark
def test_an_installed_plugin_is_loaded_from_the_personal_folder(
    frames: list[Datagram],
    tshark_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", tshark_env["HOME"])
    monkeypatch.setenv("XDG_CONFIG_HOME", tshark_env["XDG_CONFIG_HOME"])
    pcap = tmp_path / "installed.pcap"
    write_pcap(pcap, frames[:1])
    (before,) = dissect(tshark_env, pcap, plugin=False)
    assert before.fields is None  # nothing installed yet
    installed = install()
    # Where tshark says a user's Lua plugins go, with this HOME.
    assert (
        installed == Path(tshark_env["HOME"]) / ".local" / "lib" / "wireshark" / "plugins" / PLUGIN
    )
    (after,) = dissect(tshark_env, pcap, plugin=False)
    assert after.fields == decoded(frames[0].data)
