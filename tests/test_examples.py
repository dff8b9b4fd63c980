"""The examples run as programs on loopback."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import trioudp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def start(script: str, *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def ready(process: subprocess.Popen[str], marker: str) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert marker in line, line
    return line


def test_echo_server_and_client() -> None:
    server = start("echo_server.py", "--port", "0", "--duration", "30")
    try:
        port = ready(server, "listening").split()[-1]
        client = subprocess.run(
            [sys.executable, str(EXAMPLES / "echo_client.py"), "--port", port, "hello", "world"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert client.returncode == 0, client.stdout + client.stderr
        assert client.stdout.splitlines() == ["Echo: hello", "Echo: world"]
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_echo_client_reports_a_missing_server() -> None:
    client = subprocess.run(
        [sys.executable, str(EXAMPLES / "echo_client.py"), "--port", "9", "anyone"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert client.returncode == 1
    assert "no server" in client.stdout


def test_robust_server_survives_garbage_and_answers_bad_requests() -> None:
    server = start("robust_server.py", "--port", "0", "--duration", "30", "--report-every", "0.2")
    try:
        line = ready(server, "listening on")
        port = int(line.rsplit(",", 1)[1].strip(" )\n"))
        code = f"""
import socket, trio, trioudp
async def main():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
        for size in (0, 1, 50, 1500):
            junk.sendto(b"\\xff" * size, ("127.0.0.1", {port}))
    async with trioudp.open_udp_connection("127.0.0.1", {port}) as conn:
        for request in (b"hello", b"\\xff\\xfe not utf-8", b"again"):
            await conn.send(request)
            with trio.fail_after(10):
                print((await conn.receive()).payload.decode())
trio.run(main)
"""
        client = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines() == ["HELLO", "Error processing request", "AGAIN"]
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert "failed" in output


def port_of(process: subprocess.Popen[str], marker: str) -> int:
    return int(ready(process, marker).rsplit(" ", 1)[1])


async def test_stateless_server_answers_each_request_on_its_own() -> None:
    server = start("stateless_server.py", "--port", "0", "--duration", "30")
    try:
        port = port_of(server, "stateless server listening on port")
        async with trioudp.open_udp_connection("127.0.0.1", port) as conn:
            answers: list[str] = []
            for request in (b"TIME", b"ECHO hello there", b"DANCE", b"\xff\xfe"):
                await conn.send(request)
                with trio.fail_after(10):
                    answers.append((await conn.receive()).payload.decode())
        assert datetime.datetime.fromisoformat(answers[0]).tzinfo is not None
        assert answers[1:3] == ["hello there", "Unknown command"]
        assert answers[3].startswith("Error: 'utf-8' codec can't decode")
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_large_data_arrives_whole() -> None:
    receiver = start("large_data.py", "receive", "--port", "0", "--timeout", "60")
    try:
        port = port_of(receiver, "receiving on port")
        sender = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "large_data.py"),
                "send",
                "--port",
                str(port),
                "--size",
                "3000000",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sender.returncode == 0, sender.stdout + sender.stderr
        output, _ = receiver.communicate(timeout=60)
    finally:
        receiver.kill()
        receiver.communicate()
    sent_digest = sender.stdout.split("sha256 ")[1].split()[0]
    assert f"received 3,000,000 bytes sha256 {sent_digest}" in output
    assert "acknowledged in" in sender.stdout


async def test_timeout_server_does_idle_work_and_loses_nothing() -> None:
    server = start("timeout_server.py", "--port", "0", "--tick", "0.2", "--duration", "3")
    port = port_of(server, "timeout server listening on port")
    async with trioudp.open_udp_connection("127.0.0.1", port) as conn:
        for text in (b"one", b"two"):
            await conn.send(text)
            with trio.fail_after(10):
                assert (await conn.receive()).payload == b"Response"
    output, _ = server.communicate(timeout=30)
    lines = output.splitlines()
    assert "received: one" in lines
    assert "received: two" in lines
    assert any(line.startswith("idle; ") for line in lines)
    assert lines[-1] == "shutting down after 2 answered"


def test_control_system_link() -> None:
    controller = start("control_system.py", "server", "--port", "0", "--duration", "30")
    try:
        port = port_of(controller, "controller listening on port")
        console = subprocess.run(
            [sys.executable, str(EXAMPLES / "control_system.py"), "client", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        controller.terminate()
        controller.communicate(timeout=30)
    assert console.returncode == 0, console.stdout + console.stderr
    assert console.stdout.splitlines() == [
        '#0 [ack] {"ok": "valve"}',
        '#1 [ack] {"ok": "pump"}',
        '#2 [status] {"pump": 1200.0, "valve": 0.25}',
        "#3 [ack] done: STOP",
        "#4 [status] {}",
        "state ESTABLISHED",
        console.stdout.splitlines()[-1],
    ]
    last = console.stdout.splitlines()[-1]
    assert last.startswith("sent 5, acknowledged 5, received 5, damaged 0, rtt ")


def test_helloer_hears_that_no_one_listens(free_udp_port: int) -> None:
    port = free_udp_port
    helloer = subprocess.run(
        [sys.executable, str(EXAMPLES / "helloer.py"), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert helloer.returncode == 1
    assert helloer.stdout.splitlines() == [
        f"now we can only send to host 127.0.0.1 port {port}",
        "No one listening",
    ]


@pytest.mark.ipv6
async def test_ipv6_listener_answers() -> None:
    listener = start("ipv6_listener.py", "--port", "0", "--duration", "30")
    try:
        port = int(ready(listener, "listening on [::1]:").rsplit(":", 1)[1])
        async with trioudp.open_udp_connection("::1", port) as conn:
            await conn.send(b"hi")
            with trio.fail_after(10):
                assert (await conn.receive()).payload == b"hello over IPv6"
    finally:
        listener.terminate()
        output, _ = listener.communicate(timeout=30)
    assert "received b'hi' from [::1]:" in output
