"""Multicast client: sends "Client: Ping" to the group, prints the replies.

The trioudp version of Twisted's MulticastClient.py (see multicast_server.py).
Replies come back by unicast to the port this client joined on.

    python examples/multicast_client.py [--interface eth0]
"""

from __future__ import annotations

import argparse
import sys

import trio

import trioudp


async def ping(group: str, port: int, interface: str | None, wait: float) -> int:
    async with trioudp.open_multicast(group, port, interface=interface) as client:
        await client.send(b"Client: Ping")
        replies = 0
        with trio.move_on_after(wait):
            async for message in client:
                print(
                    f"Datagram {message.payload!r} received from {message.address[0]}", flush=True
                )
                replies += 1
        return 0 if replies else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--group", default="228.0.0.5")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--interface", help="the interface to join on (name or address)")
    parser.add_argument("--wait", type=float, default=1.0, help="seconds to collect replies")
    arguments = parser.parse_args()
    sys.exit(trio.run(ping, arguments.group, arguments.port, arguments.interface, arguments.wait))


if __name__ == "__main__":
    main()
