"""Receive capacity of one port served by 1 and by N worker processes (issue 16).

For each worker count: ``serve_workers`` starts the workers (each serving with
a handler that only reads), they are paused (SIGSTOP), every worker's socket
is filled from many source ports (the placement program spreads the peers
over the workers), the workers are resumed (SIGCONT) and the clock runs until
their statistics say every message was delivered. The table gives messages
per second and the ratio to one worker (target: >= 1.7x with 2 workers on
this 2-core machine).

    python bench/workers.py [--peers P] [--each K] [--workers 1 2] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

import trioudp
from trioudp._frame import encode_message

if TYPE_CHECKING:
    from trioudp import Connection, Workers

PAYLOAD = b"x" * (64 - 20)  # a 64-byte frame
#: Each socket's buffer: SO_RCVBUFFORCE (root) lets it hold the whole fill.
BUFFER = 256 * 1024 * 1024
SO_RCVBUFFORCE = 33


async def reader(connection: Connection) -> None:
    """The workers' handler: take every message, do nothing with it."""
    async for _message in connection:
        pass


def fill(port: int, peers: int, each: int) -> None:
    """``each`` framed 64-byte messages from each of ``peers`` source ports
    (all open at once: a port closed and used again by the next sender would
    be one peer with a new session, which a server takes only after 1 s)."""
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(peers)]
    try:
        for sender in senders:
            session = int.from_bytes(os.urandom(8), "big")
            for sequence in range(each):
                sender.sendto(
                    encode_message(session, sequence, PAYLOAD, 1200)[0], ("127.0.0.1", port)
                )
    finally:
        for sender in senders:
            sender.close()


async def measure(workers: int, peers: int, each: int) -> dict[str, float]:
    async with trio.open_nursery() as nursery:
        group: Workers = await nursery.start(
            partial(trioudp.serve_workers, workers=workers, channel_capacity=4096),
            reader,
            "127.0.0.1",
            0,
        )
        for worker in group._workers:
            try:
                worker.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER)
            except PermissionError:
                worker.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        pids = [pid for pid in group.pids() if pid is not None]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        fill(group.local_address[1], peers, each)
        total = peers * each
        start = time.perf_counter()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        delivered = dropped = 0
        with trio.move_on_after(120):
            while delivered + dropped < total:
                await trio.sleep(0.002)
                figures = (await group.statistics()).values()
                delivered = sum(each.messages_delivered for each in figures)
                dropped = sum(each.datagrams_kernel_dropped for each in figures)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return {
        "workers": workers,
        "messages": total,
        "delivered": delivered,
        "kernel_dropped": dropped,
        "seconds": elapsed,
        "messages_per_second": delivered / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="receive capacity with N worker processes")
    parser.add_argument("--peers", type=int, default=400)
    parser.add_argument("--each", type=int, default=250)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the table here too")
    args = parser.parse_args()
    rows: list[dict[str, float]] = []
    print(
        f"{args.peers} peers x {args.each} messages of 64 bytes, pre-filled; best of {args.rounds}"
    )
    print("workers        msg/s   vs 1 worker   delivered  kernel-dropped")
    baseline = None
    for count in args.workers:
        best = max(
            (trio.run(measure, count, args.peers, args.each) for _ in range(args.rounds)),
            key=lambda row: row["messages_per_second"],
        )
        rate = best["messages_per_second"]
        baseline = baseline or rate
        best["ratio"] = rate / baseline
        print(
            f"{count:>7} {rate:>12,.0f} {rate / baseline:>12.2f}x "
            f"{best['delivered']:>11,.0f} {best['kernel_dropped']:>14,.0f}"
        )
        rows.append(best)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"python": sys.version.split()[0], "cpus": os.cpu_count(), "rows": rows}, indent=2
            )
        )


if __name__ == "__main__":
    main()
