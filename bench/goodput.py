"""Goodput: reliable mode next to unreliable mode, client to server on loopback.

A client sends COUNT messages of each size (``await conn.send()`` per message,
then, in reliable mode, ``flush()``) while the server's application iterates
them; the time runs from the first send to the last message received. The table
gives messages and megabytes of payload per second (best of ROUNDS) and the
ratio to a plain-Python
pair (a process sending with blocking ``send()``, this one receiving with
``recv_into()``), the reference without any protocol; all in one run. Unreliable mode may lose
messages when the receiver falls behind (the count delivered is shown);
reliable mode never does.

    python bench/goodput.py [--count N] [--rounds R]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
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


_RAW_SENDER = """
import socket, sys
count, size, port = map(int, sys.argv[1:])
payload = b"x" * size
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.connect(("127.0.0.1", port))
    for _ in range(count):
        sock.send(payload)
    sock.send(b"")
"""


def raw_pair(size: int, count: int) -> tuple[float, int]:
    """Plain Python, no protocol: a process sending with blocking send() and
    this one receiving with recv_into(), until an empty end marker (or 0.5 s of
    silence: what a full buffer dropped is not waited for)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * 1024 * 1024)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        buffer = bytearray(65536)
        port = sock.getsockname()[1]
        sender = subprocess.Popen(
            [sys.executable, "-c", _RAW_SENDER, str(count), str(size), str(port)]
        )
        received = 0
        start = last = 0.0
        try:
            while True:
                length = sock.recv_into(buffer)
                last = time.perf_counter()
                if length == 0 and size:
                    break
                if not received:
                    start = last
                received += 1
        except TimeoutError:
            pass
        sender.wait()
    return last - start, received


def main() -> None:
    parser = argparse.ArgumentParser(description="reliable and unreliable goodput")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'size':>7} {'mode':>10} {'delivered':>10} {'msg/s':>10} {'MB/s':>8} {'ratio':>6}")
    for size in SIZES:
        count = max(args.count * 64 // size, 500) if size > 1024 else args.count
        best_raw = 0.0
        raw_delivered = 0
        for _ in range(args.rounds):
            seconds, got = raw_pair(size, count)
            if seconds > 0 and got / seconds > best_raw:
                best_raw, raw_delivered = got / seconds, got
        print(
            f"{size:>7} {'raw pair':>10} {raw_delivered:>4}/{count:<5} {best_raw:>10,.0f} "
            f"{best_raw * size / 1e6:>8.1f} {1:>6.2f}"
        )
        for reliable in (False, True):
            best = 0.0
            delivered = 0
            for _ in range(args.rounds):
                seconds, got = trio.run(partial(run, size, count, reliable=reliable))
                rate = got / seconds
                if rate > best:
                    best, delivered = rate, got
            ratio = best / best_raw
            mode = "reliable" if reliable else "unreliable"
            print(
                f"{size:>7} {mode:>10} {delivered:>4}/{count:<5} {best:>10,.0f} "
                f"{best * size / 1e6:>8.1f} {ratio:>6.2f}"
            )


if __name__ == "__main__":
    main()
