"""Every fast path is a twin of the slow path it shortens: the same input
gives the same events, bytes and counters either way.

The fast paths: the decoder's shortcut for a plain frame (``_frame.py``),
the receiver's for the next whole message of a known stream
(``Reception.in_order``, and ``Reception.reliable_in_order`` in reliable
mode), and the sender's for one small bytes payload (``Engine.send``). ``Engine(fast_paths=False)`` takes the general path for
everything."""

from __future__ import annotations

import itertools
from array import array
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sansio import ADDRESSES, traffic

from trioudp import Config, Message
from trioudp._budget import message_cost
from trioudp._engine import Engine
from trioudp._frame import (
    CRC_SIZE,
    Frame,
    _decode_fields_untrusted,
    decode_frame_untrusted,
    encode_plain,
    encode_reliable,
    sealer,
)

if TYPE_CHECKING:
    from trioudp._events import Event
    from trioudp._peer import Peer


FIELDS = (
    "session",
    "sequence",
    "payload",
    "message_length",
    "fragment_index",
    "fragment_count",
    "topic",
    "group",
    "packet",
    "oldest",
    "kind",
    "parts",
)


def fields(frame: Frame) -> dict[str, object]:
    values = {name: getattr(frame, name) for name in FIELDS}
    values["payload"] = bytes(frame.payload)
    values["parts"] = [bytes(part) for part in frame.parts]
    return values


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=1400))
def test_the_plain_frame_shortcut_decodes_as_the_general_path(
    session: int, sequence: int, payload: bytes
) -> None:
    datagram = encode_plain(session, sequence, payload)
    fast = decode_frame_untrusted(datagram)
    general = _decode_fields_untrusted(
        memoryview(datagram), 0, session, sequence, len(datagram) - CRC_SIZE
    )
    assert fields(fast) == fields(general)


def engines(**options: Any) -> tuple[Engine, Engine]:
    config = Config(**options)
    return tuple(  # type: ignore[return-value]
        Engine(
            config,
            now=0.0,
            new_session_id=itertools.count(1000).__next__,
            fast_paths=fast,
        )
        for fast in (True, False)
    )


def describe(event: Event) -> tuple[object, ...]:
    kind = type(event).__name__
    peer = getattr(event, "peer", None)
    return (
        kind,
        None if peer is None else peer.address,
        getattr(event, "state", None),
        getattr(event, "reason", None),
    )


def observe(engine: Engine, now: float) -> tuple[object, ...]:
    """Everything the engine gives the shell after some work."""
    queue = engine.shared_queue()
    taken = engine.take(queue, 10**6)
    assert isinstance(taken, list)
    messages = [(m.payload, m.address, m.sequence, m.topic, m._datagrams) for m in taken]
    events = [describe(event) for event in engine.events()]
    sent = engine.datagrams_to_send(now)
    stats = engine.statistics()
    peers = {address: peer.statistics() for address, peer in engine.peers.items()}
    return messages, events, sent, stats, peers, engine.next_deadline(), engine.buffered_bytes


@given(traffic(), st.booleans(), st.sampled_from([None, None, frozenset({"", "t"})]))
def test_the_in_order_shortcut_receives_as_the_general_path(
    arriving: list[tuple[int, bytes, float]], ordered: bool, topics: frozenset[str] | None
) -> None:
    fast, general = engines(ordered=ordered, reorder_timeout=0.02, reassembly_timeout=0.1)
    for engine in (fast, general):
        engine.subscribe(topics)
    for source, datagram, now in arriving:
        for engine in (fast, general):
            engine.handle_timer(now)
            engine.receive_datagram(datagram, ADDRESSES[source], now)
        assert observe(fast, now) == observe(general, now)
    for engine in (fast, general):
        engine.handle_timer(10.0)
    assert observe(fast, 10.0) == observe(general, 10.0)


def reliable_sender(max_datagram_size: int = 1200) -> tuple[Engine, Peer]:
    """A reliable client engine, and the peer it sends to."""
    sender = Engine(
        Config(reliable=True, max_datagram_size=max_datagram_size),
        now=0.0,
        connected_to=("10.0.0.1", 5000),
        new_session_id=itertools.count(77).__next__,
    )
    peer = sender.client_peer
    assert peer is not None
    return sender, peer


@st.composite
def reliable_traffic(draw: st.DrawFn) -> list[tuple[bytes, float]]:
    """What a reliable sender puts on the wire for a few messages (mostly
    whole, some fragmented, some with a topic, some bundled), then lost, duplicated and
    reordered; and whole messages forged to say that the sender's oldest
    unacknowledged message is past them."""
    sender, peer = reliable_sender(max_datagram_size=300)
    sent: list[bytes] = []
    sizes = st.one_of(st.integers(0, 40), st.integers(0, 700))  # whole, bundled or fragmented
    messages = st.tuples(sizes, st.sampled_from(["", "t"]), st.booleans())
    for size, topic, flush in draw(st.lists(messages, max_size=12)):
        sender.queue(peer, bytes([len(sent) % 256]) * size, 0.0, topic=topic)
        if flush:  # else it may share a bundle with the next ones
            sent.extend(datagram for datagram, _, _ in sender.datagrams_to_send(0.0))
    sent.extend(datagram for datagram, _, _ in sender.datagrams_to_send(0.0))
    if not sent:
        return []
    arriving = draw(st.lists(st.sampled_from(sent), max_size=20))
    if draw(st.booleans()) or not arriving:
        arriving = sent + arriving  # all of it in order first, then copies
    for index in draw(st.lists(st.integers(0, len(arriving) - 1), max_size=2)):
        frame = decode_frame_untrusted(arriving[index])
        if frame.fragment_count == 1 and not frame.parts:
            forged = encode_reliable(
                frame.session,
                frame.sequence,
                frame.packet + 1000,
                frame.sequence + draw(st.integers(1, 3)),
                None,
                frame.topic,
                frame.payload,
                sealer(None),
                authenticated=False,
            )
            arriving.insert(index, forged)
    return [(datagram, index * 0.001) for index, datagram in enumerate(arriving)]


@given(
    reliable_traffic(),
    st.lists(st.sampled_from([False, False, True]), min_size=30, max_size=30),
    st.sampled_from([None, None, frozenset({"", "t"}), frozenset({"t"})]),
    st.sampled_from(
        [
            {},
            {"reorder_window": 2},
            {"reorder_window": 4},
            {"max_message_size": 300},
            {"peer_buffer_bytes": 700, "max_message_size": 500},
        ]
    ),
)
def test_the_reliable_in_order_shortcut_receives_as_the_general_path(
    arriving: list[tuple[bytes, float]],
    takes: list[bool],
    topics: frozenset[str] | None,
    limits: dict[str, int],
) -> None:
    # The application takes what waits only now and then, so that the window
    # and the budget fill up too.
    fast, general = engines(reliable=True, **limits)
    for engine in (fast, general):
        engine.subscribe(topics)
    for (datagram, now), take in zip(arriving, takes, strict=False):
        for engine in (fast, general):
            engine.handle_timer(now)
            engine.receive_datagram(datagram, ADDRESSES[0], now)
        if take:
            assert observe(fast, now) == observe(general, now)
    for engine in (fast, general):
        engine.handle_timer(10.0)
    assert observe(fast, 10.0) == observe(general, 10.0)


def reliable_frames(batches: list[int], size: int) -> list[bytes]:
    """A reliable sender's datagrams for ``batches`` of messages of ``size``
    bytes, each batch queued at once (so sent as one bundle)."""
    sender, peer = reliable_sender()
    sent: list[bytes] = []
    for count in batches:
        for _ in range(count):
            sender.queue(peer, b"m" * size, 0.0)
        sent.extend(datagram for datagram, _, _ in sender.datagrams_to_send(0.0))
    return sent


@pytest.mark.parametrize(
    "limits",
    [
        {"reorder_window": 3},
        # Room for exactly two 100-byte messages (160 bytes of bookkeeping each).
        {"peer_buffer_bytes": 2 * message_cost(100) + 50, "max_message_size": 100},
    ],
)
@pytest.mark.parametrize("untaken", [0, 1, 2, 3])
@pytest.mark.parametrize("bundled", [1, 2, 3, 4])
def test_a_bundle_at_the_edge_of_the_window_or_budget_is_taken_as_the_general_path_takes_it(
    limits: dict[str, int], untaken: int, bundled: int
) -> None:
    # ``untaken`` messages wait for the application, then a bundle of
    # ``bundled`` comes: all of it fits, or some of it is refused (and the
    # bundle not acknowledged) exactly as the general path decides.
    frames = reliable_frames([1] * untaken + [bundled], 100)
    fast, general = engines(reliable=True, **limits)
    for engine in (fast, general):
        for datagram in frames:
            engine.receive_datagram(datagram, ADDRESSES[0], 0.0)
    assert observe(fast, 0.0) == observe(general, 0.0)


def view(data: bytes) -> memoryview:
    return memoryview(data)


payloads = st.one_of(
    st.binary(max_size=2600),
    st.binary(max_size=100).map(bytearray),
    st.binary(max_size=100).map(view),
    st.lists(st.integers(0, 2**32 - 1), max_size=30).map(lambda items: array("I", items)),
)


@given(
    st.lists(
        st.tuples(
            st.lists(payloads, min_size=1, max_size=4),
            st.sampled_from(["", "t"]),
            st.sampled_from([None, 46]),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_the_small_send_shortcut_sends_as_the_general_path(
    sends: list[tuple[list[Any], str, int | None, bool]],
) -> None:
    fast, general = engines()
    for batch, topic, priority, group in sends:
        outputs: list[tuple[object, ...]] = []
        for engine in (fast, general):
            peer = (
                engine.destination(ADDRESSES[2], 0.0)
                if group
                else engine.peer_for(ADDRESSES[0], 0.0)
            )
            engine.send(peer, batch, 0.0, topic=topic, priority=priority)
            outputs.append(observe(engine, 0.0))
        assert outputs[0] == outputs[1]


@given(traffic(), st.lists(st.integers(0, 30), max_size=5), st.booleans())
def test_taking_one_message_is_taking_a_batch_of_one(
    arriving: list[tuple[int, bytes, float]], reports: list[int], reliable: bool
) -> None:
    """``take_one`` (what receive() uses) against ``take(queue, 1)``: the same
    messages and error reports in the same order, the same charges let go, the
    same acknowledgements made."""
    config = Config(reliable=reliable)
    twins = [
        Engine(
            config, now=0.0, connected_to=ADDRESSES[0], new_session_id=itertools.count(9).__next__
        )
        for _ in range(2)
    ]
    queues = [engine.claim(engine.client_peer) for engine in twins]  # type: ignore[arg-type]
    for step, (_source, datagram, now) in enumerate(arriving):
        for engine in twins:
            engine.receive_datagram(datagram, ADDRESSES[0], now)
            if step in reports:
                engine.unreachable(111, "Connection refused", now)
    one, batch = twins
    while True:
        single = one.take_one(queues[0])
        several = batch.take(queues[1], 1)
        if single is None:
            assert several == []
            break
        if isinstance(single, Message):
            assert isinstance(several, list)
            (expected,) = several
            assert (single.payload, single.sequence) == (expected.payload, expected.sequence)
        else:
            assert single == several
        assert one.buffered_bytes == batch.buffered_bytes
        assert one.datagrams_to_send(0.0) == batch.datagrams_to_send(0.0)
    assert one.statistics() == batch.statistics()
