"""Large data: one message of many megabytes, sent whole and checked.

The socket tutorial splits large data into numbered chunks by hand and notes
that "UDP doesn't guarantee order, so chunk reassembly may need more
sophisticated logic". trioudp does that logic: a message up to
``max_message_size`` is cut into datagrams that fit the path, reassembled in
any order, CRC-checked, and with ``reliable=True`` sent again until every piece
has arrived. Both ends print the SHA-256 of what they handled.

    python examples/large_data.py receive --port 9000
    python examples/large_data.py send --port 9000 --size 20000000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import trio

import trioudp

#: The largest message either end takes (both must agree).
LIMIT = 64 * 1024 * 1024
OPTIONS: trioudp.Options = {
    "reliable": True,
    "max_message_size": LIMIT,
    "peer_buffer_bytes": 2 * LIMIT,
    "total_buffer_bytes": 2 * LIMIT,
    "channel_bytes": 2 * LIMIT,
}


async def receive(host: str, port: int) -> None:
    async with trioudp.open_udp_server(host, port, **OPTIONS) as server:
        print(f"receiving on port {server.local_address[1]}", flush=True)
        message = await server.receive()
        digest = hashlib.sha256(message.payload).hexdigest()
        stats = server.statistics()
        print(f"received {len(message.payload):,} bytes sha256 {digest}")
        print(f"in {stats.datagrams_delivered:,} datagrams", flush=True)


async def send(host: str, port: int, size: int) -> None:
    data = os.urandom(size)
    print(f"sending {size:,} bytes sha256 {hashlib.sha256(data).hexdigest()}", flush=True)
    async with trioudp.open_udp_connection(host, port, **OPTIONS) as conn:
        start = time.perf_counter()
        await conn.send(data)
        await conn.flush()  # returns once the receiver has all of it
        seconds = time.perf_counter() - start
        stats = conn.statistics()
    print(
        f"acknowledged in {seconds:.2f} s ({size / seconds / 1e6:.0f} MB/s), "
        f"{stats.datagrams_sent:,} datagrams, {stats.datagrams_retransmitted} sent again"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", choices=["send", "receive"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--size", type=int, default=20_000_000, help="bytes to send")
    parser.add_argument("--timeout", type=float, default=60.0, help="receive: give up after")
    arguments = parser.parse_args()
    if not 0 <= arguments.size <= LIMIT:
        parser.error(f"--size must be from 0 to {LIMIT}")
    if arguments.role == "send":
        trio.run(send, arguments.host, arguments.port, arguments.size)
    else:

        async def receive_in_time() -> None:
            with trio.fail_after(arguments.timeout):
                await receive(arguments.host, arguments.port)

        trio.run(receive_in_time)


if __name__ == "__main__":
    main()
