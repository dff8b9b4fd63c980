"""Connected UDP: Twisted's Helloer, with the "No one listening" notice.

A connection talks to one address, and the kernel may tell it (by an ICMP
error) that nobody listens there. trioudp hands that notice to ``receive()``
as an ``UnreachableError``, in order with the messages, rather than as a
callback; a timeout says nothing came at all (UDP may not be told).

    python examples/helloer.py --host 127.0.0.1 --port 1234
"""

from __future__ import annotations

import argparse
import sys

import trio

import trioudp


async def hello(host: str, port: int, patience: float) -> int:
    async with trioudp.open_udp_connection(host, port) as conn:
        print(f"now we can only send to host {host} port {port}", flush=True)
        await conn.send(b"hello")  # no need for an address
        with trio.move_on_after(patience):
            try:
                message = await conn.receive()
            except trioudp.UnreachableError:
                print("No one listening")
                return 1
            print(f"received {message.payload!r} from {message.address[0]}:{message.address[1]}")
            return 0
    print(f"no answer within {patience} s")
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1234)
    parser.add_argument("--patience", type=float, default=2.0, help="seconds to wait")
    arguments = parser.parse_args()
    sys.exit(trio.run(hello, arguments.host, arguments.port, arguments.patience))


if __name__ == "__main__":
    main()
