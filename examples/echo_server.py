"""Echo server: every message comes back to its sender, prefixed "Echo: ".

The trioudp version of the classic socket tutorial's echo server. Messages of
any size up to 1 MiB arrive whole, checked and in order; a client that sends
garbage is ignored (and counted), not answered with a crash.

    python examples/echo_server.py --port 9999
    python examples/echo_client.py --port 9999 hello world
"""

from __future__ import annotations

import argparse

import trio

import trioudp


async def serve(host: str, port: int, duration: float | None) -> None:
    async with trioudp.open_udp_server(host, port) as server:
        print(
            f"echo server listening on {server.local_address[0]} port {server.local_address[1]}",
            flush=True,
        )
        with trio.move_on_after(duration if duration is not None else float("inf")):
            async for message in server:
                print(f"received {len(message.payload)} bytes from {message.address}", flush=True)
                await message.reply(b"Echo: " + message.payload)
        stats = server.statistics()
        print(
            f"served {stats.messages_delivered} messages from {stats.peers_opened} peers; "
            f"{stats.datagrams_crc_error + stats.datagrams_malformed} bad datagrams ignored"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    arguments = parser.parse_args()
    trio.run(serve, arguments.host, arguments.port, arguments.duration)


if __name__ == "__main__":
    main()
