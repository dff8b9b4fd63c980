"""Prometheus metrics: an echo server whose statistics can be scraped.

Every trioudp endpoint open in the process (here the echo server, and the
per-peer series of its clients with --per-peer) is reported at /metrics, in
Prometheus' text format, read from its statistics() at each scrape. Needs
``pip install 'trioudp[prometheus]'``.

    python examples/prometheus_metrics.py --port 9999 --metrics-port 9464
    python examples/echo_client.py --port 9999 hello world
    curl -s http://127.0.0.1:9464/metrics | grep trioudp_messages_delivered_total

The metrics are served from prometheus_client's own thread; the collector
reads each endpoint's statistics in the trio thread (see trioudp.prometheus).
Both listen on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse

import trio

import trioudp
import trioudp.prometheus


async def serve(port: int, metrics_port: int, duration: float | None, per_peer: bool) -> None:
    trioudp.prometheus.register(per_peer=per_peer)
    http, _thread = trioudp.prometheus.start_http_server(metrics_port, "127.0.0.1")
    try:
        async with trioudp.open_udp_server("127.0.0.1", port) as server:
            print(
                f"echo server listening on 127.0.0.1 port {server.local_address[1]}, "
                f"metrics at http://127.0.0.1:{http.server_port}/metrics",
                flush=True,
            )
            with trio.move_on_after(duration if duration is not None else float("inf")):
                async for message in server:
                    await message.reply(b"Echo: " + message.payload)
            stats = server.statistics()
            print(f"served {stats.messages_delivered} messages from {stats.peers_opened} peers")
    finally:
        # shutdown() waits for the server's loop to notice: in a thread, not in trio's.
        await trio.to_thread.run_sync(http.shutdown)
        http.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="UDP port (0: any free one)")
    parser.add_argument(
        "--metrics-port", type=int, default=0, help="HTTP port of /metrics (0: any free one)"
    )
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--per-peer", action="store_true", help="a series per client too")
    arguments = parser.parse_args()
    trio.run(serve, arguments.port, arguments.metrics_port, arguments.duration, arguments.per_peer)


if __name__ == "__main__":
    main()
