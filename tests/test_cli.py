"""The ``trioudp`` command: each subcommand's coroutine driven in a test (over
loopback, or the fake network for multicast), and main()'s exit statuses."""

from __future__ import annotations

import io
import socket
import subprocess
import sys

import pytest
import trio
import trio.testing

import trioudp
from trioudp._cli import _parser, host_port, main
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
