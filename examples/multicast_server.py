"""Multicast server: answers every "Client: Ping" sent to the group, by unicast.

The trioudp version of Twisted's MulticastServer.py: it joins group 228.0.0.5
on port 9999 and replies to each sender alone.

    python examples/multicast_server.py [--interface eth0]
    python examples/multicast_client.py [--interface eth0]
"""

from __future__ import annotations

import argparse
import math

import trio

import trioudp


async def serve(group: str, port: int, interface: str | None, duration: float | None) -> None:
    async with trioudp.open_multicast(group, port, interface=interface) as server:
        print(f"joined {group} port {port}", flush=True)
        with trio.move_on_after(math.inf if duration is None else duration):
            async for message in server:
                print(
                    f"Datagram {message.payload!r} received from {message.address[0]}", flush=True
                )
                if message.payload == b"Client: Ping":
                    await message.reply(b"Server: Pong")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--group", default="228.0.0.5")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--interface", help="the interface to join on (name or address)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    arguments = parser.parse_args()
    trio.run(serve, arguments.group, arguments.port, arguments.interface, arguments.duration)


if __name__ == "__main__":
    main()
