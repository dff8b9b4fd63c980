"""Stateless request server: each request is answered on its own.

The trioudp version of the socket tutorial's stateless server: ``TIME`` gets
the server's time (ISO 8601), ``ECHO text`` gets ``text`` back, anything else
gets ``Unknown command``, and a request that is not UTF-8 gets an error reply
rather than ending the server. No state is kept between requests.

    python examples/stateless_server.py --port 8080
    trioudp send 127.0.0.1:8080 TIME    # or any trioudp client
"""

from __future__ import annotations

import argparse
import datetime

import trio

import trioudp


def handle_request(request: str) -> str:
    """One request's answer (no memory of earlier ones)."""
    if request == "TIME":
        return datetime.datetime.now(datetime.timezone.utc).isoformat()
    if request.startswith("ECHO "):
        return request[5:]
    return "Unknown command"


async def serve(host: str, port: int, duration: float | None) -> None:
    async with trioudp.open_udp_server(host, port) as server:
        print(f"stateless server listening on port {server.local_address[1]}", flush=True)
        with trio.move_on_after(duration if duration is not None else float("inf")):
            async for message in server:
                try:
                    response = handle_request(message.payload.decode())
                except UnicodeDecodeError as exc:
                    response = f"Error: {exc}"
                await message.reply(response.encode())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    arguments = parser.parse_args()
    trio.run(serve, arguments.host, arguments.port, arguments.duration)


if __name__ == "__main__":
    main()
