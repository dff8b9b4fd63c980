"""Driving the sans-IO engine by hand in tests, as the trio shell does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import strategies as st

from trioudp._events import Event, MessagesWaiting
from trioudp._frame import encode_bundle, encode_message, encode_plain

if TYPE_CHECKING:
    from collections.abc import Sequence

    from typing_extensions import Buffer

    from trioudp import Message
    from trioudp._engine import Engine
    from trioudp._message import Address
    from trioudp._peer import Peer

A = ("127.0.0.1", 4000)
B = ("127.0.0.1", 4001)
#: Where the senders of ``traffic`` are.
ADDRESSES = [("10.0.0.2", 4000), ("10.0.0.3", 4000), ("10.0.0.4", 5000)]


def messages(engine: Engine) -> list[Message]:
    """Every message waiting for the application (the server's shared queue, or
    a client's own), taken as the application would take them."""
    peer = engine.client_peer
    queue = engine.claim(peer) if peer is not None else engine.shared_queue()
    taken = engine.take(queue, 10**9)
    assert isinstance(taken, list)
    return taken


def events(engine: Engine) -> list[Event]:
    """The events since last time, but for the queues' wake-ups."""
    return [event for event in engine.events() if not isinstance(event, MessagesWaiting)]


def take(engine: Engine) -> tuple[list[Message], list[Event]]:
    return messages(engine), events(engine)


def feed(
    engine: Engine, datagrams: Sequence[bytes], now: float = 0.0, address: Address = A
) -> list[Message]:
    for datagram in datagrams:
        engine.receive_datagram(datagram, address, now)
    return take(engine)[0]


def outgoing(engine: Engine, now: float = 0.0) -> list[bytes]:
    """The datagrams the engine has to send now (their bytes only)."""
    return [datagram for datagram, _, _ in engine.datagrams_to_send(now)]


def encode(
    engine: Engine, peer: Peer, payload: Buffer, now: float = 0.0, *, topic: str = ""
) -> list[bytes]:
    """What sending one unreliable message to ``peer`` puts on the wire."""
    engine.send(peer, [payload], now, topic=topic)
    return outgoing(engine, now)


def encode_batch(
    engine: Engine, peer: Peer, payloads: Sequence[Buffer], now: float = 0.0, *, topic: str = ""
) -> list[bytes]:
    engine.send(peer, payloads, now, topic=topic)
    return outgoing(engine, now)


@st.composite
def traffic(draw: st.DrawFn) -> list[tuple[int, bytes, float]]:
    """Datagrams as senders make them (plain, fragmented, bundled, with topics,
    group frames), then reordered, duplicated and sprinkled with garbage and
    sender restarts; each with its source and a time."""
    datagrams: list[tuple[int, bytes]] = []
    for source in range(draw(st.integers(1, len(ADDRESSES)))):
        session = draw(st.integers(1, 2**64 - 1))
        sequence = draw(st.integers(0, 2**32 - 1))
        for _ in range(draw(st.integers(1, 12))):
            shape = draw(
                st.sampled_from(
                    ["plain"] * 8 + ["large", "bundle", "bundle", "topic", "group", "restart"]
                )
            )
            if shape == "restart":
                session = draw(st.integers(1, 2**64 - 1))
                sequence = 0
                continue
            payload = draw(st.binary(max_size=40))
            if shape == "large":
                made = encode_message(session, sequence, payload * 20 + b"!", 300)
                sequence += 1
            elif shape == "bundle":
                parts = draw(st.lists(st.binary(max_size=20), min_size=2, max_size=5))
                made = [encode_bundle(session, sequence, parts)]
                sequence += len(parts)
            elif shape == "topic":
                made = encode_message(session, sequence, payload, 1200, topic=b"t")
                sequence += 1
            elif shape == "group":
                made = encode_message(session ^ 1, sequence, payload, 1200, group=True)
            else:
                made = [encode_plain(session, sequence, payload)]
                sequence += 1
            sequence %= 2**32
            datagrams.extend((source, datagram) for datagram in made)
    # Mostly in order, as a network delivers them: a few neighbours swapped,
    # a few copies and garbage datagrams put anywhere.
    order = list(datagrams)
    for index in draw(st.lists(st.integers(0, max(len(order) - 2, 0)), max_size=len(order) // 4)):
        if index + 1 < len(order):
            order[index], order[index + 1] = order[index + 1], order[index]
    extras = draw(st.lists(st.sampled_from(datagrams), max_size=4)) if datagrams else []
    extras += [(0, garbage) for garbage in draw(st.lists(st.binary(max_size=30), max_size=3))]
    for extra in extras:
        order.insert(draw(st.integers(0, len(order))), extra)
    times = draw(st.lists(st.floats(0, 0.05), min_size=len(order), max_size=len(order)))
    now = 0.0
    timed: list[tuple[int, bytes, float]] = []
    for (source, datagram), step in zip(order, times, strict=True):
        now += step
        timed.append((source, datagram, now))
    return timed
