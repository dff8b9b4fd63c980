"""Amplification: the most an endpoint sends an address that never answers, per
byte received from it, for each kind of datagram it sends by itself (RFC 9000
§8.1 holds these to 3x; issue 13). Sans-IO, on an explicit clock, so the
figures are exact rather than timed.

    python bench/amplification.py
"""

from __future__ import annotations

from trioudp import Config, Message
from trioudp._engine import Engine
from trioudp._frame import KIND_PING, encode_control, encode_message, encode_reliable, sealer
from trioudp._peer import Peer

VICTIM = ("10.0.0.66", 4000)
SERVER = ("10.0.0.1", 5000)
KEY = bytes(range(1, 33))


def run(engine: Engine, until: float) -> int:
    """Fire the engine's timers until ``until``: the bytes it sent the victim."""
    sent = 0
    while (deadline := engine.next_deadline()) <= until:
        engine.handle_timer(deadline)
        sent += sum(len(data) for data, to, _ in engine.datagrams_to_send(deadline) if to == VICTIM)
    return sent


def drain(engine: Engine) -> list[Message]:
    taken = engine.take(engine.shared_queue(), 10**6)
    return taken if isinstance(taken, list) else []


def ratios(key: bytes | None) -> dict[str, float]:
    seal = sealer(key)
    keyed = key is not None
    found: dict[str, float] = {}
    # ACKs: reliable data with every other packet number skipped (most ranges per ACK).
    engine = Engine(Config(reliable=True), now=0.0, key=key)
    for index in range(400):
        data = encode_reliable(7, index, 2 * index, 0, None, b"", b"x", seal, authenticated=keyed)
        engine.receive_datagram(data, VICTIM, index * 0.001)
        drain(engine)
        engine.datagrams_to_send(index * 0.001)
    stats = engine.statistics()
    found["ACKs to sparse data"] = stats.bytes_sent / stats.bytes_received
    # ACKs answering PINGs, after data that leaves many ranges to report.
    engine = Engine(Config(reliable=True), now=0.0, key=key)
    for index in range(40):
        data = encode_reliable(7, index, 2 * index, 0, None, b"", b"x", seal, authenticated=keyed)
        engine.receive_datagram(data, VICTIM, 0.0)
    drain(engine)
    engine.datagrams_to_send(0.0)
    ping = encode_control(KIND_PING, 7, 0, b"", seal, authenticated=keyed)
    for index in range(400):
        engine.receive_datagram(ping, VICTIM, 0.1 + index * 0.01)
        engine.datagrams_to_send(0.1 + index * 0.01)
    stats = engine.statistics()
    found["ACKs answering PINGs"] = stats.bytes_sent / stats.bytes_received
    # REJECTs: reliable frames at an unreliable endpoint, ten a second for a minute.
    engine = Engine(Config(), now=0.0, key=key)
    for index in range(600):
        data = encode_reliable(7 + index, 0, 0, 0, None, b"", b"", seal, authenticated=keyed)
        engine.receive_datagram(data, VICTIM, index * 0.1)
        engine.datagrams_to_send(index * 0.1)
    stats = engine.statistics()
    found["REJECTs"] = stats.bytes_sent / stats.bytes_received
    # A reliable reply to one request, never acknowledged: what goes beyond its
    # first transmission (retransmissions, probes) for replies of every size.
    worst = 0.0
    for size in (0, 1, 100, 1000, 5000, 100_000):
        config = Config(reliable=True, give_up_timeout=30.0)
        server = Engine(config, now=0.0, key=key)
        client = Engine(config, now=0.0, connected_to=SERVER, key=key)
        assert client.client_peer is not None
        client.queue(client.client_peer, b"q" * 20, 0.0)
        request = [data for data, _, _ in client.datagrams_to_send(0.0)]
        for data in request:
            server.receive_datagram(data, VICTIM, 0.0)
        (message,) = drain(server)
        peer = message._origin
        assert isinstance(peer, Peer)
        server.queue(peer, b"r" * size, 0.0)
        server.datagrams_to_send(0.0)  # the first transmission: the application's
        worst = max(worst, run(server, 120.0) / sum(len(data) for data in request))
    found["retransmissions and probes of a reply"] = worst
    # Keepalive PINGs for an hour to an address that sent one datagram.
    engine = Engine(Config(keepalive=15.0, idle_timeout=None, dead_timeout=None), now=0.0, key=key)
    frame = encode_message(7, 0, b"x", 1200, key=key)[0]
    engine.receive_datagram(frame, VICTIM, 0.0)
    drain(engine)
    found["keepalive PINGs, an hour"] = run(engine, 3600.0) / len(frame)
    return found


def main() -> None:
    plain, keyed = ratios(None), ratios(KEY)
    print("bytes sent / bytes received, towards an address that never answers")
    print(f"{'what the endpoint sends by itself':<42}{'no key':>8}{'key=':>8}")
    for name, value in plain.items():
        print(f"{name:<42}{value:>8.2f}{keyed[name]:>8.2f}")


if __name__ == "__main__":
    main()
