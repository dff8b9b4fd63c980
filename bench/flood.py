"""Receiving under a flood: how many messages each way of consuming a server
delivers while a faster sender floods it, against the same consumer draining a
backlog already in the socket buffer (issue 14, target 1: >= 0.9x).

A separate process sends framed 64-byte datagrams (one session, numbered) to
the server on loopback as fast as it can for SECONDS; the consumer takes them
one of four ways: ``async for``, ``receive()`` inside ``trio.fail_after(1)``
per message, ``receive_batch()``, and a ``serve()`` handler iterating its
connection. The table gives, per consumer: its rate on a pre-filled backlog,
the messages it got per second under the flood, their ratio, what trioudp
decoded and then dropped (``messages_overflow_dropped``), and what the kernel
dropped for want of room in the socket buffer (``datagrams_kernel_dropped``,
Linux).

    python bench/flood.py [--seconds S] [--count N] [--rounds R] [--flood-rounds F] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

import trioudp
from trioudp._frame import encode_message

PAYLOAD = b"x" * (64 - 20)  # a 64-byte frame
#: Where the sender process imports trioudp from: the same tree as this one.
ROOT = str(Path(trioudp.__file__).resolve().parent.parent)
CONSUMERS = ("async for", "receive() in fail_after", "receive_batch()", "serve() handler")

SENDER = r"""
import socket, sys, time
sys.path.insert(0, sys.argv[4])
from trioudp._frame import encode_plain
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
payload = b"x" * 44
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect((host, port))
sent, end = 0, time.monotonic() + seconds
while sent < 50_000_000:  # each numbered: a window never sees a number twice
    if sent % 1024 == 0 and time.monotonic() >= end:
        break
    try:
        sock.send(encode_plain(7, sent, payload))
    except OSError:
        pass
    sent += 1
print(sent)
"""


class Tally:
    """Messages taken, and when the last one was."""

    def __init__(self) -> None:
        self.taken = 0
        self.last = time.perf_counter()

    def add(self, count: int = 1) -> None:
        self.taken += count
        self.last = time.perf_counter()


async def consume(server: trioudp.UDPServer, how: str, until: float, count: int) -> Tally:
    """Take messages ``how`` until ``count`` were taken, the clock reaches
    ``until``, or nothing came for a second."""
    tally = Tally()
    with trio.move_on_at(until):
        if how == "async for":
            async for _message in server:
                tally.add()
                if tally.taken >= count:
                    break
        elif how == "receive() in fail_after":
            with contextlib.suppress(trio.TooSlowError):
                while tally.taken < count:
                    with trio.fail_after(1):  # the README's timeout idiom
                        await server.receive()
                    tally.add()
        elif how == "receive_batch()":
            while tally.taken < count:
                tally.add(len(await server.receive_batch()))
        else:
            done = trio.Event()

            async def handler(connection: trioudp.Connection) -> None:
                async for _message in connection:
                    tally.add()
                    if tally.taken >= count:
                        done.set()

            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve, handler)
                await done.wait()
                nursery.cancel_scope.cancel()
    return tally


async def backlog_rate(how: str, count: int) -> float:
    """The consumer's rate on ``count`` datagrams already waiting."""
    async with trioudp.open_udp_server("127.0.0.1", 0, channel_capacity=count) as server:
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            address = server.local_address[:2]
            for sequence in range(count):
                sender.sendto(encode_message(7, sequence, PAYLOAD, 1200)[0], address)
        start = time.perf_counter()
        tally = await consume(server, how, trio.current_time() + 5, count)
        return tally.taken / (tally.last - start)


async def flood_rate(how: str, seconds: float) -> dict[str, float]:
    """Messages per second ``how`` takes while a sender floods the server."""
    async with trioudp.open_udp_server("127.0.0.1", 0) as server:
        port = server.local_address[1]
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", SENDER, "127.0.0.1", str(port), str(seconds), ROOT],
            stdout=subprocess.PIPE,
        )
        await trio.sleep(0.2)  # let the flood begin
        before = server.statistics()
        start = time.perf_counter()
        tally = await consume(server, how, trio.current_time() + seconds - 0.4, 1 << 62)
        taken, elapsed = tally.taken, time.perf_counter() - start
        after = server.statistics()
        overflow = after.messages_overflow_dropped - before.messages_overflow_dropped
        dropped = after.datagrams_kernel_dropped - before.datagrams_kernel_dropped
        await process.wait()
        assert process.stdout is not None
        sent = int((await process.stdout.receive_some()).decode() or 0)
    return {
        "delivered_per_second": taken / elapsed,
        "sent_per_second": sent / seconds,
        "overflow_dropped": float(overflow),
        "kernel_dropped": float(dropped),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="trioudp consumers under a flood")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--count", type=int, default=4000, help="backlog size")
    parser.add_argument("--rounds", type=int, default=5, help="backlog rounds (best kept)")
    parser.add_argument(
        "--flood-rounds", type=int, default=3, help="flood rounds (best kept: the machine is noisy)"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for how in CONSUMERS:
        backlog = max(trio.run(backlog_rate, how, args.count) for _ in range(args.rounds))
        flood = max(
            (trio.run(flood_rate, how, args.seconds) for _ in range(args.flood_rounds)),
            key=lambda result: result["delivered_per_second"],
        )
        rows.append({"consumer": how, "backlog_per_second": backlog, **flood})
    print(f"flood: {platform.python_version()}, {args.seconds:g} s, 64-byte frames on loopback")
    print(
        f"{'consumer':<26}{'backlog/s':>11}{'sent/s':>11}{'flood/s':>11}{'ratio':>7}"
        f"{'trioudp dropped':>17}{'kernel dropped':>16}"
    )
    for row in rows:
        ratio = row["delivered_per_second"] / row["backlog_per_second"]
        row["ratio"] = ratio
        print(
            f"{row['consumer']:<26}{row['backlog_per_second']:>11,.0f}"
            f"{row['sent_per_second']:>11,.0f}{row['delivered_per_second']:>11,.0f}"
            f"{ratio:>7.2f}{row['overflow_dropped']:>17,.0f}{row['kernel_dropped']:>16,.0f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
