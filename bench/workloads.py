"""Realistic workloads (issue 14, target 6), each next to the same workload on a
naive trio server (``trio.socket``, one task, no protocol):

- **game server**: 500 clients, each sending a 64-byte message 30 times a
  second, echoed by the server (``serve()``, a handler per client). Sent evenly
  spread, then in 1 ms bursts (every message due in a millisecond goes at its
  start): the server's CPU per message and the clients' round trip p50/p99.
  Then a ladder of rates for the most it sustains (loss < 1%, p99 < 10 ms).
- **telemetry fan-in**: 200 sensors, each sending a 64-byte reading 100 times
  a second, one way, read with ``async for``: the server's CPU per message
  and the share delivered.

The server runs in its own process on one core, the load generator (plain
Python sockets, one per client, polled with epoll) in this one on the other.
The server reports its own CPU time (``time.process_time``) and message
count when signalled (SIGUSR1) at the start and end of each window.

    python bench/workloads.py [--seconds S] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from echo_latency import _pin as pin
from echo_latency import percentile

import trioudp
from trioudp._frame import BadFrame, decode_frame_untrusted, encode_plain

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

HOST = "127.0.0.1"
SIZE = 64
#: A message's first bytes: when it was sent, by which client, its number.
STAMP = struct.Struct("!dII")
#: Seconds after a window's last send for its echoes to come in.
GRACE = 0.5
#: The sustainable rate's limits (loss and p99 round trip).
MOST_LOSS = 0.01
MOST_P99 = 0.010
GAME_CLIENTS, GAME_HZ = 500, 30
SENSORS, SENSOR_HZ = 200, 100
SYSTEMS = ("naive trio", "trioudp")
#: Seconds of load before a server's first window.
WARM_UP = 1.0
LADDER = [15_000, 25_000, 35_000, 45_000, 55_000, 65_000]


# -- servers (in the child process) ---------------------------------------------------


class Tally:
    """What the server reports when signalled: its CPU time and messages."""

    def __init__(self) -> None:
        self.messages = 0

    async def report_on_signal(self) -> None:
        with trio.open_signal_receiver(signal.SIGUSR1) as signals:
            async for _ in signals:
                print(f"{time.process_time()} {self.messages}", flush=True)


async def naive(ready: Callable[[int], None], tally: Tally, *, echo: bool) -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        await sock.bind((HOST, 0))
        ready(sock.getsockname()[1])
        while True:
            data, address = await sock.recvfrom(2048)
            tally.messages += 1
            if echo:
                await sock.sendto(data, address)


async def with_trioudp(ready: Callable[[int], None], tally: Tally, *, echo: bool) -> None:
    async def handler(connection: trioudp.Connection) -> None:
        async for message in connection:
            tally.messages += 1
            await connection.send(message.payload)

    async with trioudp.open_udp_server(HOST, 0, receive_buffer_size=4 << 20) as server:
        ready(server.local_address[1])
        if echo:
            await server.serve(handler)
        else:
            async for _ in server:
                tally.messages += 1


SERVERS: dict[str, Callable[[Callable[[int], None], Tally], Awaitable[None]]] = {
    "naive trio echo": lambda ready, tally: naive(ready, tally, echo=True),
    "trioudp echo": lambda ready, tally: with_trioudp(ready, tally, echo=True),
    "naive trio sink": lambda ready, tally: naive(ready, tally, echo=False),
    "trioudp sink": lambda ready, tally: with_trioudp(ready, tally, echo=False),
}


def _serve(name: str, cpu: int) -> None:
    pin(cpu)

    async def main() -> None:
        tally = Tally()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tally.report_on_signal)
            await SERVERS[name](lambda port: print(port, flush=True), tally)

    trio.run(main)


# -- the load generator (in this process) ---------------------------------------------


class Server:
    """A server process, and the figures it reports."""

    def __init__(self, name: str, cpu: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--serve", name, str(cpu)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.port = int(self._process.stdout.readline())

    def figures(self) -> tuple[float, int]:
        """The server's CPU seconds and messages so far."""
        assert self._process.stdout is not None
        self._process.send_signal(signal.SIGUSR1)
        cpu, messages = self._process.stdout.readline().split()
        return float(cpu), int(messages)

    def close(self) -> None:
        self._process.kill()
        self._process.wait()


class Clients:
    """The load generator's clients: a socket each (so the server sees each as
    a peer of its own), kept for every window against one server."""

    def __init__(self, port: int, count: int, *, framed: bool) -> None:
        self.framed = framed
        self.poller = select.epoll()
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, 0))
            sock.connect((HOST, port))
            sock.setblocking(False)
            self.poller.register(sock.fileno(), select.EPOLLIN)
            self.sockets.append(sock)
        self.by_fd = {sock.fileno(): sock for sock in self.sockets}
        self.sequences = [0] * count

    def close(self) -> None:
        self.poller.close()
        for sock in self.sockets:
            sock.close()

    def generate(self, rate: float, seconds: float, *, bursts: bool) -> dict[str, Any]:
        """Send ``rate`` messages a second for ``seconds``, from each client in
        turn (evenly spread, or each millisecond's at its start), and time the
        echoes that come back."""
        sockets, sequences, framed = self.sockets, self.sequences, self.framed
        clients = len(sockets)
        padding = b"x" * (SIZE - STAMP.size)
        total = int(rate * seconds)
        times: list[float] = []
        late = 0
        start = time.perf_counter() + 0.05

        def due(index: int) -> float:
            at = index / rate
            return start + (at - at % 0.001 if bursts else at)

        def take(sock: socket.socket, now: float) -> None:
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    return
                if framed:
                    try:
                        data = bytes(decode_frame_untrusted(data).payload)
                    except BadFrame:
                        continue
                times.append(now - STAMP.unpack_from(data)[0])

        sent = 0
        end = due(total) + GRACE
        while True:
            now = time.perf_counter()
            while sent < total and due(sent) <= now:
                client = sent % clients
                payload = STAMP.pack(now, client, sequences[client]) + padding
                if framed:
                    payload = encode_plain(client + 1, sequences[client], payload)
                sequences[client] = (sequences[client] + 1) & 0xFFFFFFFF
                with contextlib.suppress(BlockingIOError):  # lost: counted as such
                    sockets[client].send(payload)
                if now - due(sent) > 0.002:
                    late += 1
                sent += 1
            if sent >= total and now >= end:
                break
            wait = (due(sent) - now) if sent < total else end - now
            for fd, _ in self.poller.poll(wait if wait > 0.002 else 0):
                take(self.by_fd[fd], time.perf_counter())
        return {"sent": total, "times": times, "late": late}


def window(
    server: Server, clients: Clients, rate: float, seconds: float, *, bursts: bool, echo: bool
) -> dict[str, Any]:
    cpu_before, before = server.figures()
    run = clients.generate(rate, seconds, bursts=bursts)
    cpu_after, after = server.figures()
    handled = after - before
    times = run["times"]
    answered = len(times) if echo else handled
    return {
        "rate": rate,
        "sent": run["sent"],
        "delivered": answered,
        "loss": 1 - answered / run["sent"],
        "cpu_us_per_message": (cpu_after - cpu_before) / max(handled, 1) * 1e6,
        "p50_us": percentile(times, 0.5) * 1e6 if times else None,
        "p99_us": percentile(times, 0.99) * 1e6 if times else None,
        "generator_late": run["late"],
    }


def sustainable(row: dict[str, Any]) -> bool:
    return bool(row["loss"] < MOST_LOSS and row["p99_us"] and row["p99_us"] < MOST_P99 * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description="game server and telemetry workloads")
    parser.add_argument("--seconds", type=float, default=3.0, help="each window's length")
    parser.add_argument("--json", type=Path, help="write the tables here too")
    parser.add_argument(
        "--system", choices=SYSTEMS, action="append", help="only this one (default: both)"
    )
    args = parser.parse_args()
    systems = args.system or SYSTEMS
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    server_cpu, generator_cpu = cpus[0], cpus[-1]
    pin(generator_cpu)
    rows: list[dict[str, Any]] = []
    print(
        f"{'workload':<30} {'system':<11} {'msg/s':>7} {'loss':>6} {'cpu us/msg':>10} "
        f"{'p50 us':>8} {'p99 us':>8}"
    )

    def show(workload: str, system: str, row: dict[str, Any]) -> None:
        row.update(workload=workload, system=system)
        rows.append(row)
        p50 = "-" if row["p50_us"] is None else f"{row['p50_us']:.0f}"
        p99 = "-" if row["p99_us"] is None else f"{row['p99_us']:.0f}"
        late = f"  (generator late {row['generator_late']})" if row["generator_late"] else ""
        print(
            f"{workload:<30} {system:<11} {row['rate']:>7,.0f} {row['loss']:>6.1%} "
            f"{row['cpu_us_per_message']:>10.1f} {p50:>8} {p99:>8}{late}",
            flush=True,
        )

    game_rate = GAME_CLIENTS * GAME_HZ
    for system in systems:
        server = Server(f"{system} echo", server_cpu)
        clients = Clients(server.port, GAME_CLIENTS, framed=system == "trioudp")
        try:
            # Warm-up: every client's first message (a new peer, a handler).
            clients.generate(game_rate, WARM_UP, bursts=False)
            for bursts in (False, True):
                workload = (
                    f"game {GAME_CLIENTS}x{GAME_HZ} Hz, {'1 ms bursts' if bursts else 'even'}"
                )
                row = window(server, clients, game_rate, args.seconds, bursts=bursts, echo=True)
                show(workload, system, row)
            best = 0
            for rate in LADDER:
                row = window(server, clients, rate, args.seconds, bursts=False, echo=True)
                show("game, rising rate", system, row)
                if not sustainable(row):
                    break
                best = rate
            rows.append({"workload": "game, sustainable", "system": system, "rate": best})
            print(f"{'game, sustainable':<30} {system:<11} {best:>7,}", flush=True)
        finally:
            clients.close()
            server.close()
    for system in systems:
        server = Server(f"{system} sink", server_cpu)
        clients = Clients(server.port, SENSORS, framed=system == "trioudp")
        try:
            rate = SENSORS * SENSOR_HZ
            row = window(server, clients, rate, args.seconds, bursts=False, echo=False)
            show(f"telemetry {SENSORS}x{SENSOR_HZ} Hz", system, row)
        finally:
            clients.close()
            server.close()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2], int(sys.argv[3]))
    else:
        main()
