"""The sans-IO reliable sender and acknowledger, driven with an explicit ``now``."""

from __future__ import annotations

import pytest

from trioudp._frame import KIND_PING, decode_ack_untrusted, decode_frame_untrusted
from trioudp._reliable import (
    INITIAL_WINDOW,
    MINIMUM_WINDOW,
    Acknowledger,
    Sender,
    expand_packet,
)
from trioudp._statistics import Counters


def sender(**options: float) -> tuple[Sender, Counters]:
    counters = Counters()
    made = Sender(
        7,
        max_datagram_size=1200,
        receive_window=int(options.get("window", 256)),
        give_up_timeout=options.get("give_up", 10.0),
        key=None,
        counters=counters,
        now=0.0,
    )
    return made, counters


def packets(out: list[tuple[bytes, int | None]]) -> list[int]:
    return [decode_frame_untrusted(datagram).packet for datagram, _ in out]


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
    s.on_ack(0.0, [(4, 2), (0, 0)], 255, 0.05)  # packet 1 missing
    again: list[tuple[bytes, int | None]] = []
    s.transmit(0.05, again)
    frames = [decode_frame_untrusted(datagram) for datagram, _ in again]
    assert [(f.packet, f.fragment_index) for f in frames] == [(5, 1)]
    assert counters.datagrams_retransmitted == 1
    assert s.unacknowledged == 1
    s.on_ack(0.0, [(5, 5)], 255, 0.1)
    assert s.unacknowledged == 0
    assert counters.messages_acked == 1
    assert s.bytes_in_flight == 0
    # One loss episode halved the window (never below the minimum).
    assert s.window >= MINIMUM_WINDOW * 1200


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
    assert [decode_frame_untrusted(d).sequence for d, _ in out] == [0, 1]
    s.on_ack(0.0, [(1, 0)], 1, 0.01)  # both acked, the window still ends at 1
    out.clear()
    s.transmit(0.01, out)
    assert out == []
    now = s.deadline()
    s.on_timer(now)
    s.transmit(now, out)
    (ping,) = [decode_frame_untrusted(d) for d, _ in out]
    assert ping.kind == KIND_PING
    assert ping.sequence == 2  # the oldest unacknowledged message
    s.on_ack(0.0, [], 3, now + 0.01)  # the window opened
    out.clear()
    s.transmit(now + 0.01, out)
    assert [decode_frame_untrusted(d).sequence for d, _ in out] == [2, 3]


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
    delay, ranges = decode_ack_untrusted(acks.body(1.002, 300))
    assert ranges == [(1, 0)]
    assert delay == pytest.approx(0.001)
    acks.record(3, 1.01)  # 2 is missing
    assert acks.due == 1.01
    _, ranges = decode_ack_untrusted(acks.body(1.01, 300))
    assert ranges == [(3, 3), (1, 0)]
