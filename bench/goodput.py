"""Goodput: one sender process, one receiver process, loopback.

For each message size a sender process sends COUNT messages to this process,
which receives them; the time runs from the sender's first send to the last
message received (both read the same monotonic clock, ``time.perf_counter``;
the sender prints when it started), best of ROUNDS. Rows:

- raw pair: plain Python, no protocol (blocking ``send()`` -> ``recv_into()``),
  the reference the ratios are to (for messages that fit in one datagram);
- trioudp unreliable and reliable: the sender awaits ``conn.send()`` per
  message (then ``flush()``), the receiver iterates ``receive_batch()``;
- ... batch 64: the sender hands over 64 messages per ``send_batch()`` call
  (small ones share datagrams).

Unreliable rows may lose messages when the receiver falls behind (the count
delivered is shown); reliable ones never do. The table is printed and written
to ``docs/bench/goodput.json`` with ``--json``.

    python bench/goodput.py [--count N] [--rounds R] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import trio

import trioudp

SIZES = (64, 1024, 16 * 1024, 1024 * 1024)
#: The largest message one UDP datagram carries: the raw pair's limit.
MAX_DATAGRAM = 65507
#: Silence after which a receiver stops waiting for what was lost.
QUIET = 0.5
#: send_rate of the paced rows (bytes per second): below what a receiver of
#: large messages decodes on this machine (about 180 MB/s), so it keeps up.
PACED_RATE = 100_000_000
#: Messages per send_batch() call in the batch rows.
BATCH = 64
#: How long one round may take at most.
ROUND_LIMIT = 60.0


async def _send(port: int, size: int, count: int, reliable: bool, batch: int, rate: int) -> None:
    payload = b"x" * size
    async with trioudp.open_udp_connection(
        "127.0.0.1",
        port,
        reliable=reliable,
        max_message_size=max(size, 1),
        send_rate=rate or None,
    ) as conn:
        print(time.perf_counter(), flush=True)
        if batch:
            for start in range(0, count, batch):
                await conn.send_batch([payload] * min(batch, count - start))
        else:
            for _ in range(count):
                await conn.send(payload)
        await conn.flush()


def _spawn(*arguments: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--sender", *map(str, arguments)], stdout=subprocess.PIPE
    )


def _reap(process: subprocess.Popen[bytes]) -> float:
    """Wait for a sender; when it started sending."""
    try:
        output, _ = process.communicate(timeout=ROUND_LIMIT)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return float(output.split()[0])


async def trioudp_round(
    size: int, count: int, *, reliable: bool, batch: int = 0, rate: int = 0
) -> tuple[float, int]:
    """Seconds from the first send to the last message received, and how many came."""
    received = 0
    last = 0.0
    async with trioudp.open_udp_server(
        "127.0.0.1",
        0,
        reliable=reliable,
        max_message_size=max(size, 1),
        channel_capacity=2**20,
        channel_bytes=2**31,
        total_buffer_bytes=2**31,
        peer_buffer_bytes=2**30,
    ) as server:
        sender = _spawn(server.local_address[1], size, count, int(reliable), batch, rate)
        try:
            with trio.move_on_after(ROUND_LIMIT):
                while received < count:
                    messages: list[trioudp.Message] = []
                    with trio.move_on_after(QUIET if received else ROUND_LIMIT):
                        messages = await server.receive_batch()
                    if not messages:
                        break
                    last = time.perf_counter()
                    received += len(messages)
        finally:
            start = await trio.to_thread.run_sync(partial(_reap, sender))
    return last - start, received


_RAW_SENDER = """
import socket, sys, time
count, size, port = map(int, sys.argv[1:])
payload = b"x" * size
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.connect(("127.0.0.1", port))
    print(time.perf_counter(), flush=True)
    for _ in range(count):
        sock.send(payload)
    sock.send(b"")
"""


def raw_round(size: int, count: int) -> tuple[float, int]:
    """Plain Python, no protocol: a process sending with blocking send() and
    this one receiving with recv_into(), until an empty end marker (or QUIET
    seconds of silence: what a full buffer dropped is not waited for)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * 1024 * 1024)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(QUIET)
        buffer = bytearray(65536)
        port = sock.getsockname()[1]
        sender = subprocess.Popen(
            [sys.executable, "-c", _RAW_SENDER, str(count), str(size), str(port)],
            stdout=subprocess.PIPE,
        )
        received = 0
        last = 0.0
        try:
            while True:
                length = sock.recv_into(buffer)
                last = time.perf_counter()
                if length == 0 and size:
                    break
                received += 1
        except TimeoutError:
            pass
        start = _reap(sender)
    return last - start, received


def best(run: partial[tuple[float, int]], rounds: int) -> tuple[float, int]:
    """The best rate (messages per second) and its count."""
    rate, delivered = 0.0, 0
    for _ in range(rounds):
        seconds, got = run()
        if seconds > 0 and got / seconds > rate:
            rate, delivered = got / seconds, got
    return rate, delivered


def main() -> None:
    parser = argparse.ArgumentParser(description="trioudp goodput next to a raw socket pair")
    parser.add_argument("--count", type=int, default=20_000, help="messages of 64 B and 1 KiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the table here too")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    print(f"{'size':>8} {'system':>29} {'delivered':>13} {'msg/s':>10} {'MB/s':>8} {'ratio':>6}")
    for size in SIZES:
        count = args.count if size <= 1024 else max(args.count * 64 // size, 200)
        reference = 0.0
        runs: list[tuple[str, partial[tuple[float, int]]]] = []
        if size <= MAX_DATAGRAM:
            runs.append(("raw pair", partial(raw_round, size, count)))
        for reliable in (False, True):
            for batch in (0, BATCH) if size <= 1024 else (0,):
                name = "trioudp " + ("reliable" if reliable else "unreliable")
                name += f" batch {batch}" if batch else ""
                round_ = partial(trioudp_round, size, count, reliable=reliable, batch=batch)
                runs.append((name, partial(trio.run, round_)))
            if size > MAX_DATAGRAM and not reliable:
                # Paced (send_rate): what a receiver that keeps up gets.
                name = f"trioudp unreliable {PACED_RATE // 10**6} MB/s"
                round_ = partial(trioudp_round, size, count, reliable=False, rate=PACED_RATE)
                runs.append((name, partial(trio.run, round_)))
        for name, run in runs:
            rate, delivered = best(run, args.rounds)
            if name == "raw pair":
                reference = rate
            ratio = rate / reference if reference else None
            shown = f"{ratio:>6.2f}" if ratio is not None else f"{'-':>6}"
            print(
                f"{size:>8} {name:>29} {delivered:>6}/{count:<6} {rate:>10,.0f} "
                f"{rate * size / 1e6:>8.1f} {shown}",
                flush=True,
            )
            rows.append(
                {
                    "size": size,
                    "system": name,
                    "messages": count,
                    "delivered": delivered,
                    "messages_per_second": round(rate),
                    "megabytes_per_second": round(rate * size / 1e6, 1),
                    "ratio_to_raw_pair": None if ratio is None else round(ratio, 3),
                }
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sender"]:
        port, size, count, reliable, batch, rate = map(int, sys.argv[2:])
        trio.run(_send, port, size, count, bool(reliable), batch, rate)
    else:
        main()
