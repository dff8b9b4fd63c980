"""Session churn: a separate process sends a fresh session id in every datagram
from one socket to a ``serve()`` echo server on loopback, as fast as it can (or
at ``--rate``), while a normal client asks for an echo every 100 ms. Prints the
server's memory (RSS) before and after, how many peers it opened and handlers
ran at once, and how the normal client fared (issue 13).

    python bench/churn.py [--seconds S] [--rate PER_SECOND]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import trio

import trioudp

#: Where the sender process imports trioudp from: the same tree as this one.
ROOT = str(Path(trioudp.__file__).resolve().parent.parent)

CHURNER = r"""
import random, socket, sys, time
sys.path.insert(0, sys.argv[4])
from trioudp._frame import encode_plain
port, seconds, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect(("127.0.0.1", port))
sessions = random.Random(1)
sent, start = 0, time.monotonic()
while sent < 20_000_000:
    now = time.monotonic()
    if now - start >= seconds:
        break
    if rate and sent > (now - start) * rate:
        time.sleep(0.001)
        continue
    try:
        sock.send(encode_plain(sessions.getrandbits(64), 0, b"churn"))
    except OSError:
        pass
    sent += 1
print(sent)
"""


def rss_mib() -> float:
    """This process's resident memory (Linux; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tasks_alive() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    root = trio.lowlevel.current_root_task()
    return 0 if root is None else count(root)


async def churn(seconds: float, rate: float) -> None:
    running = most = 0

    async def echo(connection: trioudp.Connection) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            async for message in connection:
                await connection.send(message.payload)
        finally:
            running -= 1

    async with trioudp.open_udp_server("127.0.0.1", 0) as server, trio.open_nursery() as nursery:
        await nursery.start(server.serve, echo)
        port = server.local_address[1]
        before = rss_mib()
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", CHURNER, str(port), str(seconds), str(rate), ROOT],
            stdout=subprocess.PIPE,
        )
        asked = answered = 0
        slowest = 0.0
        async with trioudp.open_udp_connection("127.0.0.1", port) as client:
            end = trio.current_time() + seconds
            while trio.current_time() < end:
                asked += 1
                start = trio.current_time()
                await client.send(b"echo %d" % asked)
                with trio.move_on_after(1):
                    await client.receive()
                    answered += 1
                slowest = max(slowest, trio.current_time() - start)
                await trio.sleep(0.1)
        await process.wait()
        assert process.stdout is not None
        sent = int((await process.stdout.receive_some()).decode() or 0)
        stats = server.statistics()
        after = rss_mib()
        print(
            f"churn: {seconds:g} s, {sent:,} datagrams ({sent / seconds:,.0f}/s), each a new session"
        )
        print(f"server RSS {before:.1f} -> {after:.1f} MiB; peers opened {stats.peers_opened}")
        print(f"handlers at most {most}; trio tasks now {tasks_alive()}")
        print(f"dropped as stale {stats.datagrams_stale_session:,} of {stats.datagrams_received:,}")
        print(f"normal client: {answered} of {asked} echoes, slowest {slowest * 1000:.1f} ms")
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description="session churn against a serve() server")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=0.0, help="datagrams a second (0: flat out)")
    args = parser.parse_args()
    trio.run(churn, args.seconds, args.rate)


if __name__ == "__main__":
    main()
