"""Echo client: sends each word given on the command line, prints each reply.

python examples/echo_client.py --port 9999 hello world
"""

from __future__ import annotations

import argparse
import sys

import trio

import trioudp


async def talk(host: str, port: int, words: list[str], patience: float) -> int:
    async with trioudp.open_udp_connection(host, port) as conn:
        for word in words:
            await conn.send(word.encode())
            with trio.move_on_after(patience) as scope:
                try:
                    reply = await conn.receive()
                except trioudp.UnreachableError as exc:
                    print(f"no server: {exc}")
                    return 1
                print(reply.payload.decode(errors="replace"))
            if scope.cancelled_caught:
                print(f"no reply to {word!r} within {patience} s")
                return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("words", nargs="+")
    arguments = parser.parse_args()
    sys.exit(trio.run(talk, arguments.host, arguments.port, arguments.words, arguments.timeout))


if __name__ == "__main__":
    main()
