"""Echo latency: one 64-byte message to a server and back, one at a time.

Each system runs its own echo server in a child process and its own client in
this one; the client times ROUNDS round trips (after a warm-up) and the table
gives the median and 99th percentile in microseconds. Same core: both
processes pinned to CPU 0, as on a busy machine; cross core: the server on CPU
0, the client on CPU 1 (skipped on a machine with one CPU).

    python bench/echo_latency.py [--rounds N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import trioudp

if TYPE_CHECKING:
    from collections.abc import Callable

PAYLOAD = b"x" * 64
WARM_UP = 200
#: Seconds a client waits for one echo before the run is called failed.
PATIENCE = 2.0
HOST = "127.0.0.1"


def _uvloop() -> Any:
    """uvloop, imported when its rows run (the bench session installs it;
    without it they are left out)."""
    return importlib.import_module("uvloop")


# -- servers (in the child process) ---------------------------------------------------


def serve_raw(ready: Callable[[int], None]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        ready(sock.getsockname()[1])
        buffer = bytearray(2048)
        while True:
            size, address = sock.recvfrom_into(buffer)
            sock.sendto(buffer[:size], address)


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


def serve_asyncio(ready: Callable[[int], None], *, uvloop: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(HOST, 0))
        ready(transport.get_extra_info("sockname")[1])
        await asyncio.Event().wait()

    if uvloop:
        _uvloop().run(main())
    else:
        asyncio.run(main())


def serve_trio(ready: Callable[[int], None]) -> None:
    async def main() -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.bind((HOST, 0))
            ready(sock.getsockname()[1])
            while True:
                data, address = await sock.recvfrom(2048)
                await sock.sendto(data, address)

    trio.run(main)


def serve_trioudp(ready: Callable[[int], None], *, reliable: bool) -> None:
    async def main() -> None:
        async with trioudp.open_udp_server(HOST, 0, reliable=reliable) as server:
            ready(server.local_address[1])
            async for message in server:
                await message.reply(message.payload)

    trio.run(main)


# -- clients (in this process) --------------------------------------------------------


def client_raw(port: int, rounds: int) -> list[float]:
    times: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((HOST, port))
        sock.settimeout(PATIENCE)
        for _ in range(rounds):
            start = time.perf_counter()
            sock.send(PAYLOAD)
            sock.recv(2048)
            times.append(time.perf_counter() - start)
    return times


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(data)


def client_asyncio(port: int, rounds: int, *, uvloop: bool) -> list[float]:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_Client, remote_addr=(HOST, port))
        times: list[float] = []
        try:
            for _ in range(rounds):
                start = time.perf_counter()
                protocol.waiting = loop.create_future()
                transport.sendto(PAYLOAD)
                await asyncio.wait_for(protocol.waiting, PATIENCE)
                times.append(time.perf_counter() - start)
        finally:
            transport.close()
        return times

    if uvloop:
        times: list[float] = _uvloop().run(main())
        return times
    return asyncio.run(main())


def client_trio(port: int, rounds: int) -> list[float]:
    async def main() -> list[float]:
        times: list[float] = []
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.connect((HOST, port))
            for _ in range(rounds):
                start = time.perf_counter()
                await sock.send(PAYLOAD)
                with trio.fail_after(PATIENCE):
                    await sock.recv(2048)
                times.append(time.perf_counter() - start)
        return times

    return trio.run(main)


def client_trioudp(port: int, rounds: int, *, reliable: bool) -> list[float]:
    async def main() -> list[float]:
        times: list[float] = []
        async with trioudp.open_udp_connection(HOST, port, reliable=reliable) as conn:
            for _ in range(rounds):
                start = time.perf_counter()
                await conn.send(PAYLOAD)
                with trio.fail_after(PATIENCE):
                    await conn.receive()
                times.append(time.perf_counter() - start)
        return times

    return trio.run(main)


#: name -> (server, client, module it needs or None)
SYSTEMS: dict[str, tuple[Callable[..., None], Callable[..., list[float]], str | None]] = {
    "python blocking socket": (serve_raw, client_raw, None),
    "uvloop DatagramProtocol": (
        partial(serve_asyncio, uvloop=True),
        partial(client_asyncio, uvloop=True),
        "uvloop",
    ),
    "asyncio DatagramProtocol": (
        partial(serve_asyncio, uvloop=False),
        partial(client_asyncio, uvloop=False),
        None,
    ),
    "trio, await per datagram": (serve_trio, client_trio, None),
    "trioudp": (
        partial(serve_trioudp, reliable=False),
        partial(client_trioudp, reliable=False),
        None,
    ),
    "trioudp reliable": (
        partial(serve_trioudp, reliable=True),
        partial(client_trioudp, reliable=True),
        None,
    ),
}


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def against_server(
    script: str,
    name: str,
    client: Callable[[int], list[float]],
    *,
    server_cpu: int,
    client_cpu: int,
) -> list[float]:
    """Run ``script --serve name server_cpu`` (a server that prints its port),
    and ``client(port)`` in this process pinned to ``client_cpu``."""
    server = subprocess.Popen(
        [sys.executable, script, "--serve", name, str(server_cpu)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        _pin(client_cpu)
        try:
            return client(port)
        finally:
            if allowed is not None:
                os.sched_setaffinity(0, allowed)
    finally:
        server.kill()
        server.wait()


def measure(name: str, rounds: int, *, server_cpu: int, client_cpu: int) -> list[float]:
    """Round-trip times in seconds (after the warm-up)."""
    client = partial(SYSTEMS[name][1], rounds=WARM_UP + rounds)
    times = against_server(__file__, name, client, server_cpu=server_cpu, client_cpu=client_cpu)
    return times[WARM_UP:]


def percentile(times: list[float], fraction: float) -> float:
    ordered = sorted(times)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description="echo round-trip latency")
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--json", type=Path, help="write the table here too")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    placements = {"same core": (cpus[0], cpus[0])}
    if len(cpus) > 1:
        placements["cross core"] = (cpus[0], cpus[1])
    rows: list[dict[str, object]] = []
    print(f"{'system':<26} {'placement':<11} {'p50 us':>8} {'p99 us':>8} {'mean us':>8}")
    for name, (_server, _client, needs) in SYSTEMS.items():
        if needs is not None and importlib.util.find_spec(needs) is None:
            print(f"{name:<26} not installed")
            continue
        for placement, (server_cpu, client_cpu) in placements.items():
            times = measure(name, args.rounds, server_cpu=server_cpu, client_cpu=client_cpu)
            p50, p99 = percentile(times, 0.5) * 1e6, percentile(times, 0.99) * 1e6
            mean = statistics.fmean(times) * 1e6
            print(f"{name:<26} {placement:<11} {p50:>8.1f} {p99:>8.1f} {mean:>8.1f}", flush=True)
            rows.append(
                {
                    "system": name,
                    "placement": placement,
                    "p50_us": round(p50, 1),
                    "p99_us": round(p99, 1),
                    "mean_us": round(mean, 1),
                    "rounds": len(times),
                }
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2))


def _serve(name: str, cpu: int) -> None:
    _pin(cpu)

    def ready(port: int) -> None:
        print(port, flush=True)

    SYSTEMS[name][0](ready)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2], int(sys.argv[3]))
    else:
        main()
