"""The sans-IO reliable sender and acknowledger, driven with an explicit ``now``."""

from __future__ import annotations

import pytest
from sansio import A, B, messages, outgoing

from trioudp import Config
from trioudp._budget import Budget
from trioudp._engine import Engine
from trioudp._frame import (
    KIND_PING,
    Ack,
    decode_ack_untrusted,
    decode_frame_untrusted,
    encode_control,
    encode_plain,
    encode_reliable,
    sealer,
)
from trioudp._peer import Peer
from trioudp._recovery import Acknowledger, expand_packet
from trioudp._reliable import INITIAL_WINDOW, MINIMUM_WINDOW, Sender
from trioudp._statistics import Counters, EndpointStatistics


def sender(**options: float) -> tuple[Sender, Counters]:
    counters = Counters()
    made = Sender(
        7,
        max_datagram_size=1200,
        receive_window=int(options.get("window", 256)),
        give_up_timeout=options.get("give_up", 10.0),
        key=None,
        counters=counters,
        budget=Budget(Config()),
    )
    return made, counters


def packets(out: list[tuple[bytes, int | None]]) -> list[int]:
    return [decode_frame_untrusted(datagram).packet for datagram, _ in out]


def carried(out: list[tuple[bytes, int | None]]) -> list[list[int]]:
    """The message numbers each datagram carries (several when bundled)."""
    frames = [decode_frame_untrusted(datagram) for datagram, _ in out]
    return [[frame.sequence + index for index in range(len(frame.parts) or 1)] for frame in frames]


@pytest.mark.parametrize(
    ("truncated", "largest", "expected"),
    [(0, -1, 0), (5, 3, 5), (0, 2**32 - 1, 2**32), (2**32 - 1, 2**32 + 3, 2**32 - 1)],
)
def test_packet_numbers_expand_across_the_32_bit_wrap(
    truncated: int, largest: int, expected: int
) -> None:
    assert expand_packet(truncated, largest) == expected


def test_a_lost_fragment_alone_is_sent_again_after_three_later_ones_are_acked() -> None:
    s, counters = sender()
    s.queue(bytes(5000), b"", None)  # 5 fragments
    out: list[tuple[bytes, int | None]] = []
    s.transmit(0.0, out)
    assert packets(out) == [0, 1, 2, 3, 4]
    s.on_ack(Ack(0.0, 1, 0, [(4, 2), (0, 0)]), 255, 0.05)  # packet 1 missing
    again: list[tuple[bytes, int | None]] = []
    s.transmit(0.05, again)
    frames = [decode_frame_untrusted(datagram) for datagram, _ in again]
    assert [(f.packet, f.fragment_index) for f in frames] == [(5, 1)]
    assert counters.datagrams_retransmitted == 1
    assert s.unacknowledged == 1
    s.on_ack(Ack(0.0, 1, 1, [(5, 5)]), 255, 0.1)
    assert s.unacknowledged == 0
    assert counters.messages_acked == 1
    assert s.bytes_in_flight == 0
    # One loss episode halved the window (never below the minimum).
    assert s.window >= MINIMUM_WINDOW * 1200


def test_a_probe_timeout_sends_the_oldest_messages_fragments_first() -> None:
    # Message 0's third fragment is lost and waits to go again behind a
    # congestion window full of message 1's fragments, which the receiver
    # refuses (its budget waits for message 0), so no ACK comes. Probing the
    # oldest packets in flight sent message 1 again and again, and the
    # transfer stalled for good; the receiver needs message 0's fragment.
    s, counters = sender()
    s.queue(bytes(3000), b"", None)  # message 0: 3 fragments
    s.queue(bytes(30000), b"", None)  # message 1: 26 fragments
    out: list[tuple[bytes, int | None]] = []
    s.transmit(0.0, out)
    assert len(out) < 29  # the congestion window's worth
    s.on_ack(Ack(0.0, 1, 0, [(5, 5), (1, 0)]), 255, 0.01)  # packet 2 lost
    again: list[tuple[bytes, int | None]] = []
    s.transmit(0.01, again)
    assert again == []  # it waits behind the window, halved
    sent: list[tuple[bytes, int | None]] = []
    for _ in range(5):  # time-threshold losses may come first
        now = s.deadline()
        probed = counters.probe_timeouts
        s.on_timer(now)
        sent = []
        s.transmit(now, sent)
        if counters.probe_timeouts > probed:
            break
    first = decode_frame_untrusted(sent[0][0])
    assert (first.sequence, first.fragment_index) == (0, 2)


def test_probe_timeouts_back_off_and_the_sender_gives_up_on_time() -> None:
    s, counters = sender(give_up=10.0)
    s.queue(b"hello", b"", None)
    out: list[tuple[bytes, int | None]] = []
    s.transmit(0.0, out)
    times: list[float] = []
    now = 0.0
    while s.failure is None:
        now = s.deadline()
        s.on_timer(now)
        s.transmit(now, out)
        times.append(now)
    assert now == pytest.approx(10.0)
    probes = times[:-1]
    gaps = [b - a for a, b in zip([0.0, *probes], probes, strict=False)]
    assert gaps[0] == pytest.approx(0.333 + 4 * 0.333 / 2 + 0.025)  # RFC 9002's first PTO
    assert gaps[1] > gaps[0]  # backed off
    assert max(gaps) <= 10.0 / 8 + 1e-9  # capped: eight rounds before giving up
    assert counters.messages_failed == 1
    assert counters.probe_timeouts == len(probes)


def test_window_limits_new_messages_and_pings_probe_a_closed_window() -> None:
    s, _ = sender(window=2)
    for index in range(4):
        s.queue(b"m%d" % index, b"", None)
    out: list[tuple[bytes, int | None]] = []
    s.transmit(0.0, out)
    assert carried(out) == [[0, 1]]  # two small messages share a datagram
    s.on_ack(Ack(0.0, 1, 2, [(0, 0)]), 1, 0.01)  # both delivered, the window ends at 1
    out.clear()
    s.transmit(0.01, out)
    assert out == []
    now = s.deadline()
    s.on_timer(now)
    s.transmit(now, out)
    (ping,) = [decode_frame_untrusted(d) for d, _ in out]
    assert ping.kind == KIND_PING
    assert ping.sequence == 2  # the oldest unacknowledged message
    s.on_ack(Ack(0.0, 1, 2, []), 3, now + 0.01)  # the window opened
    out.clear()
    s.transmit(now + 0.01, out)
    assert carried(out) == [[2, 3]]


def test_congestion_window_starts_at_ten_datagrams() -> None:
    s, _ = sender()
    s.queue(bytes(100_000), b"", None)
    out: list[tuple[bytes, int | None]] = []
    s.transmit(0.0, out)
    assert len(out) == INITIAL_WINDOW


def test_acknowledger_acks_every_second_datagram_and_at_once_on_a_gap() -> None:
    acks = Acknowledger()
    acks.record(0, 1.0)
    assert acks.due == pytest.approx(1.025)  # max ack delay
    acks.record(1, 1.001)
    assert acks.due == 1.001  # every second
    ack = decode_ack_untrusted(acks.body(1.002, 300, 5, 2))
    assert ack.ranges == [(1, 0)]
    assert ack.delay == pytest.approx(0.001)
    assert (ack.receiver, ack.delivered) == (5, 2)
    acks.record(3, 1.01)  # 2 is missing
    assert acks.due == 1.01
    assert decode_ack_untrusted(acks.body(1.01, 300, 5, 2)).ranges == [(3, 3), (1, 0)]


def reliable_frame(
    sequence: int, packet: int, payload: bytes = b"x", oldest: int = 0, key: bytes | None = None
) -> bytes:
    return encode_reliable(
        99, sequence, packet, oldest, None, b"", payload, sealer(key), authenticated=key is not None
    )


KEY = bytes(range(32))


def acknowledge_sparse_packets(*, chosen: bool, key: bytes | None = None) -> EndpointStatistics:
    e = Engine(Config(reliable=True), now=0.0, key=key)
    if chosen:
        e.peer_for(A, 0.0)  # the application sent to A first: not a spoofed source
    for index in range(200):
        e.receive_datagram(reliable_frame(index, 2 * index, key=key), A, index * 0.001)
        messages(e)  # as the application would
        outgoing(e, index * 0.001)
    return e.statistics()


@pytest.mark.parametrize("key", [None, KEY], ids=["crc", "keyed"])
def test_acknowledgements_to_an_address_never_exceed_three_times_what_it_sent(
    key: bytes | None,
) -> None:
    """RFC 9000 §8.1: a spoofed source must not turn the engine into an
    amplifier. Every other packet number is skipped, so every datagram makes
    an immediate ACK with more and more ranges: more than 3x the bytes unless
    the limit trims them, as it does for an address the application never chose.
    The trim counts the frame's real size: with a key an empty ACK ends in a
    16-byte tag, not a 4-byte CRC (it was once taken for 38 bytes, not 50)."""
    free = acknowledge_sparse_packets(chosen=True, key=key)
    # (A keyed frame of one byte is 41 bytes, so its 8-range ACKs stay within 3x.)
    assert free.bytes_sent > (3 if key is None else 2.5) * free.bytes_received
    limited = acknowledge_sparse_packets(chosen=False, key=key)
    assert limited.control_suppressed == 0
    assert limited.acks_sent == free.acks_sent  # trimmed, not withheld
    assert limited.bytes_sent <= 3 * limited.bytes_received
    assert limited.datagrams_received == limited.datagrams_accounted


@pytest.mark.parametrize("key", [None, KEY], ids=["crc", "keyed"])
def test_pings_from_a_spoofed_address_get_acks_trimmed_to_their_real_size(
    key: bytes | None,
) -> None:
    """Each PING asks for an ACK carrying every range held, more bytes than the
    PING itself: the amplification limit trims the ranges to what fits. It must
    count the ACK's real size (with a key, a 16-byte tag rather than a 4-byte
    CRC), or ACKs that would have fitted with fewer ranges are withheld."""
    e = Engine(Config(reliable=True), now=0.0, key=key)
    now = 0.0
    for index in range(20):
        e.receive_datagram(reliable_frame(index, 2 * index, key=key), A, now)
        messages(e)
        outgoing(e, now)
        now += 0.001
    ping = encode_control(KIND_PING, 99, 20, b"", sealer(key), authenticated=key is not None)
    for _ in range(200):
        e.receive_datagram(ping, A, now)
        outgoing(e, now)
        now += 0.001
    stats = e.statistics()
    assert stats.control_suppressed == 0
    assert stats.acks_sent == 20 + 200 - 1  # (the first two packets share one ACK)
    assert stats.bytes_sent <= 3 * stats.bytes_received


def test_a_receiver_without_the_session_starts_at_the_senders_oldest_message() -> None:
    """A receiver that restarted (or forgot a quiet peer) gets a session in the
    middle: it starts at the oldest unacknowledged message the frame names,
    delivers from there in order, and waits for the gap before it."""
    e = Engine(Config(reliable=True), now=0.0)
    e.receive_datagram(reliable_frame(41, 900, b"41", oldest=40), A, 0.0)
    assert messages(e) == []
    e.receive_datagram(reliable_frame(40, 901, b"40", oldest=40), A, 0.01)
    assert [m.payload for m in messages(e)] == [b"40", b"41"]


def test_data_beyond_the_advertised_window_is_refused_unacknowledged() -> None:
    e = Engine(Config(reliable=True, reorder_window=4), now=0.0)
    for sequence in range(6):
        e.receive_datagram(reliable_frame(sequence, sequence), A, 0.0)
    queue = e.shared_queue()
    assert len(queue.items) == 4  # delivered: then the application holds 4
    (ack,) = outgoing(e, 0.0)
    frame = decode_frame_untrusted(ack)
    assert decode_ack_untrusted(frame.payload).ranges == [
        (3, 0)
    ]  # 4 and 5 refused: not acknowledged
    assert frame.sequence == 3  # the window ends at the last held message
    assert e.statistics().datagrams_over_limit == 2
    assert [m.payload for m in messages(e)] == [b"x"] * 4  # the application takes them
    (update,) = outgoing(e, 0.01)
    assert decode_frame_untrusted(update).sequence == 7  # opened by four


def test_a_restarted_receiver_gets_again_what_it_had_not_delivered() -> None:
    """Fragments a receiver acknowledged but had not delivered (waiting for a
    gap) die with it: when ACKs come from a new receiver, every message not
    confirmed delivered goes again, in order."""
    s, counters = sender()
    for index in range(3):
        s.queue(bytes([index]) * 700, b"", None)  # too large to share a datagram
    out: list[tuple[bytes, int | None]] = []
    s.transmit(0.0, out)
    s.on_ack(Ack(0.0, 1, 0, [(2, 1)]), 255, 0.01)  # 1 and 2 held, 0 missing
    assert s.unacknowledged == 3
    s.on_ack(Ack(0.0, 2, 0, []), 255, 0.02)  # a new receiver answers
    assert counters.receiver_restarts == 1
    out.clear()
    s.transmit(0.02, out)
    assert [decode_frame_untrusted(d).sequence for d, _ in out] == [0, 1, 2]
    s.on_ack(Ack(0.0, 1, 3, [(5, 3)]), 255, 0.03)  # a late ACK of the old one: ignored
    assert s.unacknowledged == 3
    s.on_ack(Ack(0.0, 2, 3, [(5, 3)]), 255, 0.03)
    assert s.unacknowledged == 0
    assert counters.messages_acked == 3


def test_small_messages_that_queue_up_share_datagrams_within_the_size_limit() -> None:
    s, counters = sender()
    payloads = [bytes([index % 256]) * (index % 200) for index in range(300)]
    for payload in payloads:
        s.queue(payload, b"", None)
    out: list[tuple[bytes, int | None]] = []
    s.transmit(0.0, out)
    assert all(len(datagram) <= 1200 for datagram, _ in out)
    # The congestion window (ten datagrams' bytes) was open before the last one.
    sizes = [len(datagram) for datagram, _ in out]
    assert sum(sizes[:-1]) < INITIAL_WINDOW * 1200 <= sum(sizes)
    numbers = [n for group in carried(out) for n in group]
    assert numbers == list(range(len(numbers)))
    assert len(numbers) > 5 * INITIAL_WINDOW
    got = [
        bytes(part)
        for datagram, _ in out
        for part in decode_frame_untrusted(datagram).parts
        or [decode_frame_untrusted(datagram).payload]
    ]
    assert got == payloads[: len(numbers)]
    # One acknowledgement of the datagrams retires every message in them.
    s.on_ack(Ack(0.0, 1, len(numbers), [(len(out) - 1, 0)]), 255, 0.05)
    assert counters.messages_acked == len(numbers)
    assert s.bytes_in_flight == 0


def test_a_lost_bundle_goes_again_and_never_mixes_topics_or_priorities() -> None:
    s, counters = sender()
    s.queue(b"a0", b"", None)
    s.queue(b"a1", b"", None)
    s.queue(b"b2", b"news", None)  # another topic: a datagram of its own
    s.queue(b"c3", b"news", 46)  # another priority: likewise
    out: list[tuple[bytes, int | None]] = []
    s.transmit(0.0, out)
    assert carried(out) == [[0, 1], [2], [3]]
    assert [priority for _, priority in out] == [None, None, 46]
    # Packets 1 and 2 acknowledged, and a time threshold later packet 0 is lost.
    s.on_ack(Ack(0.0, 1, 0, [(2, 1)]), 255, 0.01)
    s.on_timer(s.deadline())
    again: list[tuple[bytes, int | None]] = []
    s.transmit(s.deadline() if s.deadline() != float("inf") else 1.0, again)
    assert carried(again) == [[0, 1]]
    assert counters.datagrams_retransmitted == 1
    s.on_ack(Ack(0.0, 1, 4, [(3, 3)]), 255, 1.0)
    assert counters.messages_acked == 4
    assert s.unacknowledged == 0
    assert s.bytes_in_flight == 0


def reliable_fragments(sequence: int, packet: int, size: int, oldest: int = 0) -> list[bytes]:
    """A reliable message of ``size`` bytes in 1200-byte fragments, as a sender
    that has not sent anything else numbers them (packets from ``packet``)."""
    chunk = 1200 - 16 - 4 - 8 - 8
    count = -(-size // chunk)
    return [
        encode_reliable(
            99,
            sequence,
            packet + index,
            oldest,
            (size, index, count),
            b"",
            bytes(min(chunk, size - index * chunk)),
            sealer(None),
            authenticated=False,
        )
        for index in range(count)
    ]


def test_messages_after_a_gap_always_leave_room_for_the_next_one() -> None:
    """Out-of-order large messages reserve their room as they begin; they must
    leave enough, in their peer's budget as in the total, for the message they
    wait for, or a peer whose next message lost its first fragment would wait
    for good (each of its later messages held, none of them deliverable)."""
    e = Engine(Config(reliable=True), now=0.0)  # 4 MiB per peer, 1 MiB messages
    size = 1024 * 1024 - 100
    later = [reliable_fragments(sequence, 1000 * sequence, size) for sequence in range(1, 6)]
    for fragments in later:  # messages 1 to 5 begin; message 0's first fragment was lost
        e.receive_datagram(fragments[0], A, 0.0)
    first = reliable_fragments(0, 0, size)
    for datagram in first:
        e.receive_datagram(datagram, A, 0.01)
    assert [len(m.payload) for m in messages(e)] == [size]  # message 0, whole
    assert e.statistics().bytes_buffered <= Config().peer_buffer_bytes


def _run(engine: Engine, until: float, address: tuple[str, int]) -> int:
    """Fire the engine's timers until ``until``; the bytes it sent to ``address``."""
    sent = 0
    while (deadline := engine.next_deadline()) <= until:
        engine.handle_timer(deadline)
        sent += sum(
            len(data) for data, to, _ in engine.datagrams_to_send(deadline) if to == address
        )
    return sent


@pytest.mark.parametrize("key", [None, KEY], ids=["crc", "keyed"])
@pytest.mark.parametrize("size", [1, 600, 5000])
def test_a_reply_to_an_address_that_never_answers_goes_out_within_three_times(
    key: bytes | None, size: int
) -> None:
    """A reliable request from an address that never acknowledges anything (a
    spoofed one): the reply went out 16-17 times, 16-17x the bytes received.
    Now what the engine sends there by itself (the reply's retransmissions
    and probes, ACKs) is held to 3x what came from it; the first transmission
    is the application's. The reply fails at give_up_timeout."""
    config = Config(reliable=True, give_up_timeout=30.0)
    server = Engine(config, now=0.0, key=key)
    request = _frames_from_a_client(config, b"q" * size, key)
    for data in request:
        server.receive_datagram(data, A, 0.0)
    (message,) = messages(server)
    assert isinstance(message._origin, Peer)
    server.queue(message._origin, b"r" * size, 0.0)
    first = sum(len(data) for data, _, _ in server.datagrams_to_send(0.0))
    sent = first + _run(server, 120.0, A)
    received = sum(len(data) for data in request)
    assert sent - first <= 3 * received
    stats = server.statistics()
    assert stats.messages_failed == 1
    assert stats.control_suppressed >= 1


def test_keepalive_pings_to_an_address_that_never_answers_stay_within_three_times() -> None:
    """Keepalive PINGs to an address that sent one datagram and went silent
    reached 4.2x its bytes; they are held to 3x."""
    server = Engine(Config(keepalive=15.0, idle_timeout=None, dead_timeout=None), now=0.0)
    frame = encode_plain(7, 0, b"x")
    server.receive_datagram(frame, A, 0.0)
    messages(server)
    sent = _run(server, 3600.0, A)
    assert 0 < sent <= 3 * len(frame)
    assert server.statistics().control_suppressed >= 1


def _frames_from_a_client(config: Config, payload: bytes, key: bytes | None) -> list[bytes]:
    client = Engine(config, now=0.0, connected_to=B, key=key)
    assert client.client_peer is not None
    client.queue(client.client_peer, payload, 0.0)
    return [data for data, _, _ in client.datagrams_to_send(0.0)]
