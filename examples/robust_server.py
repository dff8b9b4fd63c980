"""A server that keeps serving whatever the network throws at it.

The trioudp version of the tutorial's "UDP server with error handling": one
task per peer (``serve``), a request that fails gets an error reply instead of
ending the server, and garbage datagrams, damaged frames and ICMP errors are
dropped and counted by trioudp, never raised. Statistics are logged every few
seconds, and the accounting identity shows that nothing went missing unseen.

    python examples/robust_server.py --port 9999
"""

from __future__ import annotations

import argparse
import logging

import trio

import trioudp

logger = logging.getLogger("robust_server")


def process(payload: bytes) -> bytes:
    """The application's work; raises on requests it cannot handle."""
    return payload.decode("utf-8").upper().encode()


async def handle(connection: trioudp.Connection) -> None:
    logger.info("new peer %s", connection.address)
    async for message in connection:
        try:
            response = process(message.payload)
        except Exception as exc:  # noqa: BLE001 (one bad request must not end the server)
            logger.warning("request #%s from %s failed: %s", message.sequence, message.address, exc)
            response = b"Error processing request"
        await message.reply(response)
    logger.info("peer %s gone (%s)", connection.address, connection.ended)


async def report(server: trioudp.UDPServer, every: float) -> None:
    while True:
        await trio.sleep(every)
        stats = server.statistics()
        logger.info(
            "%d peers, %d messages, %d damaged, %d malformed, %d ICMP errors; "
            "%d datagrams received = %d accounted for",
            stats.peers,
            stats.messages_delivered,
            stats.datagrams_crc_error,
            stats.datagrams_malformed,
            stats.unreachable_errors,
            stats.datagrams_received,
            stats.datagrams_accounted,
        )


async def run(host: str, port: int, duration: float | None, every: float) -> None:
    async with trioudp.open_udp_server(host, port, idle_timeout=30.0) as server:
        logger.info("listening on %s", server.local_address)
        with trio.move_on_after(duration if duration is not None else float("inf")):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(report, server, every)
                await server.serve(handle)
        stats = server.statistics()
        logger.info("stopped: %s", stats)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--report-every", type=float, default=5.0, metavar="SECONDS")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    trio.run(run, arguments.host, arguments.port, arguments.duration, arguments.report_every)


if __name__ == "__main__":
    main()
