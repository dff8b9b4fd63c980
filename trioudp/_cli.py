"""The ``trioudp`` command (``python -m trioudp``): see ``trioudp --help``.

Exit status: 0 when the command did what it was asked, 1 when it failed (an
address in use, a name that does not resolve, a peer that never answered, a
demo check that did not hold), 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs
import trio

from ._config import MAX_UDP_PAYLOAD
from ._demo import run_demo
from ._errors import PeerLostError
from ._group import open_multicast
from ._open import open_udp_connection, open_udp_server
from ._version import __version__
from ._wireshark import install, plugin_path

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._message import Address, Message
    from ._statistics import PeerStatistics


#: Messages ``listen``, ``echo`` and ``join`` show a second before they
#: summarise the rest (--lines-per-second).
LINES_PER_SECOND = 200


class CommandError(Exception):
    """A failure to report in one line, with exit status 1."""


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every interface)."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9999, [::1]:9999 or :9999)"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _options(arguments: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if getattr(arguments, "raw", False):
        options["framing"] = False
        # Plain UDP carries up to 65,507 bytes: a raw echo answers any of them.
        options["max_datagram_size"] = MAX_UDP_PAYLOAD
    if getattr(arguments, "reliable", False):
        options["reliable"] = True
    return options


def _where(address: Any) -> str:
    """An address as HOST:PORT, or [HOST]:PORT for IPv6."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _show(message: Message, *, as_hex: bool) -> str:
    parts = [_where(message.address)]
    if message.sequence is not None:
        parts.append(f"#{message.sequence}")
    if message.topic:
        parts.append(f"[{message.topic}]")
    payload = message.payload
    parts.append(payload.hex(" ") if as_hex else payload.decode(errors="backslashreplace"))
    return " ".join(parts)


def _record(message: Message, *, as_hex: bool) -> dict[str, Any]:
    """A message as one JSON object: its payload as text when it is UTF-8 (and
    not asked for in hex), in base64 otherwise, with ``encoding`` saying which."""
    payload = message.payload
    record: dict[str, Any] = {
        "event": "message",
        "host": message.address[0],
        "port": message.address[1],
        "sequence": message.sequence,
        "topic": message.topic,
        "size": len(payload),
    }
    if as_hex:
        record.update(payload=payload.hex(), encoding="hex")
        return record
    try:
        record.update(payload=payload.decode(), encoding="utf-8")
    except UnicodeDecodeError:
        record.update(payload=base64.b64encode(payload).decode(), encoding="base64")
    return record


def _emit(out: TextIO, record: dict[str, Any]) -> None:
    print(json.dumps(record, ensure_ascii=False), file=out, flush=True)


@attrs.define
class _Printer:
    """Prints messages as they come, up to ``limit`` lines a second (0: no
    limit); under a flood it prints a summary of the rest once a second rather
    than fall behind. Replies that cannot be sent are reported on stderr (at
    most one line a second) and counted, and serving goes on."""

    command: str
    out: TextIO
    as_json: bool
    as_hex: bool
    limit: int
    #: Messages shown and not shown in the current second, and the latter's
    #: bytes and peers.
    shown: int = 0
    hidden: int = 0
    hidden_bytes: int = 0
    hidden_peers: set[Address] = attrs.Factory(set["Address"])
    #: Replies that could not be sent: in all, and since the last report.
    failures: int = 0
    unreported: int = 0
    reported_at: float = -math.inf

    def message(self, message: Message) -> None:
        if not self.limit or self.shown < self.limit:
            self.shown += 1
            if self.as_json:
                _emit(self.out, _record(message, as_hex=self.as_hex))
            else:
                print(_show(message, as_hex=self.as_hex), file=self.out, flush=True)
            return
        self.hidden += 1
        self.hidden_bytes += len(message.payload)
        self.hidden_peers.add(message.address)

    def tick(self) -> None:
        """A second is over: summarise what was not shown in it."""
        if self.hidden:
            if self.as_json:
                _emit(
                    self.out,
                    {
                        "event": "summary",
                        "seconds": 1,
                        "shown": self.shown,
                        "not_shown": self.hidden,
                        "bytes": self.hidden_bytes,
                        "peers": len(self.hidden_peers),
                    },
                )
            else:
                peers = len(self.hidden_peers)
                print(
                    f"trioudp: {self.hidden:,} more message{'s' * (self.hidden != 1)} "
                    f"({self.hidden_bytes:,} bytes) from {peers:,} peer{'s' * (peers != 1)} "
                    f"in the last second, not shown (--lines-per-second {self.limit})",
                    file=self.out,
                    flush=True,
                )
        self.shown = self.hidden = self.hidden_bytes = 0
        self.hidden_peers.clear()

    def failed(self, message: Message, exc: Exception) -> None:
        """The reply to ``message`` could not be sent."""
        self.failures += 1
        self.unreported += 1
        now = time.monotonic()
        if now - self.reported_at < 1:
            return
        more = self.unreported - 1
        also = f" (and {more:,} more since the last report)" if more else ""
        print(
            f"trioudp {self.command}: could not answer {_where(message.address)}: {exc}{also}",
            file=sys.stderr,
            flush=True,
        )
        self.reported_at, self.unreported = now, 0

    def finish(self) -> None:
        self.tick()
        if self.failures:
            print(
                f"trioudp {self.command}: {self.failures:,} message"
                f"{'s' * (self.failures != 1)} could not be answered",
                file=sys.stderr,
                flush=True,
            )


#: What may stop one reply, never the server: the message is too large for
#: the peer's mode, the peer refused or left (PeerLostError, a
#: BrokenResourceError), the kernel refused the datagram.
_REPLY_ERRORS = (ValueError, OSError, trio.BrokenResourceError)


async def _print_messages(
    source: Any, arguments: argparse.Namespace, out: TextIO, reply: bool = False
) -> None:
    """Print (and with ``reply``, echo) messages until --count or --timeout.
    Nothing a peer sends stops it: what cannot be answered is reported."""
    printer = _Printer(
        arguments.command,
        out,
        as_json=arguments.json,
        as_hex=arguments.hex,
        limit=arguments.lines_per_second,
    )
    count = 0

    async def summaries() -> None:
        while True:
            await trio.sleep(1)
            printer.tick()

    try:
        with trio.move_on_after(arguments.timeout if arguments.timeout else math.inf):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(summaries)
                while not arguments.count or count < arguments.count:
                    wanted = arguments.count - count if arguments.count else 1024
                    for message in await source.receive_batch(wanted):
                        printer.message(message)
                        count += 1
                        if reply:
                            try:
                                await message.reply(message.payload)
                            except _REPLY_ERRORS as exc:
                                printer.failed(message, exc)
                nursery.cancel_scope.cancel()
    finally:
        printer.finish()


async def listen(arguments: argparse.Namespace, out: TextIO, *, reply: bool = False) -> None:
    host, port = arguments.address
    async with open_udp_server(host or None, port, **_options(arguments)) as server:
        _started(server.local_address, "echoing on" if reply else "listening on", out)
        await _print_messages(server, arguments, out, reply=reply)


async def echo(arguments: argparse.Namespace, out: TextIO) -> None:
    await listen(arguments, out, reply=True)


async def join(arguments: argparse.Namespace, out: TextIO) -> None:
    options = _options(arguments)
    async with open_multicast(
        arguments.group, arguments.port, interface=arguments.interface, **options
    ) as endpoint:
        _started(endpoint.local_address, f"joined {arguments.group} on", out)
        await _print_messages(endpoint, arguments, out)


def _started(address: Any, what: str, out: TextIO) -> None:
    print(f"trioudp: {what} {_where(address)} (Ctrl-C to stop)", file=sys.stderr, flush=True)


async def send(arguments: argparse.Namespace, out: TextIO) -> None:
    host, port = arguments.address
    if arguments.message == "-":
        payloads = [line.rstrip(b"\n") for line in sys.stdin.buffer]
    else:
        payloads = [arguments.message.encode()]
    async with open_udp_connection(host, port, **_options(arguments)) as conn:
        for _ in range(arguments.repeat):
            for payload in payloads:
                await conn.send(payload, topic=arguments.topic)
        try:
            with trio.fail_after(arguments.timeout):
                await conn.flush()
        except trio.TooSlowError:
            raise CommandError(
                f"{host}:{port} did not acknowledge every message within "
                f"{arguments.timeout} s (is a reliable trioudp endpoint listening there?)"
            ) from None
        sent = conn.statistics().messages_sent
    print(f"trioudp: sent {sent} message{'s' * (sent != 1)}", file=sys.stderr)


_COUNTERS = (
    ("received", "datagrams_received"),
    ("delivered", "messages_delivered"),
    ("duplicate", "datagrams_duplicate"),
    ("late", "datagrams_late"),
    ("crc", "datagrams_crc_error"),
    ("malformed", "datagrams_malformed"),
    ("over limit", "datagrams_over_limit"),
    ("peers", "peers"),
)


def _counters(stats: PeerStatistics) -> str:
    return "  ".join(f"{name} {getattr(stats, field):,}" for name, field in _COUNTERS)


async def stats(arguments: argparse.Namespace, out: TextIO) -> None:
    """Listen, and print the endpoint's counters every second."""
    host, port = arguments.address
    async with open_udp_server(host or None, port, **_options(arguments)) as server:
        _started(server.local_address, "counting on", out)

        async def drain() -> None:
            while True:
                await server.receive_batch()

        def show(elapsed: float, *, final: bool = False) -> None:
            snapshot = server.statistics()
            if arguments.json:
                record = {"event": "statistics", "elapsed": round(elapsed, 3), "final": final}
                _emit(out, {**record, **attrs.asdict(snapshot)})
            else:
                label = "total" if final else f"{elapsed:5.0f} s"
                print(f"{label}  {_counters(snapshot)}", file=out, flush=True)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            with trio.move_on_after(arguments.seconds if arguments.seconds else math.inf):
                while True:
                    await trio.sleep(1)
                    show(trio.current_time() - start)
            nursery.cancel_scope.cancel()
        show(trio.current_time() - start, final=True)


async def bench(arguments: argparse.Namespace, out: TextIO) -> None:
    """A quick loopback run: 64-byte messages per second, send() and send_batch()."""
    for label, batch in (("send()", 0), ("send_batch(64)", 64)):
        rate = await _bench_one(label, batch, arguments.seconds, None if arguments.json else out)
        if arguments.json:
            row = {"event": "bench", "method": label, "payload_bytes": 64}
            _emit(out, {**row, "seconds": arguments.seconds, "messages_per_second": round(rate)})
        else:
            print(f"\r{label:<15} {rate:>12,.0f} msg/s received", file=out, flush=True)


async def _bench_one(label: str, batch: int, seconds: float, out: TextIO | None) -> float:
    """Messages per second received; progress on ``out`` every half second."""
    payload = b"x" * 64
    received = 0

    async with (
        open_udp_server("127.0.0.1", 0, channel_capacity=2**16) as server,
        open_udp_connection(*server.local_address[:2]) as conn,
    ):

        async def count() -> None:
            nonlocal received
            while True:
                received += len(await server.receive_batch())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(count)
            start = shown = time.perf_counter()
            with trio.move_on_after(seconds):
                while True:
                    if batch:
                        await conn.send_batch([payload] * batch)
                    else:
                        await conn.send(payload)
                    now = time.perf_counter()
                    if out is not None and now - shown >= 0.5:
                        shown = now
                        rate = received / (now - start)
                        print(f"\r{label:<15} {rate:>12,.0f} msg/s", end="", file=out, flush=True)
            nursery.cancel_scope.cancel()
    return received / (time.perf_counter() - start)


async def wireshark(arguments: argparse.Namespace, out: TextIO) -> None:
    """Print the packaged dissector's path, or install it for Wireshark."""
    if not (arguments.install or arguments.dir):
        try:
            print(plugin_path(), file=out)
        except OSError as exc:
            raise CommandError(f"{exc}; use trioudp wireshark --install") from None
        return
    installed = install(arguments.dir)
    print(installed, file=out)
    print(
        "trioudp: installed; Wireshark and tshark started from now on dissect trioudp "
        "frames (heuristically, or set Preferences > Protocols > TRIOUDP > port)",
        file=sys.stderr,
    )


async def demo(arguments: argparse.Namespace, out: TextIO) -> None:
    if not await run_demo(partial(print, file=out, flush=True), pace=arguments.pace):
        raise CommandError("the demo's checks did not all hold (see above)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioudp",
        description="Safe, fast UDP messaging for Trio: try it from the shell.",
        epilog="Addresses are HOST:PORT, [IPv6]:PORT, or :PORT for every interface.",
    )
    parser.add_argument("--version", action="version", version=f"trioudp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[..., Awaitable[None]], text: str) -> Any:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        return sub

    def receiving(sub: Any, *, reliable: bool = True) -> None:
        sub.add_argument("--raw", action="store_true", help="plain UDP datagrams, no framing")
        if reliable:
            sub.add_argument("--reliable", action="store_true", help="reliable mode (both ends)")
        sub.add_argument("--hex", action="store_true", help="show payloads as hex")
        sub.add_argument("--count", type=_positive, default=0, help="stop after N messages")
        sub.add_argument("--timeout", type=_seconds, default=0, help="stop after S seconds")
        json_output(sub, "a JSON object per line: each message, and summaries")
        sub.add_argument(
            "--lines-per-second",
            type=_whole,
            default=LINES_PER_SECOND,
            metavar="N",
            help=f"show at most N messages a second and summarise the rest "
            f"({LINES_PER_SECOND}; 0 shows every one)",
        )

    def json_output(sub: Any, text: str) -> None:
        sub.add_argument("--json", action="store_true", help=text)

    sub = command("demo", demo, "watch a server, clients and a vandal talk on loopback (~5 s)")
    sub.add_argument("--pace", type=_seconds, default=0.6, help="pause between steps (0.6)")

    sub = command("listen", listen, "print the messages that arrive at HOST:PORT")
    sub.add_argument("address", type=host_port, metavar="HOST:PORT")
    receiving(sub)

    sub = command("echo", echo, "send every message that arrives at HOST:PORT back")
    sub.add_argument("address", type=host_port, metavar="HOST:PORT")
    receiving(sub)

    sub = command("send", send, "send MESSAGE (or each line of stdin, with -) to HOST:PORT")
    sub.add_argument("address", type=host_port, metavar="HOST:PORT")
    sub.add_argument("message", metavar="MESSAGE|-")
    sub.add_argument("--raw", action="store_true", help="a plain UDP datagram, no framing")
    sub.add_argument("--reliable", action="store_true", help="wait until acknowledged")
    sub.add_argument("--topic", default="", help="a topic for the messages")
    sub.add_argument("--repeat", type=_positive, default=1, help="send it N times")
    sub.add_argument(
        "--timeout", type=_seconds, default=10.0, help="reliable: wait S seconds at most (10)"
    )

    sub = command("join", join, "join multicast GROUP on PORT and print its messages")
    sub.add_argument("group", metavar="GROUP")
    sub.add_argument("port", type=_port, metavar="PORT")
    sub.add_argument("--interface", default=None, help="interface name, index or address")
    receiving(sub, reliable=False)

    sub = command("stats", stats, "listen on HOST:PORT and show its counters every second")
    sub.add_argument("address", type=host_port, metavar="HOST:PORT")
    sub.add_argument("--raw", action="store_true", help="plain UDP datagrams, no framing")
    sub.add_argument("--seconds", type=_seconds, default=0, help="stop after S seconds")
    json_output(sub, "a JSON object per line: every statistic, each second and in total")

    sub = command(
        "wireshark",
        wireshark,
        "print the path of trioudp's Wireshark dissector, or install it (--install)",
    )
    sub.add_argument(
        "--install",
        action="store_true",
        help="copy it into Wireshark's personal Lua plugins folder",
    )
    sub.add_argument("--dir", type=Path, default=None, help="install it into this folder instead")

    sub = command("bench", bench, "measure messages per second on loopback")
    sub.add_argument("--seconds", type=_seconds, default=2.0, help="per measurement (2)")
    json_output(sub, "a JSON object per line: one per measurement")
    return parser


def _whole(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (0 or more)")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        trio.run(arguments.run, arguments, out or sys.stdout)
    except KeyboardInterrupt:
        return 130
    except (CommandError, PeerLostError, OSError, ValueError, TypeError) as exc:
        print(f"trioudp {arguments.command}: {exc}", file=sys.stderr)
        return 1
    return 0
