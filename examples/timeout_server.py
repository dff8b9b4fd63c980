"""A server that does other work while it waits, and stops cleanly.

The socket tutorial sets a one-second socket timeout so that its loop can
notice Ctrl-C. With trio a timeout is a cancel scope: ``move_on_after`` around
a receive gives up waiting without losing a message (receive is cancel-safe),
so the loop can do its periodic work (here, a status line) and go on; Ctrl-C
and ``--duration`` end the ``async with`` block, which closes the socket.

    python examples/timeout_server.py --port 8081 --tick 1.0
"""

from __future__ import annotations

import argparse
import math

import trio

import trioudp


async def serve(host: str, port: int, tick: float, duration: float | None) -> None:
    async with trioudp.open_udp_server(host, port) as server:
        print(f"timeout server listening on port {server.local_address[1]}", flush=True)
        answered = 0
        with trio.move_on_after(duration if duration is not None else math.inf):
            while True:
                with trio.move_on_after(tick):
                    message = await server.receive()
                    print(f"received: {message.payload.decode(errors='replace')}", flush=True)
                    await message.reply(b"Response")
                    answered += 1
                    continue
                # The wait timed out: nothing was lost, there was nothing to get.
                print(f"idle; {answered} answered so far", flush=True)
        print(f"shutting down after {answered} answered", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--tick", type=float, default=1.0, help="seconds between idle lines")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    arguments = parser.parse_args()
    try:
        trio.run(serve, arguments.host, arguments.port, arguments.tick, arguments.duration)
    except KeyboardInterrupt:
        print("interrupted")


if __name__ == "__main__":
    main()
