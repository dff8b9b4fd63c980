"""IPv6: a server on an IPv6 address (Twisted's ipv6_listen.py).

Bound to ``::1`` (or ``::`` for every interface, where IPv4 clients come in as
``::ffff:a.b.c.d`` on a dual-stack system), it prints each message with its
sender and answers it.

    python examples/ipv6_listener.py --host ::1 --port 9999
"""

from __future__ import annotations

import argparse
import math

import trio

import trioudp


async def listen(host: str, port: int, duration: float | None) -> None:
    async with trioudp.open_udp_server(host, port) as server:
        address = server.local_address
        print(f"listening on [{address[0]}]:{address[1]}", flush=True)
        with trio.move_on_after(math.inf if duration is None else duration):
            async for message in server:
                host_, port_ = message.address[0], message.address[1]
                print(f"received {message.payload!r} from [{host_}]:{port_}", flush=True)
                await message.reply(b"hello over IPv6")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="::1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    arguments = parser.parse_args()
    trio.run(listen, arguments.host, arguments.port, arguments.duration)


if __name__ == "__main__":
    main()
