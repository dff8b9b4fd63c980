"""Many peers: the memory an idle peer costs, and what finding a datagram's
peer among many costs.

- Memory: a server on trioudp's fake network (trioudp.testing) hears one
  message from each of PEERS addresses, its application reads them all, and
  tracemalloc gives the bytes still held afterwards, per peer (the engine's
  peer, stream and counters, the address, and the trio layer's Connection;
  not the fake network's own state), unreliable and reliable.
- Demultiplexing: the sans-IO engine takes the same number of in-order
  datagrams from one peer, and round-robin from PEERS peers; the ratio of the
  two is what looking peers up and touching their state costs.

    python bench/peers.py [--peers N] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import sys
import time
import tracemalloc
from pathlib import Path

import trio
import trio.testing

import trioudp
from trioudp._engine import Engine
from trioudp._frame import encode_message, encode_reliable, sealer
from trioudp.testing import FakeNetwork

SERVER = ("10.0.0.1", 5000)
#: The issue's target: bytes per idle peer.
TARGET = 2048


def _address(index: int) -> tuple[str, int]:
    return (f"10.1.{index // 250}.{index % 250 + 1}", 40000 + index % 1000)


def _frame(index: int, *, reliable: bool) -> bytes:
    session = 0x1000 + index
    if reliable:
        return encode_reliable(
            session, 0, 0, 0, None, b"", b"hello", sealer(None), authenticated=False
        )
    return encode_message(session, 0, b"hello", 1200)[0]


async def _memory_per_peer(peers: int, reliable: bool) -> float:
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_server(
            *SERVER, reliable=reliable, max_peers=peers + 200, channel_capacity=peers + 200
        ) as server:

            async def hear(first: int, count: int) -> None:
                for index in range(first, first + count):
                    network.inject(_frame(index, reliable=reliable), _address(index), SERVER)
                for _ in range(count):
                    await server.receive()

            # Warm up: whatever is made once per endpoint is made before counting.
            await hear(0, 100)
            gc.collect()
            tracemalloc.start()
            try:
                before = _held()
                await hear(100, peers)
                await trio.testing.wait_all_tasks_blocked()
                gc.collect()
                after = _held()
            finally:
                tracemalloc.stop()
            assert server.statistics().peers == peers + 100
    return (after - before) / peers


def _held() -> int:
    """Bytes allocated and still held, but for the fake network's own (its
    routing state for the addresses ACKs go to is not trioudp's cost)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(inclusive=False, filename_pattern="*/trioudp/testing/*")]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


def memory_per_peer(peers: int, *, reliable: bool) -> float:
    return trio.run(_memory_per_peer, peers, reliable)


def _feed_seconds(datagrams: list[tuple[bytes, tuple[str, int]]], peers: int) -> float:
    engine = Engine(
        trioudp.Config(max_peers=peers + 1), now=0.0, new_session_id=itertools.count(1).__next__
    )
    receive = engine.receive_datagram
    queue = engine.shared_queue()
    start = time.perf_counter()
    for index, (datagram, address) in enumerate(datagrams):
        receive(datagram, address, 0.0)
        if index % 1024 == 1023:
            engine.events()
            engine.take(queue, 1024)  # as the application would
    return time.perf_counter() - start


def demultiplexing(peers: int, per_peer: int, rounds: int = 3) -> tuple[float, float]:
    """Microseconds per datagram from one peer, and round-robin from ``peers``."""
    total = peers * per_peer
    alone = [
        (encode_message(7, sequence, b"x" * 64, 1200)[0], _address(0)) for sequence in range(total)
    ]
    many = [
        (encode_message(0x1000 + index, sequence, b"x" * 64, 1200)[0], _address(index))
        for sequence in range(per_peer)
        for index in range(peers)
    ]
    one = min(_feed_seconds(alone, 1) for _ in range(rounds))
    spread = min(_feed_seconds(many, peers) for _ in range(rounds))
    return one / total * 1e6, spread / total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description="trioudp with many peers")
    parser.add_argument("--peers", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    results: dict[str, object] = {"python": sys.version.split()[0], "peers": args.peers}
    print(f"{'measure':<44} {'value':>10}  target")
    for reliable in (False, True):
        per_peer = memory_per_peer(args.peers, reliable=reliable)
        name = f"bytes per idle peer ({'reliable' if reliable else 'unreliable'})"
        met = "met" if per_peer <= TARGET else "NOT met"
        print(f"{name:<44} {per_peer:>10,.0f}  <= {TARGET} ({met})", flush=True)
        results[f"bytes_per_peer_{'reliable' if reliable else 'unreliable'}"] = round(per_peer)
    one, spread = demultiplexing(args.peers, 10)
    print(f"{'us per datagram, one peer':<44} {one:>10.2f}")
    print(f"{f'us per datagram, round-robin over {args.peers} peers':<44} {spread:>10.2f}")
    print(f"{'ratio (many / one)':<44} {spread / one:>10.2f}")
    results.update(
        microseconds_one_peer=round(one, 3),
        microseconds_many_peers=round(spread, 3),
        demultiplexing_ratio=round(spread / one, 3),
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
