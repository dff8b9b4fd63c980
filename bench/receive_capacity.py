"""Receive capacity: how fast datagrams already waiting in the socket buffer
become messages in the application's hands.

Every system drains the same pre-filled buffer of N framed 64-byte datagrams on
loopback; the table gives messages per second (best of ROUNDS) and the ratio to
the plain-Python recv_into loop, which does no protocol work at all.

    python bench/receive_capacity.py [--count N] [--rounds R]
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import TYPE_CHECKING

import trio

import trioudp
from trioudp._frame import encode_message

if TYPE_CHECKING:
    from collections.abc import Callable

PAYLOAD = b"x" * (64 - 20)  # a 64-byte frame


def prefilled(count: int) -> socket.socket:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    receiver.bind(("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        address = receiver.getsockname()
        for sequence in range(count):
            sender.sendto(encode_message(7, sequence, PAYLOAD, 1200)[0], address)
    return receiver


def raw_recv_into(sock: socket.socket, count: int) -> float:
    buffer = bytearray(65536)
    start = time.perf_counter()
    for _ in range(count):
        sock.recv_into(buffer)
    return time.perf_counter() - start


def trio_naive(sock: socket.socket, count: int) -> float:
    async def main() -> float:
        tsock = trio.socket.from_stdlib_socket(sock)
        start = time.perf_counter()
        for _ in range(count):
            await tsock.recvfrom(65536)
        return time.perf_counter() - start

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    systems: dict[str, Callable[[socket.socket, int], float]] = {
        "python recv_into loop (no protocol)": raw_recv_into,
        "trio, await recvfrom per datagram (no protocol)": trio_naive,
        "trioudp, receive() per message": lambda s, n: trioudp_receive(s, n, batch=False),
        "trioudp, receive_batch()": lambda s, n: trioudp_receive(s, n, batch=True),
    }
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


if __name__ == "__main__":
    main()
