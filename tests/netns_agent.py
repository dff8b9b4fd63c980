"""A trioudp endpoint that a test runs inside a network namespace and drives
through its standard input, one command a line; it answers on standard output,
one JSON object a line.

    python tests/netns_agent.py multicast GROUP PORT [--interface I] [--source S]
        [--ttl N] [--no-loopback] [--topics T,T]
    python tests/netns_agent.py broadcast PORT [--address A]
    python tests/netns_agent.py unicast PORT
    (each with --reply: answer every message with "re:" and its text)
    python tests/netns_agent.py hops GROUP PORT [--interface I]   (a plain socket
        that reports the TTL / hop limit of each datagram it gets)

Commands: ``send TEXT [SIZE] [TOPIC]`` (to the group or broadcast address;
SIZE pads the payload to that many bytes), ``sendgroup GROUP TEXT``,
``sendto HOST PORT TEXT``,
``join GROUP [SOURCE]``, ``leave GROUP [SOURCE]``, ``stats``, ``quit``. Each
message received is printed as ``{"got": TEXT, "size": N, "from": HOST,
"topic": T}`` where TEXT is the payload up to its first NUL byte.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
from typing import Any

import trio

import trioudp
from trioudp._multicast import IP_RECVTTL, join_group


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def describe(payload: bytes, address: Any, topic: str) -> None:
    emit(
        got=payload.split(b"\0", 1)[0].decode(),
        size=len(payload),
        topic=topic,
        **{"from": address[0]},
    )


async def commands(endpoint: Any) -> None:
    stdin = trio.wrap_file(sys.stdin)
    while True:
        line = await stdin.readline()
        if not line:  # end of input: the test is gone
            return
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            return
        await run_command(endpoint, words)


async def run_command(endpoint: Any, words: list[str]) -> None:
    command, arguments = words[0], words[1:]
    if command == "send":
        text = arguments[0].encode()
        size = int(arguments[1]) if len(arguments) > 1 else len(text)
        topic = arguments[2] if len(arguments) > 2 else ""
        await endpoint.send(text.ljust(size, b"\0"), topic=topic)
        emit(sent=arguments[0])
    elif command == "sendgroup":
        await endpoint.send(arguments[1].encode(), group=arguments[0])
        emit(sent=arguments[1])
    elif command == "sendto":
        await endpoint.send_to((arguments[0], int(arguments[1])), arguments[2].encode())
        emit(sent=arguments[2])
    elif command == "join":
        endpoint.join(arguments[0], source=arguments[1] if len(arguments) > 1 else None)
        emit(joined=arguments[0])
    elif command == "leave":
        endpoint.leave(arguments[0], source=arguments[1] if len(arguments) > 1 else None)
        emit(left=arguments[0])
    elif command == "stats":
        stats = endpoint.statistics()
        emit(
            stats={
                "delivered": stats.messages_delivered,
                "own": stats.datagrams_own,
                "filtered": stats.datagrams_filtered,
                "received": stats.datagrams_received,
                "accounted": stats.datagrams_accounted,
            }
        )
    else:
        emit(error=f"unknown command {command}")


async def serve(endpoint: Any, reply: bool) -> None:
    async with trio.open_nursery() as nursery:

        async def show() -> None:
            async for message in endpoint:
                describe(message.payload, message.address, message.topic)
                if reply:
                    await message.reply(b"re:" + message.payload.split(b"\0", 1)[0])

        nursery.start_soon(show)
        emit(ready=True, port=endpoint.local_address[1])
        await commands(endpoint)
        nursery.cancel_scope.cancel()


async def hops(group: str, port: int, interface: str | None) -> None:
    """Report the TTL or hop limit each datagram for ``group`` arrived with."""
    ipv6 = ":" in group
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if ipv6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.bind(("::", port))
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        sock.bind(("0.0.0.0", port))
    join_group(sock, group, interface, None)
    tsock = trio.socket.from_stdlib_socket(sock)
    emit(ready=True, port=port)
    async with trio.open_nursery() as nursery:

        async def report() -> None:
            while True:
                data, ancillary, _flags, address = await tsock.recvmsg(65536, 64)
                sender: Any = address
                for _level, _kind, value in ancillary:
                    emit(
                        got=data[16:-4].split(b"\0", 1)[0].decode(errors="replace"),
                        hops=struct.unpack("i", value[:4])[0],
                        **{"from": sender[0]},
                    )

        nursery.start_soon(report)
        await commands(None)
        nursery.cancel_scope.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser()
    kinds = parser.add_subparsers(dest="kind", required=True)
    multicast = kinds.add_parser("multicast")
    multicast.add_argument("group")
    multicast.add_argument("port", type=int)
    multicast.add_argument("--interface")
    multicast.add_argument("--source")
    multicast.add_argument("--ttl", type=int, default=1)
    multicast.add_argument("--no-loopback", action="store_true")
    multicast.add_argument("--topics")
    broadcast = kinds.add_parser("broadcast")
    broadcast.add_argument("port", type=int)
    broadcast.add_argument("--address", default="255.255.255.255")
    unicast = kinds.add_parser("unicast")
    unicast.add_argument("port", type=int)
    hop = kinds.add_parser("hops")
    hop.add_argument("group")
    hop.add_argument("port", type=int)
    hop.add_argument("--interface")
    for kind in (multicast, broadcast, unicast):
        kind.add_argument("--reply", action="store_true", help="answer each message")
    arguments = parser.parse_args()
    topics = arguments.topics.split(",") if getattr(arguments, "topics", None) else None
    if arguments.kind == "multicast":
        interface: Any = arguments.interface
        if interface is not None and interface.isdigit():
            interface = int(interface)
        async with trioudp.open_multicast(
            arguments.group,
            arguments.port,
            interface=interface,
            source=arguments.source,
            ttl=arguments.ttl,
            loopback=not arguments.no_loopback,
            topics=topics,
        ) as endpoint:
            await serve(endpoint, arguments.reply)
    elif arguments.kind == "broadcast":
        async with trioudp.open_broadcast(arguments.port, address=arguments.address) as endpoint:
            await serve(endpoint, arguments.reply)
    elif arguments.kind == "unicast":
        async with trioudp.open_udp_server(None, arguments.port) as endpoint:
            await serve(endpoint, arguments.reply)
    else:
        await hops(arguments.group, arguments.port, arguments.interface)


if __name__ == "__main__":
    try:
        trio.run(main)
    except OSError as exc:
        emit(error=str(exc))
        sys.exit(1)
