"""The ``trioudp`` command: each subcommand's coroutine driven in a test (over
loopback, or the fake network for multicast), and main()'s exit statuses."""

from __future__ import annotations

import base64
import errno
import io
import json
import random
import socket
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

import trioudp
from trioudp._cli import _parser, _where, host_port, main
from trioudp.testing import FakeNetwork

LOCAL = "127.0.0.1"


async def run(argv: list[str], out: io.StringIO) -> None:
    arguments = _parser().parse_args(argv)
    await arguments.run(arguments, out)


def test_addresses() -> None:
    assert host_port("127.0.0.1:9999") == ("127.0.0.1", 9999)
    assert host_port("[::1]:53") == ("::1", 53)
    assert host_port(":7") == ("", 7)
    assert host_port("localhost:0") == ("localhost", 0)
    for bad in ("9999", "host:", "host:port", "host:70000"):
        with pytest.raises(Exception, match="is not HOST:PORT"):
            host_port(bad)


async def test_listen_prints_what_send_sends(free_udp_port: int) -> None:
    port = free_udp_port
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            run, ["listen", f"{LOCAL}:{port}", "--count", "3", "--timeout", "10"], out
        )
        await trio.testing.wait_all_tasks_blocked()
        await run(["send", f"{LOCAL}:{port}", "hello", "--topic", "greetings"], io.StringIO())
        await run(["send", f"{LOCAL}:{port}", "héllo", "--repeat", "2"], io.StringIO())
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{LOCAL}:")
    assert lines[0].endswith(" #0 [greetings] hello")
    # Each send command is a new peer (its own port), numbering from 0.
    assert [line.split(" ", 1)[1] for line in lines[1:]] == ["#0 héllo", "#1 héllo"]


async def test_listen_in_hex_and_reliable_send_from_stdin(
    monkeypatch: pytest.MonkeyPatch, free_udp_port: int
) -> None:
    port = free_udp_port
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"one\ntwo\n\x01\x02\n")))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            run, ["listen", f"{LOCAL}:{port}", "--reliable", "--hex", "--count", "3"], out
        )
        await trio.testing.wait_all_tasks_blocked()
        await run(["send", f"{LOCAL}:{port}", "-", "--reliable"], io.StringIO())
    shown = [line.split(" ", 2)[2] for line in out.getvalue().splitlines()]
    assert shown == ["6f 6e 65", "74 77 6f", "01 02"]


async def test_echo_answers_a_plain_socket_in_raw_mode(free_udp_port: int) -> None:
    port = free_udp_port
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, ["echo", f"{LOCAL}:{port}", "--raw", "--count", "1"], out)
        await trio.testing.wait_all_tasks_blocked()
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            await plain.sendto(b"marco", (LOCAL, port))
            with trio.fail_after(5):
                assert await plain.recv(100) == b"marco"
    assert out.getvalue().endswith("marco\n")


async def test_join_prints_a_groups_messages() -> None:
    network = FakeNetwork()
    out = io.StringIO()
    with network.installed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, ["join", "239.1.2.3", "6000", "--count", "1"], out)
            await trio.testing.wait_all_tasks_blocked()
            async with trioudp.open_multicast("239.1.2.3", 6000) as sender:
                await sender.send(b"to the group")
    assert out.getvalue().endswith("to the group\n")


async def test_stats_shows_live_counters(autojump_clock: trio.testing.MockClock) -> None:
    network = FakeNetwork()
    out = io.StringIO()
    with network.installed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, ["stats", "10.0.0.1:5000", "--seconds", "3.5"], out)
            await trio.testing.wait_all_tasks_blocked()
            async with trioudp.open_udp_connection("10.0.0.1", 5000) as conn:
                for _ in range(5):
                    await conn.send(b"counted")
            network.inject(b"garbage that is no frame", ("10.0.0.9", 1), ("10.0.0.1", 5000))
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # one a second, then the total
    assert lines[-1] == (
        "total  received 6  delivered 5  duplicate 0  late 0  crc 0  malformed 1  "
        "over limit 0  peers 1"
    )


async def test_bench_prints_two_rates() -> None:
    out = io.StringIO()
    await run(["bench", "--seconds", "0.2"], out)
    finals = [part for part in out.getvalue().split("\r") if part.endswith("received\n")]
    assert [line.split()[0] for line in finals] == ["send()", "send_batch(64)"]
    assert all(float(line.split()[1].replace(",", "")) > 0 for line in finals)


def test_exit_statuses(capsys: pytest.CaptureFixture[str], free_udp_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOCAL, 0))
        port = taken.getsockname()[1]
        assert main(["listen", f"{LOCAL}:{port}"]) == 1
    assert "already in use" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["send", "nowhere", "x"])
    assert usage.value.code == 2
    # A reliable send nobody acknowledges fails after --timeout.
    assert main(["send", f"{LOCAL}:{free_udp_port}", "x", "--reliable", "--timeout", "0.5"]) == 1
    assert "trioudp send:" in capsys.readouterr().err


def test_console_script_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioudp", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"trioudp {trioudp.__version__}"


async def test_no_datagram_a_plain_client_sends_stops_a_raw_echo(free_udp_port: int) -> None:
    """Plain UDP allows up to 65,507 bytes: the raw echo answers every size, and
    garbage is just more bytes to it."""
    port = free_udp_port
    sizes = [0, 1, 1200, 1201, 1472, 9000, 65_507]
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            run, ["echo", f"{LOCAL}:{port}", "--raw", "--json", "--count", str(len(sizes) + 1)], out
        )
        await trio.testing.wait_all_tasks_blocked()
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            for size in sizes:
                payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
                await plain.sendto(payload, (LOCAL, port))
                with trio.fail_after(5):
                    assert await plain.recv(65_536) == payload
            await plain.sendto(b"\xff\x00 not a frame", (LOCAL, port))
            with trio.fail_after(5):
                assert await plain.recv(100) == b"\xff\x00 not a frame"
    assert [json.loads(line)["size"] for line in out.getvalue().splitlines()] == [*sizes, 14]


async def test_garbage_and_oversized_datagrams_never_stop_a_framed_server(
    free_udp_port: int,
) -> None:
    port = free_udp_port
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, ["echo", f"{LOCAL}:{port}", "--count", "1", "--json"], out)
        await trio.testing.wait_all_tasks_blocked()
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            for size in (0, 1, 7, 1200, 1201, 9000, 65_507):
                await plain.sendto(b"\x00" * size, (LOCAL, port))
            await plain.sendto(b"TU\x01garbage with a magic", (LOCAL, port))
        async with trioudp.open_udp_connection(LOCAL, port) as conn:
            await conn.send(b"still here")
            with trio.fail_after(5):
                assert (await conn.receive()).payload == b"still here"
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["payload"] == "still here"


async def test_a_reply_that_fails_is_reported_and_counted_and_serving_goes_on(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    autojump_clock: trio.testing.MockClock,
) -> None:
    reply = trioudp.Message.reply

    async def refused(self: trioudp.Message, payload: bytes) -> None:
        if payload == b"refused":
            raise OSError(errno.EPERM, "Operation not permitted")
        await reply(self, payload)

    monkeypatch.setattr(trioudp.Message, "reply", refused)
    network = FakeNetwork()
    out = io.StringIO()
    with network.installed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, ["echo", "10.0.0.1:5000", "--count", "4"], out)
            await trio.testing.wait_all_tasks_blocked()
            async with trioudp.open_udp_connection("10.0.0.1", 5000) as conn:
                for payload in (b"refused", b"refused", b"refused", b"answered"):
                    await conn.send(payload)
                with trio.fail_after(5):
                    assert (await conn.receive()).payload == b"answered"
                conn_address = conn.local_address
    errors = capsys.readouterr().err.splitlines()
    # The first failure at once, the next ones within the second held back,
    # then the total when the command ends.
    where = _where(conn_address)
    assert errors[1:] == [
        f"trioudp echo: could not answer {where}: [Errno 1] Operation not permitted",
        "trioudp echo: 3 messages could not be answered",
    ]
    assert len(out.getvalue().splitlines()) == 4


async def test_listen_summarises_a_flood_once_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = FakeNetwork()
    out = io.StringIO()
    argv = ["listen", "10.0.0.1:5000", "--count", "50", "--lines-per-second", "5"]
    with network.installed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, argv, out)
            await trio.testing.wait_all_tasks_blocked()
            async with trioudp.open_udp_connection("10.0.0.1", 5000) as conn:
                await conn.send_batch([b"%d" % i for i in range(50)])
    lines = out.getvalue().splitlines()
    assert [line.rsplit(" ", 1)[1] for line in lines[:5]] == ["0", "1", "2", "3", "4"]
    assert lines[5].startswith("trioudp: 45 more messages (85 bytes) from 1 peer in the last")
    assert len(lines) == 6


async def test_listen_json_gives_one_object_per_message(free_udp_port: int) -> None:
    port = free_udp_port
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, ["listen", f"{LOCAL}:{port}", "--count", "3", "--json"], out)
        await trio.testing.wait_all_tasks_blocked()
        async with trioudp.open_udp_connection(LOCAL, port) as conn:
            await conn.send(b"hello", topic="greetings")
            await conn.send(b"\xff\xfe binary")
            await conn.send("héllo".encode())
            client_port = conn.local_address[1]
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["event"], r["host"], r["sequence"], r["topic"]) for r in records] == [
        ("message", LOCAL, 0, "greetings"),
        ("message", LOCAL, 1, ""),
        ("message", LOCAL, 2, ""),
    ]
    assert all(r["port"] == client_port for r in records)
    assert (records[0]["payload"], records[0]["encoding"], records[0]["size"]) == (
        "hello",
        "utf-8",
        5,
    )
    assert records[1]["encoding"] == "base64"
    assert base64.b64decode(records[1]["payload"]) == b"\xff\xfe binary"
    assert records[2]["payload"] == "héllo"


async def test_stats_json_gives_every_statistic(autojump_clock: trio.testing.MockClock) -> None:
    network = FakeNetwork()
    out = io.StringIO()
    with network.installed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, ["stats", "10.0.0.1:5000", "--seconds", "2.5", "--json"], out)
            await trio.testing.wait_all_tasks_blocked()
            async with trioudp.open_udp_connection("10.0.0.1", 5000) as conn:
                for _ in range(3):
                    await conn.send(b"counted")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["event"], r["final"]) for r in records] == [
        ("statistics", False),
        ("statistics", False),
        ("statistics", True),
    ]
    final = records[-1]
    assert set(final) - {"event", "final", "elapsed"} == {
        field.name for field in attrs.fields(trioudp.EndpointStatistics)
    }
    assert (final["datagrams_received"], final["messages_delivered"], final["peers"]) == (3, 3, 1)
    assert final["elapsed"] == 2.5


async def test_bench_json_gives_a_row_per_measurement() -> None:
    out = io.StringIO()
    await run(["bench", "--seconds", "0.2", "--json"], out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(row["event"], row["method"]) for row in rows] == [
        ("bench", "send()"),
        ("bench", "send_batch(64)"),
    ]
    assert all(row["messages_per_second"] > 0 and row["seconds"] == 0.2 for row in rows)


def test_wireshark_prints_the_dissector_or_installs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    assert main(["wireshark"], out) == 0
    printed = Path(out.getvalue().strip())
    assert printed.name == "trioudp.lua"
    assert printed.read_bytes().startswith(b"-- Wireshark dissector for the trioudp")
    out = io.StringIO()
    assert main(["wireshark", "--install", "--dir", str(tmp_path / "plugins")], out) == 0
    installed = tmp_path / "plugins" / "trioudp.lua"
    assert out.getvalue() == f"{installed}\n"
    assert installed.read_bytes() == printed.read_bytes()
    assert "installed" in capsys.readouterr().err


SIZES = (0, 1, 19, 20, 32, 1200, 1201, 1472, 9000, 65_507)


@pytest.mark.parametrize(
    "argv",
    [
        ["listen"],
        ["listen", "--raw"],
        ["listen", "--reliable"],
        ["echo"],
        ["echo", "--raw"],
        ["echo", "--reliable"],
    ],
    ids=" ".join,
)
async def test_no_size_and_no_garbage_stops_a_command(argv: list[str], free_udp_port: int) -> None:
    """Issue 15: every datagram a plain UDP client can send (0 to 65,507 bytes of
    anything, and frames that are nearly right), then a real message, which
    the command must still show."""
    port = free_udp_port
    out = io.StringIO()
    raw = "--raw" in argv
    reliable = "--reliable" in argv
    expected = len(SIZES) + 2 if raw else 1
    rng = random.Random(7)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, [*argv, f"{LOCAL}:{port}", "--json", "--count", str(expected)], out)
        await trio.testing.wait_all_tasks_blocked()
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            for size in SIZES:
                await plain.sendto(rng.randbytes(size), (LOCAL, port))
            await plain.sendto(b"tU\x01" + bytes(40), (LOCAL, port))
            if raw:
                await plain.sendto(b"still here", (LOCAL, port))
        if not raw:
            async with trioudp.open_udp_connection(LOCAL, port, reliable=reliable) as conn:
                await conn.send(b"still here")
                if reliable:
                    with trio.fail_after(10):
                        await conn.flush()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[-1]["payload"] == "still here"
    assert len(records) == expected


async def test_join_survives_every_size_and_garbage() -> None:
    network = FakeNetwork()
    out = io.StringIO()
    rng = random.Random(7)
    with network.installed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, ["join", "239.1.2.3", "6000", "--count", "1", "--json"], out)
            await trio.testing.wait_all_tasks_blocked()
            for size in SIZES:
                network.inject(rng.randbytes(size), ("10.0.0.9", 1), ("239.1.2.3", 6000))
            async with trioudp.open_multicast("239.1.2.3", 6000) as sender:
                await sender.send(b"still here")
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert record["payload"] == "still here"
