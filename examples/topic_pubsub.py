"""Topic publisher and listener over IPv6 multicast (mcl's RawBroadcaster and
RawListener): large payloads are fragmented to fit the MTU and reassembled,
and listeners get only the topics they subscribe to.

    python examples/topic_pubsub.py listen --topics camera,status --interface eth0
    python examples/topic_pubsub.py publish --topic camera --size 500000 --interface eth0

A connected network interface must exist for IPv6 multicast; without one,
Linux can be given one for trying this out (as mcl's documentation says):

    sudo modprobe dummy && sudo ip link set dummy0 up multicast on
    sudo ip -6 addr add fd34::1/64 dev dummy0
"""

from __future__ import annotations

import argparse
import hashlib
import math

import trio

import trioudp

GROUP = "ff15::c73d:cf41:ea8e:b0a0"
PORT = 26000


async def listen(topics: list[str], interface: str | None, duration: float | None) -> None:
    async with trioudp.open_multicast(GROUP, PORT, interface=interface, topics=topics) as listener:
        print(f"listening for {', '.join(topics)} on {GROUP} port {PORT}", flush=True)
        with trio.move_on_after(math.inf if duration is None else duration):
            async for message in listener:
                digest = hashlib.sha256(message.payload).hexdigest()[:16]
                print(
                    f"{{'topic': {message.topic!r}, 'payload': {len(message.payload)} bytes, "
                    f"sha256 {digest}}} from {message.address[0]}",
                    flush=True,
                )


async def publish(topic: str, size: int, count: int, interface: str | None) -> None:
    async with trioudp.open_multicast(GROUP, PORT, interface=interface) as broadcaster:
        for number in range(count):
            payload = (b"%d:" % number + b"x" * size)[:size]
            await broadcaster.send(payload, topic=topic)
            digest = hashlib.sha256(payload).hexdigest()[:16]
            print(f"published {len(payload)} bytes on {topic!r}, sha256 {digest}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interface", help="the interface to use (IPv6 multicast needs one)")
    commands = parser.add_subparsers(dest="command", required=True)
    listener = commands.add_parser("listen")
    listener.add_argument("--topics", default="", help="comma-separated topics")
    listener.add_argument("--duration", type=float, help="stop after this many seconds")
    publisher = commands.add_parser("publish")
    publisher.add_argument("--topic", default="")
    publisher.add_argument("--size", type=int, default=100_000)
    publisher.add_argument("--count", type=int, default=1)
    arguments = parser.parse_args()
    if arguments.command == "listen":
        trio.run(listen, arguments.topics.split(","), arguments.interface, arguments.duration)
    else:
        trio.run(publish, arguments.topic, arguments.size, arguments.count, arguments.interface)


if __name__ == "__main__":
    main()
