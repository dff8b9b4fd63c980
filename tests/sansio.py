"""Driving the sans-IO engine by hand in tests, as the trio shell does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioudp._events import Event, MessagesWaiting

if TYPE_CHECKING:
    from collections.abc import Sequence

    from typing_extensions import Buffer

    from trioudp import Message
    from trioudp._engine import Engine
    from trioudp._message import Address
    from trioudp._peer import Peer

A = ("127.0.0.1", 4000)
B = ("127.0.0.1", 4001)


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
