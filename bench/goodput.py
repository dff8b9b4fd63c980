"""Goodput: reliable mode next to unreliable mode, client to server on loopback.

A client sends COUNT messages of each size (``await conn.send()`` per message,
then, in reliable mode, ``flush()``) while the server's application iterates
them; the time runs from the first send to the last message received. The table
gives messages and megabytes of payload per second (best of ROUNDS) and the
reliable/unreliable ratio, all measured in one run. Unreliable mode may lose
messages when the receiver falls behind (the count delivered is shown);
reliable mode never does.

    python bench/goodput.py [--count N] [--rounds R]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import trio

import trioudp

SIZES = (64, 1024, 16 * 1024)


async def run(size: int, count: int, *, reliable: bool) -> tuple[float, int]:
    """Seconds from the first send until the receiver has everything it will
    get, and how many messages it got."""
    payload = b"x" * size
    received = 0
    async with (
        trioudp.open_udp_server(
            "127.0.0.1", 0, reliable=reliable, channel_capacity=2**20, channel_bytes=2**31
        ) as server,
        trioudp.open_udp_connection(*server.local_address[:2], reliable=reliable) as conn,
    ):
        done = trio.Event()
        last = time.perf_counter()

        async def collect() -> None:
            nonlocal received, last
            while received < count:
                batch = await server.receive_batch()
                received += len(batch)
                last = time.perf_counter()
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            start = time.perf_counter()
            for _ in range(count):
                await conn.send(payload)
            await conn.flush()
            # Unreliable mode: whatever is still coming arrives within this.
            with trio.move_on_after(0.5):
                await done.wait()
            nursery.cancel_scope.cancel()
    return last - start, received


def main() -> None:
    parser = argparse.ArgumentParser(description="reliable and unreliable goodput")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'size':>7} {'mode':>10} {'delivered':>10} {'msg/s':>10} {'MB/s':>8} {'ratio':>6}")
    for size in SIZES:
        count = max(args.count * 64 // size, 500) if size > 1024 else args.count
        rates: dict[bool, float] = {}
        for reliable in (False, True):
            best = 0.0
            delivered = 0
            for _ in range(args.rounds):
                seconds, got = trio.run(partial(run, size, count, reliable=reliable))
                rate = got / seconds
                if rate > best:
                    best, delivered = rate, got
            rates[reliable] = best
            ratio = best / rates[False]
            mode = "reliable" if reliable else "unreliable"
            print(
                f"{size:>7} {mode:>10} {delivered:>4}/{count:<5} {best:>10,.0f} "
                f"{best * size / 1e6:>8.1f} {ratio:>6.2f}"
            )


if __name__ == "__main__":
    main()
