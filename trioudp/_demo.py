"""``python -m trioudp demo``: a live, self-checking tour on loopback.

A server and three clients exchange messages on 127.0.0.1; one client sends a
large message that travels as hundreds of fragments; a vandal sends damaged,
truncated, replayed and random datagrams at the server. Everything is printed
as it happens, then the statistics, which must add up.
"""

from __future__ import annotations

import hashlib
import random
import socket
from typing import TYPE_CHECKING

import trio
import trio.testing

from ._frame import encode_message
from ._open import open_udp_connection, open_udp_server

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._connection import Connection
    from ._statistics import PeerStatistics


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _describe(payload: bytes) -> str:
    if len(payload) > 60:
        return f"{len(payload):,} bytes (sha256 {_digest(payload)})"
    return payload.decode(errors="replace")


async def run_demo(out: Callable[[str], None] = print, pace: float = 0.6) -> bool:
    """Run the demo; True if every check held."""
    start = trio.current_time()

    def say(who: str, text: str) -> None:
        out(f"[{trio.current_time() - start:5.2f}s] {who:<10} {text}")

    ok = True
    out("trioudp demo: a server and four clients on 127.0.0.1. Messages are framed,")
    out("CRC32C-checked, put in order and reassembled; a vandal throws bad datagrams.")
    out("")
    big = random.Random(2024).randbytes(300_000)

    async def handler(connection: Connection) -> None:
        async for message in connection:
            say(
                "server",
                f"got #{message.sequence} from port {message.address[1]}: "
                f"{_describe(message.payload)}",
            )
            if len(message.payload) > 60:
                await message.reply(
                    b"received %d bytes, sha256 %s"
                    % (len(message.payload), _digest(message.payload).encode())
                )
            else:
                await message.reply(b"ack: " + message.payload)

    async def client(name: str, port: int, payloads: list[bytes]) -> PeerStatistics:
        nonlocal ok
        async with open_udp_connection("127.0.0.1", port) as conn:
            for payload in payloads:
                say(
                    name,
                    f"send {_describe(payload)}"
                    + (f" in {-(-len(payload) // 1172)} fragments" if len(payload) > 1180 else ""),
                )
                await conn.send(payload)
                with trio.move_on_after(3) as scope:
                    reply = await conn.receive()
                    say(name, f"reply: {reply.payload.decode()}")
                    if len(payload) > 60:
                        ok &= _digest(payload).encode() in reply.payload
                    else:
                        ok &= reply.payload == b"ack: " + payload
                if scope.cancelled_caught:
                    say(name, "no reply within 3 s")
                    ok = False
                await trio.sleep(pace)
            return conn.statistics()

    async def vandal(port: int) -> int:
        """Send the server every kind of bad datagram; returns how many."""
        rng = random.Random(7)
        frame = encode_message(0xBAD, 0, b"an honest frame, about to be damaged", 1200)[0]
        flipped = bytearray(frame)
        flipped[20] ^= 0x01
        bad = [
            (bytes(flipped), "one flipped bit (CRC32C catches it)"),
            (frame[:-7], "a truncated frame"),
            (rng.randbytes(48), "48 random bytes"),
            (b"GET / HTTP/1.1\r\n\r\n", "a stray HTTP request"),
            (b"", "an empty datagram"),
        ]
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram, what in bad:
                say("vandal", f"sends {what}")
                await sock.sendto(datagram, ("127.0.0.1", port))
                await trio.sleep(pace)
        return len(bad)

    async def flaky(port: int) -> None:
        """A link that reorders and duplicates: frames 0, 2, 1, 1, 3 of one session."""
        frames = [
            encode_message(0xF1A, i, b"reading %d over a flaky link" % i, 1200)[0] for i in range(4)
        ]
        # (frame, what, pause after): #1 comes 30 ms late, well within the
        # server's reorder_timeout, so it waits for it.
        steps = [
            (0, "frame #0", pace),
            (2, "frame #2 before #1 (the server holds it)", 0.03),
            (1, "frame #1", pace),
            (1, "frame #1 again (a duplicate)", pace),
            (3, "frame #3", pace),
        ]
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for index, what, pause in steps:
                say("flaky", f"delivers {what}")
                await sock.sendto(frames[index], ("127.0.0.1", port))
                await trio.sleep(pause)

    async with open_udp_server("127.0.0.1", 0) as server, trio.open_nursery() as nursery:
        port = server.local_address[1]
        say("server", f"listening on 127.0.0.1 port {port}")
        await nursery.start(server.serve, handler)
        results: dict[str, PeerStatistics] = {}

        async def run(name: str, payloads: list[bytes]) -> None:
            results[name] = await client(name, port, payloads)

        async with trio.open_nursery() as clients:
            clients.start_soon(run, "sensor", [b"temperature=21.%dC" % i for i in range(6)])
            clients.start_soon(run, "camera", [b"a 300 kB frame follows", big, b"done"])
            clients.start_soon(run, "operator", [b"arm", b"move x=10 y=4", b"disarm"])
            clients.start_soon(flaky, port)
            await trio.sleep(pace / 2)
            vandalism = await vandal(port)
        # The vandal expects no reply: let the server read everything it sent.
        await trio.testing.wait_all_tasks_blocked()
        stats = server.statistics()
        nursery.cancel_scope.cancel()

    out("")
    out("server statistics:")
    for field in (
        "datagrams_received",
        "datagrams_delivered",
        "datagrams_crc_error",
        "datagrams_malformed",
        "datagrams_duplicate",
        "messages_delivered",
        "messages_sent",
        "peers_opened",
    ):
        out(f"  {field:<22} {getattr(stats, field):>6}")
    out(
        f"  every datagram accounted for: {stats.datagrams_received} received = "
        f"{stats.datagrams_accounted} in named outcomes"
    )
    for name, peer in results.items():
        out(
            f"{name:<9} sent {peer.messages_sent} messages in {peer.datagrams_sent} datagrams, "
            f"got {peer.messages_delivered} replies"
        )
    ok &= stats.datagrams_received == stats.datagrams_accounted
    ok &= stats.datagrams_crc_error + stats.datagrams_malformed == vandalism
    ok &= stats.messages_delivered == 6 + 3 + 3 + 4
    ok &= stats.datagrams_duplicate == 1
    out(
        "demo "
        + (
            "passed: every message arrived whole and every bad datagram was caught"
            if ok
            else "FAILED"
        )
    )
    return ok
