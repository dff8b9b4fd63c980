"""LAN discovery by broadcast: responders answer a "who is there?" with their
name; the asker collects the answers for a moment.

    python examples/broadcast_discovery.py respond --name printer-2
    python examples/broadcast_discovery.py ask

On a host with several interfaces, pass the subnet's broadcast address (say
--address 192.168.1.255) so the question leaves by the right one.
"""

from __future__ import annotations

import argparse
import math
import sys

import trio

import trioudp

PORT = 50_505
QUESTION = b"trioudp-discovery: who is there?"


async def respond(name: str, duration: float | None) -> None:
    async with trioudp.open_broadcast(PORT) as endpoint:
        print(f"{name} answering discovery on port {PORT}", flush=True)
        with trio.move_on_after(math.inf if duration is None else duration):
            async for message in endpoint:
                if message.payload == QUESTION:
                    print(f"asked by {message.address[0]}", flush=True)
                    await message.reply(name.encode())


async def ask(address: str, wait: float) -> int:
    # Port 0: the asker needs no well-known port, only the answers.
    async with trioudp.open_broadcast(0, address=address) as endpoint:
        await endpoint.send_to((address, PORT), QUESTION)
        found: list[str] = []
        with trio.move_on_after(wait):
            async for message in endpoint:
                found.append(message.payload.decode(errors="replace"))
                print(f"found {found[-1]} at {message.address[0]}", flush=True)
        print(f"{len(found)} found", flush=True)
        return 0 if found else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    responder = commands.add_parser("respond")
    responder.add_argument("--name", default="trioudp-host")
    responder.add_argument("--duration", type=float, help="stop after this many seconds")
    asker = commands.add_parser("ask")
    asker.add_argument("--address", default="255.255.255.255")
    asker.add_argument("--wait", type=float, default=1.0, help="seconds to collect answers")
    arguments = parser.parse_args()
    if arguments.command == "respond":
        trio.run(respond, arguments.name, arguments.duration)
    else:
        sys.exit(trio.run(ask, arguments.address, arguments.wait))


if __name__ == "__main__":
    main()
