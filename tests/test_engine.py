"""The sans-IO engine, driven with an explicit ``now``: no sockets, no trio."""

from __future__ import annotations

import itertools
import logging
import random

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sansio import A, B, encode, encode_batch, events, feed, messages, take

from trioudp import Config, Message
from trioudp._engine import Engine
from trioudp._events import PeerClosed, PeerOpened
from trioudp._frame import encode_message, encode_plain
from trioudp._peer import Peer
from trioudp._peers import RESTART_QUIET
from trioudp._statistics import COUNTERS, OUTCOMES, PeerStatistics

#: Session ids for the engines of these tests: one series, so that no two
#: engines share one (a frame bearing one of an engine's own is refused).
_SESSIONS = itertools.count(1000)


def engine(**options: object) -> Engine:
    return Engine(Config(**options), now=0.0, new_session_id=_SESSIONS.__next__)  # type: ignore[arg-type]


def stream(
    payloads: list[bytes], session: int = 77, first: int = 0, size: int = 200
) -> list[list[bytes]]:
    """The datagrams of each message, as a sender with ``session`` sends them."""
    return [encode_message(session, (first + i) % 2**32, p, size) for i, p in enumerate(payloads)]


def assert_accounted(stats: PeerStatistics) -> None:
    outcomes = sum(getattr(stats, name) for name in OUTCOMES)
    assert stats.datagrams_received == outcomes + stats.datagrams_pending
    assert stats.datagrams_accounted == stats.datagrams_received


def test_in_order_stream_is_delivered() -> None:
    e = engine()
    payloads = [b"m%d" % i for i in range(10)]
    delivered = feed(e, [d for m in stream(payloads) for d in m])
    assert [m.payload for m in delivered] == payloads
    assert [m.sequence for m in delivered] == list(range(10))
    assert {m.address for m in delivered} == {A}
    stats = e.statistics()
    assert stats.messages_delivered == 10
    assert stats.peers == stats.peers_opened == 1
    assert_accounted(stats)


def test_duplicates_and_late_messages_are_dropped_and_counted() -> None:
    e = engine(reorder_timeout=0.5)
    m = stream([b"0", b"1", b"2", b"3"])
    assert [x.payload for x in feed(e, m[0] + m[0] + m[2])] == [b"0"]
    assert feed(e, m[2], now=0.1) == []  # a duplicate of a waiting message
    e.handle_timer(0.6)  # gives up message 1
    assert [x.payload for x in take(e)[0]] == [b"2"]
    assert feed(e, m[1] + m[3] + m[0], now=0.7) == [Message(b"3", A, 3, "", None, 1)]
    stats = e.statistics()
    assert (stats.datagrams_duplicate, stats.datagrams_late, stats.messages_lost) == (3, 1, 1)
    assert_accounted(stats)


def test_reorder_buffer_waits_then_skips_the_gap() -> None:
    e = engine(reorder_timeout=0.1)
    m = stream([b"a", b"b", b"c", b"d"])
    assert [x.payload for x in feed(e, m[0] + m[2] + m[3])] == [b"a"]
    assert e.statistics().datagrams_pending == 2
    assert e.next_deadline() == pytest.approx(0.1)
    e.handle_timer(0.05)
    assert take(e)[0] == []
    e.handle_timer(0.1)
    assert [x.payload for x in take(e)[0]] == [b"c", b"d"]
    assert e.statistics().messages_lost == 1


def test_while_the_kernel_drops_a_gap_that_would_fill_the_queue_is_given_up_at_once() -> None:
    # The kernel dropped datagrams for want of room (the transport says so), and
    # messages pile up behind a gap (here: as many as fill their queue): the
    # missing message is one of the kernel's drops and will not come, so waiting
    # for it would only release them together, more than the queue can take.
    e = engine(reorder_timeout=10.0, channel_capacity=4)
    e.delivery.kernel_dropping = True
    m = stream([b"%d" % i for i in range(8)])
    # 0 is delivered (room for 3 more); 2 and 3 wait behind the gap; with 4 the
    # waiting ones fill the room: the gap is given up.
    assert [x.payload for x in feed(e, m[0] + m[2] + m[3] + m[4])] == [b"0", b"2", b"3", b"4"]
    stats = e.statistics()
    assert (stats.messages_lost, stats.datagrams_pending, stats.messages_overflow_dropped) == (
        1,
        0,
        0,
    )
    assert feed(e, m[1]) == []  # it came after all: late
    assert e.statistics().datagrams_late == 1
    # A gap with one message behind it still waits for its message, kernel
    # drops or not: another stream's flood does not cost this one its order.
    assert feed(e, m[6]) == []
    assert e.statistics().datagrams_pending == 1
    assert [x.payload for x in feed(e, m[5])] == [b"5", b"6"]
    # Once the kernel keeps up again, a gap waits as before, however full.
    e.delivery.kernel_dropping = False
    late = stream([b"%d" % i for i in range(8, 13)], first=8)
    assert feed(e, late[1] + late[2] + late[3] + late[4]) == []
    assert e.statistics().datagrams_pending == 4
    assert_accounted(e.statistics())


def test_gap_filled_in_time_delivers_everything_in_order() -> None:
    e = engine()
    m = stream([b"a", b"b", b"c"])
    assert [x.payload for x in feed(e, m[0] + m[2])] == [b"a"]
    assert [x.payload for x in feed(e, m[1], now=0.05)] == [b"b", b"c"]
    e.handle_timer(10.0)
    assert e.statistics().messages_lost == 0


def test_unordered_mode_delivers_at_once_without_duplicates() -> None:
    e = engine(ordered=False)
    m = stream([b"a", b"b", b"c", b"d"])
    delivered = feed(e, m[2] + m[0] + m[3] + m[2] + m[1] + m[0])
    assert [x.payload for x in delivered] == [b"c", b"a", b"d", b"b"]
    assert e.statistics().datagrams_duplicate == 2


def test_far_ahead_message_moves_the_window() -> None:
    e = engine(reorder_window=4)
    m = stream([b"%d" % i for i in range(10)])
    assert [x.payload for x in feed(e, m[0] + m[2] + m[9])] == [b"0", b"2"]
    # 9 forced the window to 6..9: 1, 3, 4 and 5 are given up.
    assert e.statistics().messages_lost == 4
    assert [x.payload for x in feed(e, m[6] + m[7] + m[8])] == [b"6", b"7", b"8", b"9"]
    assert feed(e, m[5]) == []
    assert e.statistics().datagrams_late == 1


def test_sequence_numbers_wrap() -> None:
    e = engine()
    payloads = [b"%d" % i for i in range(8)]
    m = stream(payloads, first=2**32 - 4)
    order = [m[1], m[0], m[3], m[2], m[5], m[4], m[7], m[6]]
    delivered = feed(e, m[0] + [d for x in order for d in x])
    assert [x.payload for x in delivered] == payloads
    assert delivered[4].sequence == 0


def test_fragmented_message_is_reassembled_in_any_order() -> None:
    e = engine()
    payload = bytes(random.Random(1).randbytes(5000))
    (datagrams,) = stream([payload], size=300)
    assert len(datagrams) > 10
    shuffled = datagrams[:]
    random.Random(2).shuffle(shuffled)
    delivered = feed(e, shuffled + shuffled[:3])
    assert [x.payload for x in delivered] == [payload]
    stats = e.statistics()
    assert stats.datagrams_delivered == len(datagrams)
    assert stats.datagrams_duplicate == 3
    assert_accounted(stats)


def test_reassembly_expires_and_is_counted() -> None:
    e = engine(reassembly_timeout=0.5)
    (datagrams,) = stream([b"x" * 1000], size=300)
    assert feed(e, datagrams[:-1]) == []
    assert e.statistics().datagrams_pending == len(datagrams) - 1
    e.handle_timer(0.4)
    assert e.statistics().datagrams_pending == len(datagrams) - 1
    e.handle_timer(0.5)
    stats = e.statistics()
    assert stats.datagrams_pending == 0
    assert stats.datagrams_reassembly_expired == len(datagrams) - 1
    assert_accounted(stats)


def test_message_larger_than_the_limit_is_dropped() -> None:
    e = engine(max_message_size=1000, peer_buffer_bytes=1000)
    (datagrams,) = stream([b"y" * 1001], size=300)
    assert feed(e, datagrams) == []
    assert e.statistics().datagrams_over_limit == len(datagrams)


def test_fragments_that_disagree_are_malformed() -> None:
    e = engine()
    (first,) = stream([b"a" * 500], size=300)
    (other,) = stream([b"b" * 700], size=300)  # same session and sequence, other length
    assert feed(e, first[:1] + other[1:2]) == []
    assert e.statistics().datagrams_malformed == 1


def test_partial_message_limit_evicts_the_oldest_partial() -> None:
    e = engine(max_partial_messages=2)
    m = stream([b"a" * 500, b"b" * 500, b"c" * 500], size=300)
    assert feed(e, [m[0][0], m[1][0], m[2][0]]) == []
    stats = e.statistics()
    assert stats.datagrams_over_limit == 1
    assert stats.datagrams_pending == 2
    # The others complete; the evicted one's gap is given up after reorder_timeout.
    assert feed(e, m[1][1:] + m[2][1:]) == []
    e.handle_timer(0.1)
    assert [x.sequence for x in take(e)[0]] == [1, 2]
    assert e.statistics().messages_lost == 1


def test_peer_buffer_limit_drops_fragments_but_spares_other_peers() -> None:
    e = engine(max_message_size=2000, peer_buffer_bytes=3000, total_buffer_bytes=4500)
    big = stream([b"p" * 1900, b"q" * 1900], size=300)
    # Peer A fills most of its own budget with one partial message (six fragments
    # of 272 bytes cost 2,528 with their keeping, see _budget.py) ...
    assert feed(e, big[0][:-1]) == []
    # ... and a second one makes room by dropping A's older partial, never B's.
    other = stream([b"r" * 900], session=5, size=300)
    assert feed(e, other[0][:-1], address=B) == []
    assert feed(e, big[1][:-1]) == []
    assert [x.payload for x in feed(e, other[0][-1:], address=B)] == [b"r" * 900]
    stats = e.statistics()
    assert stats.datagrams_over_limit > 0
    assert e.peers[B].statistics().datagrams_over_limit == 0
    assert_accounted(stats)


def test_total_buffer_limit_never_evicts_another_peer() -> None:
    e = engine(max_message_size=1000, peer_buffer_bytes=1500, total_buffer_bytes=1500)
    a = stream([b"a" * 990], session=1, size=300)[0]
    b = stream([b"b" * 990], session=2, size=300)[0]
    assert feed(e, a[:-1]) == []
    assert feed(e, b[:-1], address=B) == []  # no room left: B's fragments are dropped
    assert e.peers[B].statistics().datagrams_over_limit >= 1
    assert e.peers[A].statistics().datagrams_pending == len(a) - 1  # A's are untouched
    assert_accounted(e.statistics())


def test_restarted_peer_gets_a_new_connection_and_old_session_is_stale() -> None:
    e = engine()
    old = stream([b"old0", b"old1", b"old2"], session=1)
    new = stream([b"new0", b"new1"], session=2)
    feed(e, old[0])
    first_peer = e.peers[A]
    # While the old session talks, the new one is refused: one made-up datagram
    # cannot silence a peer.
    assert feed(e, new[0], now=RESTART_QUIET / 2) == []
    assert not first_peer.closed
    assert [x.payload for x in feed(e, old[1], now=RESTART_QUIET / 2)] == [b"old1"]
    # Silent for RESTART_QUIET: now a restart, and the old session is stale.
    later = RESTART_QUIET * 1.5
    delivered = feed(e, new[1] + old[2], now=later)
    assert [x.payload for x in delivered] == [b"new1"]
    assert events(e) == []
    assert first_peer.closed
    assert e.peers[A] is not first_peer
    stats = e.statistics()
    assert stats.datagrams_stale_session == 2
    assert stats.session_changes == 1
    assert stats.peers_closed == 1
    assert_accounted(stats)


def test_peer_events_are_in_order_and_messages_name_their_peer() -> None:
    e = engine()
    e.receive_datagram(stream([b"x"], session=1)[0][0], A, 0.0)
    e.receive_datagram(stream([b"y"], session=2)[0][0], A, RESTART_QUIET)
    delivered, happened = take(e)
    assert [type(x).__name__ for x in happened] == ["PeerOpened", "PeerClosed", "PeerOpened"]
    first, closed, second = happened
    assert isinstance(first, PeerOpened)
    assert isinstance(closed, PeerClosed)
    assert isinstance(second, PeerOpened)
    assert closed.peer is first.peer
    assert [(m.payload, m._origin) for m in delivered] == [(b"x", first.peer), (b"y", second.peer)]


def test_client_engine_keeps_its_peer_across_restarts() -> None:
    e = Engine(Config(), now=0.0, connected_to=A)
    peer = e.client_peer
    assert peer is not None
    feed(e, stream([b"a", b"b"], session=1)[0])
    assert feed(e, stream([b"c"], session=2)[0]) == []  # the old one still talks
    assert [x.payload for x in feed(e, stream([b"c"], session=2)[0], RESTART_QUIET)] == [b"c"]
    assert e.client_peer is peer
    assert not peer.closed
    assert peer.statistics().session_changes == 1
    e.handle_timer(10**6)
    assert not peer.closed  # a client never forgets its peer


def test_idle_peer_is_closed() -> None:
    e = engine(idle_timeout=5.0)
    feed(e, stream([b"x"])[0])
    feed(e, stream([b"y"], session=9)[0], now=3.0, address=B)
    e.handle_timer(4.9)
    assert take(e)[1] == []
    e.handle_timer(5.0)
    (closed,) = take(e)[1]
    assert isinstance(closed, PeerClosed)
    assert (closed.peer.address, closed.reason) == (A, "idle")
    assert list(e.peers) == [B]
    assert e.next_deadline() == pytest.approx(8.0)


def test_max_peers_drops_new_peers_and_counts_them() -> None:
    e = engine(max_peers=1)
    feed(e, stream([b"x"], session=1)[0])
    assert feed(e, stream([b"y"], session=2)[0], address=B) == []
    stats = e.statistics()
    assert stats.peers == 1
    assert stats.datagrams_over_limit == 1
    assert_accounted(stats)


def test_sending_to_a_new_peer_when_full_evicts_the_least_recent() -> None:
    e = engine(max_peers=1)
    feed(e, stream([b"x"], session=1)[0])
    peer = e.peer_for(B, 1.0)
    assert isinstance(peer, Peer)
    assert list(e.peers) == [B]
    events = take(e)[1]
    assert [type(x) for x in events] == [PeerClosed, PeerOpened]


def test_raw_mode_passes_any_bytes() -> None:
    e = engine(framing=False)
    delivered = feed(e, [b"", b"\x00garbage", b"tU\x01"])
    assert [(x.payload, x.sequence) for x in delivered] == [
        (b"", None),
        (b"\x00garbage", None),
        (b"tU\x01", None),
    ]
    peer = e.peers[A]
    assert encode(e, peer, b"plain") == [b"plain"]
    with pytest.raises(ValueError, match="max_datagram_size"):
        encode(e, peer, b"z" * 1201)


def test_encode_rejects_oversized_and_non_bytes_payloads() -> None:
    e = engine(max_message_size=100, peer_buffer_bytes=100)
    with pytest.raises(ValueError, match="max_message_size=100"):
        encode(e, e.peer_for(A, 0.0), b"z" * 101)
    with pytest.raises(TypeError, match=r"must be bytes-like .* got str; encode text first"):
        encode(e, e.peer_for(A, 0.0), "text")  # type: ignore[arg-type]
    assert e.peers[A].counters.messages_sent == 0


def test_each_peer_gets_its_own_send_session_and_sequence() -> None:
    sender = engine()
    receiver = engine()
    pa, pb = sender.peer_for(A, 0.0), sender.peer_for(B, 0.0)
    assert pa.send_session != pb.send_session
    for i in range(3):
        feed(receiver, encode(sender, pa, b"%d" % i))
    assert [x.sequence for x in feed(receiver, encode(sender, pa, b"3"))] == [3]
    assert encode(sender, pb, b"first") == encode_message(pb.send_session, 0, b"first", 1200)


def test_garbage_is_counted_without_making_peers() -> None:
    e = engine()
    feed(e, [b"", b"junk", b"tU\x01" + bytes(40)])
    stats = e.statistics()
    assert stats.peers == 0
    assert stats.datagrams_malformed + stats.datagrams_crc_error == 3
    assert_accounted(stats)


@st.composite
def scrambled(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    payloads = draw(st.lists(st.binary(max_size=700), min_size=1, max_size=25))
    datagrams = [
        d for m in stream(payloads, first=draw(st.integers(0, 2**32 - 1)), size=256) for d in m
    ]
    copies = draw(st.lists(st.sampled_from(datagrams), max_size=20))
    return payloads, draw(st.permutations(datagrams + copies))


@given(scrambled())
def test_any_permutation_with_duplicates_delivers_in_order_once(
    case: tuple[list[bytes], list[bytes]],
) -> None:
    payloads, datagrams = case
    e = engine()
    delivered = feed(e, datagrams)
    e.handle_timer(100.0)
    delivered += take(e)[0]
    # The receiver starts at the first message it hears of; everything from there
    # on arrives whole, once, in order.
    sequences = [m.sequence for m in delivered if m.sequence is not None]
    assert len(sequences) == len(delivered)
    assert sequences == sorted(sequences, key=lambda s: (s - sequences[0]) % 2**32)
    expected = payloads[len(payloads) - len(delivered) :]
    assert [m.payload for m in delivered] == expected
    assert_accounted(e.statistics())


@given(scrambled())
def test_unordered_any_permutation_delivers_every_message_once(
    case: tuple[list[bytes], list[bytes]],
) -> None:
    payloads, datagrams = case
    e = engine(ordered=False)
    delivered = feed(e, datagrams)
    assert sorted(m.payload for m in delivered) == sorted(payloads)
    assert_accounted(e.statistics())


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.sampled_from([d for m in stream([b"a", b"b" * 600, b"c"], size=256) for d in m]),
        ),
        max_size=60,
    )
)
def test_mixed_garbage_and_frames_keep_the_accounting_identity(datagrams: list[bytes]) -> None:
    e = engine()
    for i, datagram in enumerate(datagrams):
        e.receive_datagram(datagram, A if i % 2 else B, i * 0.01)
    take(e)
    assert_accounted(e.statistics())
    e.handle_timer(1000.0)
    take(e)
    stats = e.statistics()
    assert stats.datagrams_pending == 0
    assert_accounted(stats)


def test_statistics_fields_are_the_counters_and_pending() -> None:
    names = [field.name for field in attrs.fields(PeerStatistics)]
    reliable = [
        "messages_unacknowledged",
        "bytes_in_flight",
        "congestion_window",
        "max_datagram_size",
        "rtt_smoothed",
        "rtt_variation",
        "rtt_min",
    ]
    assert names == [*COUNTERS[:16], "datagrams_pending", *COUNTERS[16:], *reliable]
    assert set(OUTCOMES) < set(COUNTERS)


def test_the_engine_copies_what_it_keeps_from_a_reused_buffer() -> None:
    e = engine()
    buffer = bytearray(2000)
    view = memoryview(buffer)
    (small,) = stream([b"first"])
    (fragments,) = stream([b"F" * 500], first=1, size=256)
    for datagram in small + fragments:
        buffer[: len(datagram)] = datagram
        e.receive_datagram(view[: len(datagram)], A, 0.0)
        buffer[:] = bytes(len(buffer))
    assert [m.payload for m in take(e)[0]] == [b"first", b"F" * 500]


def topical(
    pairs: list[tuple[str, bytes]], session: int = 77, size: int = 200
) -> list[list[bytes]]:
    return [encode_message(session, i, p, size, topic=t.encode()) for i, (t, p) in enumerate(pairs)]


def test_topics_filter_without_leaving_gaps() -> None:
    e = engine(reorder_timeout=5.0)
    e.subscribe(frozenset({"temp", ""}))
    m = topical(
        [
            ("temp", b"21C"),
            ("humidity", b"40%"),
            ("humidity", b"H" * 600),
            ("", b"plain"),
            ("temp", b"22C"),
        ]
    )
    delivered = feed(e, [d for x in m for d in x])
    # Nothing waits for the filtered messages: no reorder timeout is needed.
    assert [(x.topic, x.payload) for x in delivered] == [
        ("temp", b"21C"),
        ("", b"plain"),
        ("temp", b"22C"),
    ]
    stats = e.statistics()
    assert stats.datagrams_filtered == 1 + len(m[2])
    assert stats.messages_lost == 0
    assert stats.datagrams_pending == 0
    assert_accounted(stats)
    # A duplicate of a filtered message is filtered (and counted) again.
    assert feed(e, m[1]) == []
    assert e.statistics().datagrams_filtered == 2 + len(m[2])


def test_filtered_message_ahead_of_a_gap_is_remembered() -> None:
    e = engine()
    e.subscribe(frozenset({"a"}))
    m = topical([("a", b"0"), ("a", b"1"), ("b", b"2"), ("a", b"3")])
    assert [x.payload for x in feed(e, m[0] + m[2] + m[3])] == [b"0"]
    assert [x.payload for x in feed(e, m[1])] == [b"1", b"3"]


def test_subscribing_to_everything_again() -> None:
    e = engine()
    e.subscribe(frozenset({"a"}))
    e.subscribe(None)
    assert [x.topic for x in feed(e, topical([("z", b"1")])[0])] == ["z"]


def test_fragments_with_different_topics_are_malformed() -> None:
    e = engine()
    a = encode_message(5, 0, b"x" * 500, 200, topic=b"a")
    b = encode_message(5, 0, b"x" * 500, 200, topic=b"b")
    assert feed(e, a[:1] + b[1:2]) == []
    assert e.statistics().datagrams_malformed == 1


def test_group_and_unicast_streams_from_one_address_do_not_interfere() -> None:
    e = engine()
    unicast = stream([b"u0", b"u1", b"u2"], session=1)
    group_a = [encode_message(2, i, b"a%d" % i, 200, group=True) for i in range(3)]
    group_b = [encode_message(3, i, b"b%d" % i, 200, group=True) for i in range(3)]
    order = [
        unicast[0],
        group_a[0],
        group_b[0],
        unicast[1],
        group_a[1],
        group_b[1],
        unicast[2],
        group_a[2],
        group_b[2],
    ]
    delivered = feed(e, [d for x in order for d in x])
    assert [x.payload for x in delivered] == [
        b"u0",
        b"a0",
        b"b0",
        b"u1",
        b"a1",
        b"b1",
        b"u2",
        b"a2",
        b"b2",
    ]
    stats = e.statistics()
    assert (stats.peers_opened, stats.session_changes, stats.datagrams_stale_session) == (1, 0, 0)


def test_too_many_group_streams_evict_the_least_recent() -> None:
    e = engine()
    for session in range(1, 7):
        feed(e, encode_message(session, 0, b"x", 200, group=True))
    assert len(e.peers[A].groups) == 4
    assert set(e.peers[A].groups) == {3, 4, 5, 6}


def test_own_group_datagrams_are_recognised() -> None:
    e = engine()
    group_peer = e.destination(("239.1.2.3", 5000), 0.0)
    sent = encode(e, group_peer, b"to the group")
    assert feed(e, sent, address=B) == []  # looped back to us
    other = encode_message(99, 0, b"from someone else", 1200, group=True)
    assert [x.payload for x in feed(e, other, address=B)] == [b"from someone else"]
    stats = e.statistics()
    assert stats.datagrams_own == 1
    assert_accounted(stats)


def test_topic_checks() -> None:
    e = engine()
    peer = e.peer_for(A, 0.0)
    with pytest.raises(ValueError, match="at most 255 bytes"):
        encode(e, peer, b"x", topic="t" * 256)
    with pytest.raises(TypeError, match="a topic is a str"):
        e.subscribe(frozenset({b"bytes"}))  # type: ignore[arg-type]
    raw = engine(framing=False)
    with pytest.raises(ValueError, match="raw mode"):
        raw.subscribe(frozenset({"a"}))
    with pytest.raises(ValueError, match="raw mode"):
        encode(raw, raw.peer_for(A, 0.0), b"x", topic="a")


def batch_datagrams(*batches: list[bytes], size: int = 200, topic: str = "") -> list[list[bytes]]:
    """What one sender's send_batch makes of each batch, one after the other."""
    sender = engine(max_datagram_size=size)
    peer = sender.peer_for(A, 0.0)
    return [encode_batch(sender, peer, batch, topic=topic) for batch in batches]


def test_a_batch_shares_datagrams_and_arrives_as_single_messages() -> None:
    payloads = [b"m%d" % i for i in range(40)] + [b"L" * 500] + [b"", b"end"]
    (datagrams,) = batch_datagrams(payloads)
    assert all(len(datagram) <= 200 for datagram in datagrams)
    assert len(datagrams) < len(payloads) // 2
    e = engine()
    delivered = feed(e, datagrams)
    assert [m.payload for m in delivered] == payloads
    assert [m.sequence for m in delivered] == list(range(len(payloads)))
    stats = e.statistics()
    # Each bundled message counts as a datagram in the outcome accounting.
    assert stats.messages_delivered == stats.datagrams_received - 3 + 1  # 500 B: 3 fragments
    assert_accounted(stats)


def test_bundles_reorder_dedupe_and_filter_like_single_messages() -> None:
    first, second, third = batch_datagrams(
        *([b"%d" % i for i in range(n, n + 5)] for n in (0, 5, 10)), topic="t"
    )
    assert len(first) == len(second) == len(third) == 1
    e = engine(reorder_timeout=1.0)
    assert [m.payload for m in feed(e, first)] == [b"%d" % i for i in range(5)]
    assert feed(e, third) == []  # waits for 5-9
    delivered = feed(e, second + second + first)
    assert [m.payload for m in delivered] == [b"%d" % i for i in range(5, 15)]
    assert {m.topic for m in delivered} == {"t"}
    stats = e.statistics()
    assert stats.datagrams_duplicate == 10
    assert_accounted(stats)
    filtered = engine()
    filtered.subscribe(frozenset({"other"}))
    assert feed(filtered, first + second) == []
    assert filtered.statistics().datagrams_filtered == 10
    assert_accounted(filtered.statistics())


def test_bundled_messages_over_the_receivers_limit_are_dropped_one_by_one() -> None:
    (datagrams,) = batch_datagrams([b"small", b"x" * 50, b"tiny"])
    e = engine(max_message_size=10)
    assert [m.payload for m in feed(e, datagrams)] == [b"small", b"tiny"]
    assert e.statistics().datagrams_over_limit == 1
    assert_accounted(e.statistics())


def test_a_batch_is_checked_whole_first() -> None:
    e = engine(max_message_size=100)
    peer = e.peer_for(A, 0.0)
    with pytest.raises(ValueError, match="larger than max_message_size"):
        encode_batch(e, peer, [b"ok", b"x" * 101])
    with pytest.raises(TypeError, match="bytes-like"):
        encode_batch(e, peer, [b"ok", "text"])  # type: ignore[list-item]
    assert peer.send_sequence == 0
    assert e.statistics().messages_sent == 0


def test_garbage_is_logged_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    e = engine(max_peers=1)
    with caplog.at_level(logging.DEBUG, logger="trioudp"):
        e.receive_datagram(b"not a frame at all, just bytes", A, 0.0)
        feed(e, stream([b"ok"])[0])
        e.receive_datagram(stream([b"x"], session=5)[0][0], B, 0.0)  # over max_peers
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0].startswith("dropped a 30-byte datagram from ('127.0.0.1', 4000): ")
    assert "max_peers=1 are known" in messages[1]
    assert {record.name for record in caplog.records} == {"trioudp._engine"}


def _frames(config: Config, payload: bytes, now: float, to: tuple[str, int] = A) -> list[bytes]:
    """What a fresh sender (a session of its own) sends with one message."""
    sender = Engine(config, now=now, connected_to=to)
    assert sender.client_peer is not None
    if config.reliable:
        sender.queue(sender.client_peer, payload, now)
    else:
        sender.send(sender.client_peer, [payload], now)
    return [data for data, _, _ in sender.datagrams_to_send(now)]


@pytest.mark.parametrize("reliable", [False, True], ids=["unreliable", "reliable"])
def test_one_datagram_with_a_made_up_session_silences_no_one(reliable: bool) -> None:
    """A datagram with a new session id from a talking client's address (to the
    server), or from the server's address (to the client), once retired the
    real session: its next messages were all dropped as stale, and a reliable
    sender lost its peer. Now it is dropped, and both ends go on."""
    config = Config(reliable=reliable)
    server = Engine(config, now=0.0)
    client = Engine(config, now=0.0, connected_to=A)
    peer = client.client_peer
    assert peer is not None
    received: list[bytes] = []
    replies: list[bytes] = []
    now = 0.0
    for index in range(20):
        now += 0.05
        payload = b"m%d" % index
        if reliable:
            client.queue(peer, payload, now)
        else:
            client.send(peer, [payload], now)
        if index == 5:
            for data in _frames(config, b"spoofed", now):
                server.receive_datagram(data, B, now)  # B: the client's address
            for data in _frames(config, b"spoofed", now, to=B):
                client.receive_datagram(data, A, now)  # A: the server's address
        for data, _, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, B, now)
        received += [m.payload for m in messages(server)]
        answer = server.peers[B]
        if reliable:
            server.queue(answer, b"re " + payload, now)
        else:
            server.send(answer, [b"re " + payload], now)
        for data, _, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, A, now)
        replies += [m.payload for m in messages(client)]
    assert received == [b"m%d" % index for index in range(20)]
    assert replies == [b"re m%d" % index for index in range(20)]
    for engine_ in (server, client):
        stats = engine_.statistics()
        assert stats.session_changes == 0
        assert stats.datagrams_stale_session >= 1
        assert stats.messages_failed == 0
        assert_accounted(stats)
    assert server.statistics().peers_opened == 1


def test_a_made_up_session_cannot_keep_a_quiet_client_out() -> None:
    """A client that sends every 2 s; a blind attacker (it knows the address,
    not the session) puts one datagram with a made-up session in a pause, then
    one every 50 s. The made-up session took over the quiet client's place and
    its real session was refused as stale for good (6 of 90 delivered). Now a
    session comes back the way any new one does, once the current one has
    been silent RESTART_QUIET: each forged datagram costs the client what it
    sends within RESTART_QUIET after it (here one message), no more."""
    server = engine()
    client = Engine(Config(), now=0.0, connected_to=A, new_session_id=_SESSIONS.__next__)
    peer = client.client_peer
    assert peer is not None
    delivered: list[bytes] = []
    forged = 0
    for second in range(0, 180, 2):
        now = float(second)
        while server.next_deadline() <= now:
            server.handle_timer(server.next_deadline())
        client.send(peer, [b"t%d" % second], now)
        for data, _, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, B, now)
        delivered += [message.payload for message in messages(server)]
        if second == 10 or (second > 10 and (second - 10) % 50 == 0):
            server.receive_datagram(encode_plain(0xBAD5E55, forged, b"x"), B, now + 1.5)
            forged += 1
            delivered += [message.payload for message in messages(server)]
        server.datagrams_to_send(now)
        server.events()
    real = [payload for payload in delivered if payload.startswith(b"t")]
    assert len(real) == 90 - forged
    assert real[-1] == b"t178"
    assert_accounted(server.statistics())


def test_a_full_budget_does_not_pause_the_reading_for_each_datagram() -> None:
    # The transport stops reading when a message fills its queue (so that its
    # consumer runs first); a queue with room left, in an endpoint whose
    # total_buffer_bytes is what is full, must not stop it at every datagram:
    # no consumer taking from that queue would make room.
    e = engine(
        total_buffer_bytes=64 * 1024,
        peer_buffer_bytes=64 * 1024,
        channel_bytes=64 * 1024,
        max_message_size=1200,
        channel_capacity=10_000,
    )
    m = stream([b"x" * 1000 for _ in range(200)], size=1200)
    filled: list[bool] = []
    for datagrams in m:
        e.delivery.filled = False
        for datagram in datagrams:
            e.receive_datagram(datagram, A, 0.0)
        filled.append(e.delivery.filled)
    stats = e.statistics()
    assert stats.messages_overflow_dropped > 0  # the budget was met
    assert not any(filled)
    assert_accounted(stats)
