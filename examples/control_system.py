"""A control-system link: typed messages, handlers, state and statistics.

The trioudp version of the control-system UDP interface this library was
designed from (its UDPServer/UDPClient with optional CRC, sequence numbers,
connection state, statistics and ``register_message_handler``). Here every
message is CRC32C-checked and numbered by trioudp itself, ``reliable=True``
makes each one arrive exactly once and in order, a message's type is its topic
and a ``Router`` runs one handler per type, and the connection's state is an
awaitable value that turns ``LOST`` when the controller goes silent.

    python examples/control_system.py server --port 7000
    python examples/control_system.py client --port 7000
"""

from __future__ import annotations

import argparse
import json
import math

import trio

import trioudp

OPTIONS: trioudp.Options = {"reliable": True, "keepalive": 15.0, "dead_timeout": 45.0}


async def server(port: int, duration: float | None) -> None:
    """The controller: keeps setpoints, answers status requests, obeys commands."""
    setpoints: dict[str, float] = {}
    router = trioudp.Router()

    @router.route("setpoint")
    async def on_setpoint(message: trioudp.Message) -> None:
        name, value = json.loads(message.payload)
        setpoints[name] = float(value)
        await message.reply(json.dumps({"ok": name}).encode(), topic="ack")

    @router.route("status")
    async def on_status(message: trioudp.Message) -> None:
        await message.reply(json.dumps(setpoints, sort_keys=True).encode(), topic="status")

    @router.route("command")
    async def on_command(message: trioudp.Message) -> None:
        command = message.payload.decode()
        if command == "STOP":
            setpoints.clear()
        await message.reply(f"done: {command}".encode(), topic="ack")

    async with trioudp.open_udp_server("127.0.0.1", port, **OPTIONS) as udp:
        print(f"controller listening on port {udp.local_address[1]}", flush=True)
        with trio.move_on_after(math.inf if duration is None else duration):
            await router.run(udp)
        stats = udp.statistics()
        print(f"served {stats.messages_delivered} messages; {router.statistics()}", flush=True)


async def client(port: int) -> None:
    """An operator console: sets points, asks for status, stops, reports."""
    async with trioudp.open_udp_connection("127.0.0.1", port, **OPTIONS) as link:
        requests = [
            ("setpoint", json.dumps(["valve", 0.25])),
            ("setpoint", json.dumps(["pump", 1200])),
            ("status", ""),
            ("command", "STOP"),
            ("status", ""),
        ]
        for topic, body in requests:
            await link.send(body.encode(), topic=topic)
            with trio.fail_after(5):
                answer = await link.receive()
            print(f"#{answer.sequence} [{answer.topic}] {answer.payload.decode()}", flush=True)
        await link.flush()  # every request acknowledged
        print(f"state {link.state.value.name}")
        stats = link.statistics()
        print(
            f"sent {stats.messages_sent}, acknowledged {stats.messages_acked}, "
            f"received {stats.messages_delivered}, damaged {stats.datagrams_crc_error}, "
            f"rtt {stats.rtt_smoothed * 1000:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--duration", type=float, help="server: stop after this many seconds")
    arguments = parser.parse_args()
    if arguments.role == "server":
        trio.run(server, arguments.port, arguments.duration)
    else:
        trio.run(client, arguments.port)


if __name__ == "__main__":
    main()
