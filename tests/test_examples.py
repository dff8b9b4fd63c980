"""The examples run as programs on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
