"""A control loop (issue 14, target 6): one client sends a 100-byte request
every millisecond (1 kHz) and waits for the server's 100-byte response before
the next tick; the server runs in its own process on another core. The table
gives the response time's p50 and p99 for a naive trio server and client
(``trio.socket``, no protocol) and for trioudp, unreliable and reliable
(``serve()`` on the server, ``open_udp_connection`` on the client), and the
ratio of each p50 to the naive one (target: <= 1.2x).

Unlike ``echo_latency.py``, which sends the next request as soon as the answer
is in, the loop sleeps until its next tick, so every request finds both
processes idle, waiting in the kernel: the latency a control system sees.

    python bench/control_loop.py [--seconds S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from echo_latency import _pin as pin
from echo_latency import against_server, percentile

import trioudp

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

HOST = "127.0.0.1"
REQUEST = b"r" * 100
TICK = 0.001
WARM_UP = 200
#: Seconds a client waits for one response before the run is called failed.
PATIENCE = 2.0


# -- servers (in the child process) ---------------------------------------------------


async def serve_naive(ready: Callable[[int], None]) -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind((HOST, 0))
        ready(sock.getsockname()[1])
        while True:
            data, address = await sock.recvfrom(2048)
            await sock.sendto(data, address)


async def serve_trioudp(ready: Callable[[int], None], *, reliable: bool) -> None:
    async def handler(connection: trioudp.Connection) -> None:
        async for message in connection:
            await connection.send(message.payload)

    async with trioudp.open_udp_server(HOST, 0, reliable=reliable) as server:
        ready(server.local_address[1])
        await server.serve(handler)


# -- clients (in this process) --------------------------------------------------------


async def ticking(
    send: Callable[[bytes], Awaitable[object]], receive: Callable[[], Awaitable[object]], ticks: int
) -> list[float]:
    """Response times of ``ticks`` requests, one per TICK: the control loop."""
    times: list[float] = []
    next_tick = trio.current_time()
    for _ in range(ticks):
        next_tick += TICK
        await trio.sleep_until(next_tick)
        start = time.perf_counter()
        await send(REQUEST)
        with trio.fail_after(PATIENCE):
            await receive()
        times.append(time.perf_counter() - start)
    return times


async def loop_naive(port: int, ticks: int) -> list[float]:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect((HOST, port))
        return await ticking(sock.send, partial(sock.recv, 2048), ticks)


async def loop_trioudp(port: int, ticks: int, *, reliable: bool) -> list[float]:
    async with trioudp.open_udp_connection(HOST, port, reliable=reliable) as connection:
        return await ticking(connection.send, connection.receive, ticks)


async def serve_unreliable(ready: Callable[[int], None]) -> None:
    await serve_trioudp(ready, reliable=False)


async def serve_reliable(ready: Callable[[int], None]) -> None:
    await serve_trioudp(ready, reliable=True)


async def loop_unreliable(port: int, ticks: int) -> list[float]:
    return await loop_trioudp(port, ticks, reliable=False)


async def loop_reliable(port: int, ticks: int) -> list[float]:
    return await loop_trioudp(port, ticks, reliable=True)


#: name -> (server, client)
SYSTEMS: dict[
    str,
    tuple[
        Callable[[Callable[[int], None]], Awaitable[None]],
        Callable[[int, int], Awaitable[list[float]]],
    ],
] = {
    "naive trio": (serve_naive, loop_naive),
    "trioudp": (serve_unreliable, loop_unreliable),
    "trioudp reliable": (serve_reliable, loop_reliable),
}


def measure(name: str, ticks: int, server_cpu: int, client_cpu: int) -> list[float]:
    def client(port: int) -> list[float]:
        return trio.run(SYSTEMS[name][1], port, WARM_UP + ticks)

    times = against_server(__file__, name, client, server_cpu=server_cpu, client_cpu=client_cpu)
    return times[WARM_UP:]


def main() -> None:
    parser = argparse.ArgumentParser(description="a 1 kHz request/response control loop")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path, help="write the table here too")
    args = parser.parse_args()
    ticks = int(args.seconds / TICK)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    server_cpu, client_cpu = cpus[0], cpus[-1]
    print(
        f"control loop: {ticks} requests at 1 kHz, server on CPU {server_cpu}, "
        f"client on CPU {client_cpu}"
    )
    print(f"{'system':<20} {'p50 us':>8} {'p99 us':>8} {'p50 ratio':>10}")
    rows: list[dict[str, object]] = []
    naive = 0.0
    for name in SYSTEMS:
        times = measure(name, ticks, server_cpu, client_cpu)
        p50, p99 = percentile(times, 0.5) * 1e6, percentile(times, 0.99) * 1e6
        naive = naive or p50
        print(f"{name:<20} {p50:>8.1f} {p99:>8.1f} {p50 / naive:>10.2f}", flush=True)
        rows.append(
            {
                "system": name,
                "p50_us": round(p50, 1),
                "p99_us": round(p99, 1),
                "p50_ratio": round(p50 / naive, 3),
                "requests": len(times),
            }
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2))


def _serve(name: str, cpu: int) -> None:
    pin(cpu)

    def ready(port: int) -> None:
        print(port, flush=True)

    trio.run(SYSTEMS[name][0], ready)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2], int(sys.argv[3]))
    else:
        main()
