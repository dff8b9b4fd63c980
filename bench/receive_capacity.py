"""Receive capacity: how fast datagrams already waiting in the socket buffer
become messages in the application's hands.

Every system drains the same pre-filled buffer of N framed 64-byte datagrams on
loopback; the table gives messages per second (best of ROUNDS) and the ratio to
the plain-Python recv_into loop, which does no protocol work at all.

    python bench/receive_capacity.py [--count N] [--rounds R]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import trioudp
from trioudp._frame import encode_message

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

PAYLOAD = b"x" * (64 - 20)  # a 64-byte frame


def prefilled(count: int) -> socket.socket:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    receiver.bind(("127.0.0.1", 0))
    prefill(receiver.getsockname(), count)
    return receiver


def prefill(address: tuple[str, int], count: int) -> None:
    """Send ``count`` framed 64-byte datagrams to ``address``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for sequence in range(count):
            sender.sendto(encode_message(7, sequence, PAYLOAD, 1200)[0], address)


def raw_recv_into(sock: socket.socket, count: int) -> float:
    buffer = bytearray(65536)
    start = time.perf_counter()
    for _ in range(count):
        sock.recv_into(buffer)
    return time.perf_counter() - start


async def receiving(receive: Callable[[], Awaitable[object]], count: int) -> float:
    """Seconds that ``count`` awaits of ``receive()`` take: the measurement of
    every system that hands out one datagram per await."""
    start = time.perf_counter()
    for _ in range(count):
        await receive()
    return time.perf_counter() - start


def trio_naive(sock: socket.socket, count: int) -> float:
    async def main() -> float:
        tsock = trio.socket.from_stdlib_socket(sock)
        return await receiving(partial(tsock.recvfrom, 65536), count)

    return trio.run(main)


def trioudp_receive(sock: socket.socket, count: int, *, batch: bool) -> float:
    async def main() -> float:
        start = time.perf_counter()
        async with trioudp.from_socket(sock, channel_capacity=count) as server:
            received = 0
            while received < count:
                if batch:
                    received += len(await server.receive_batch())
                else:
                    await server.receive()
                    received += 1
            elapsed = time.perf_counter() - start
            assert server.statistics().messages_delivered == count
        return elapsed

    return trio.run(main)


def asyncio_protocol(sock: socket.socket, count: int, *, uvloop: bool) -> float:
    """A bare asyncio DatagramProtocol that only counts (on uvloop's loop, or the
    default one): what the fastest asyncio programs do per datagram."""
    import asyncio

    class Counter(asyncio.DatagramProtocol):
        def __init__(self, done: asyncio.Future[None]) -> None:
            self.received = 0
            self.done = done

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.received += 1
            if self.received == count:
                self.done.set_result(None)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        start = time.perf_counter()
        transport, _ = await loop.create_datagram_endpoint(lambda: Counter(done), sock=sock)
        await done
        elapsed = time.perf_counter() - start
        transport.close()
        return elapsed

    if uvloop:
        elapsed: float = optional("uvloop").run(main())
        return elapsed
    return asyncio.run(main())


def asyncio_dgram(sock: socket.socket, count: int) -> float:
    import asyncio

    dgram = optional("asyncio_dgram")

    async def main() -> float:
        stream = await dgram.from_socket(sock)
        elapsed = await receiving(stream.recv, count)
        stream.close()
        return elapsed

    return asyncio.run(main())


def asyncudp_recvfrom(sock: socket.socket, count: int) -> float:
    """asyncudp makes and binds its own socket, so the same datagrams are sent
    to it after it is bound (and before its loop reads any)."""
    import asyncio

    asyncudp = optional("asyncudp")
    sock.close()

    async def main() -> float:
        udp = await asyncudp.create_socket(local_addr=("127.0.0.1", 0))
        own = udp._transport.get_extra_info("socket")
        own.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        prefill(udp.getsockname(), count)
        elapsed = await receiving(udp.recvfrom, count)
        udp.close()
        return elapsed

    return asyncio.run(main())


def anyio_on_trio(sock: socket.socket, count: int) -> float:
    anyio = optional("anyio")

    async def main() -> float:
        udp = await optional("anyio.abc").UDPSocket.from_socket(sock)
        elapsed = await receiving(udp.receive, count)
        await udp.aclose()
        return elapsed

    elapsed: float = anyio.run(main, backend="trio")
    return elapsed


def twisted(sock: socket.socket, count: int) -> float:
    """Twisted's reactor runs once per process: measured in a child process
    that adopts the socket (``adoptDatagramPort``)."""
    child = subprocess.run(
        [sys.executable, __file__, "--twisted-child", str(count), str(sock.fileno())],
        pass_fds=[sock.fileno()],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(child.stdout.split()[-1])


def _twisted_child(count: int, fileno: int) -> None:
    protocol = optional("twisted.internet.protocol")
    reactor = optional("twisted.internet.reactor")
    received = 0

    def datagram_received(datagram: bytes, addr: object) -> None:
        nonlocal received
        received += 1
        if received == count:
            reactor.stop()

    counter = protocol.DatagramProtocol()
    counter.datagramReceived = datagram_received
    os.set_blocking(fileno, False)  # as the reactor expects of a socket it adopts
    start = time.perf_counter()
    reactor.adoptDatagramPort(fileno, socket.AF_INET, counter)
    reactor.run()
    print(time.perf_counter() - start)


#: Every system, by the name the table shows: (function, module it needs).
SYSTEMS: dict[str, tuple[Callable[[socket.socket, int], float], str | None]] = {
    "python recv_into loop (no protocol)": (raw_recv_into, None),
    "uvloop, bare DatagramProtocol": (partial(asyncio_protocol, uvloop=True), "uvloop"),
    "twisted, bare DatagramProtocol": (twisted, "twisted"),
    "asyncio, bare DatagramProtocol": (partial(asyncio_protocol, uvloop=False), None),
    "asyncio-dgram, await recv()": (asyncio_dgram, "asyncio_dgram"),
    "asyncudp, await recvfrom()": (asyncudp_recvfrom, "asyncudp"),
    "anyio on trio, await receive()": (anyio_on_trio, "anyio"),
    "trio, await recvfrom per datagram (no protocol)": (trio_naive, None),
    "trioudp, receive() per message": (partial(trioudp_receive, batch=False), None),
    "trioudp, receive_batch()": (partial(trioudp_receive, batch=True), None),
}


def optional(module: str) -> Any:
    """A peer's module, imported when its row runs (the bench session installs
    them; without them their rows are left out)."""
    return importlib.import_module(module)


def available(module: str | None) -> bool:
    return module is None or importlib.util.find_spec(module) is not None


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--twisted-child":
        _twisted_child(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description="receive capacity of trioudp and its peers")
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--chart", help="also draw them as a PNG chart (needs matplotlib)")
    arguments = parser.parse_args()
    systems = {name: run for name, (run, module) in SYSTEMS.items() if available(module)}
    missing = [name for name, (_, module) in SYSTEMS.items() if not available(module)]
    results: dict[str, float] = {}
    for _ in range(arguments.rounds):
        for name, run in systems.items():
            sock = prefilled(arguments.count)
            try:
                rate = arguments.count / run(sock, arguments.count)
            finally:
                sock.close()
            results[name] = max(results.get(name, 0.0), rate)
    base = results["python recv_into loop (no protocol)"]
    print(
        f"receive capacity, {arguments.count} framed 64-byte datagrams, best of {arguments.rounds}"
    )
    print(f"{'system':<50} {'msg/s':>10} {'ratio':>7}")
    for name, rate in results.items():
        print(f"{name:<50} {rate:>10,.0f} {rate / base:>7.2f}")
    for name in missing:
        print(f"{name:<50} {'(not installed)':>18}")
    table: list[dict[str, object]] = [
        {"system": name, "messages_per_second": round(rate), "ratio": round(rate / base, 3)}
        for name, rate in results.items()
    ]
    if arguments.json:
        record = {
            "benchmark": "receive capacity",
            "datagrams": arguments.count,
            "datagram_bytes": 64,
            "rounds": arguments.rounds,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "results": table,
        }
        Path(arguments.json).write_text(json.dumps(record, indent=2) + "\n")
    if arguments.chart:
        chart(table, arguments.chart)


def chart(table: list[dict[str, object]], path: str) -> None:
    optional("matplotlib").use("Agg")
    plt = optional("matplotlib.pyplot")

    names = [str(row["system"]) for row in table][::-1]
    rates = [float(row["messages_per_second"]) / 1e6 for row in table][::-1]  # type: ignore[arg-type]
    figure, axes = plt.subplots(figsize=(9, 0.45 * len(names) + 1))
    bars = axes.barh(names, rates, color=["#2a7" if "trioudp" in n else "#888" for n in names])
    axes.bar_label(bars, fmt="%.2f")
    axes.set_xlabel("million 64-byte messages per second (higher is better)")
    axes.set_title("Receive capacity on loopback, one run")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
