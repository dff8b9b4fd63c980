"""What a client connection weighs (issue 14, target 6): the tasks and the
objects tracked by the garbage collector that each ``open_udp_connection``
holds, and how long a full collection takes with N of them open, next to N
plain trio sockets (target: at most 2 tasks and 50 objects a connection; a
collection at most 2x the plain sockets').

    python bench/connections.py [--count N] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import socket
import sys
import time
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import trio
import trio.testing

import trioudp


def tasks_under(task: trio.lowlevel.Task) -> int:
    return 1 + sum(
        tasks_under(child) for nursery in task.child_nurseries for child in nursery.child_tasks
    )


def collection_ms() -> float:
    """The best of three full collections, in milliseconds."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


async def weigh(count: int, *, plain: bool) -> dict[str, float]:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    async with trioudp.open_udp_server("127.0.0.1", 0) as server:
        port = server.local_address[1]
        gc.collect()
        objects, tasks = len(gc.get_objects()), tasks_under(root)
        async with AsyncExitStack() as stack:
            # As a program using trio sockets directly has them: a task
            # receiving on each.
            receivers = await stack.enter_async_context(trio.open_nursery())
            for _ in range(count):
                if plain:
                    sock = stack.enter_context(
                        trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    )
                    await sock.connect(("127.0.0.1", port))
                    receivers.start_soon(sock.recv, 2048)
                else:
                    await stack.enter_async_context(trioudp.open_udp_connection("127.0.0.1", port))
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            figures = {
                "objects_each": (len(gc.get_objects()) - objects) / count,
                "tasks_each": (tasks_under(root) - tasks) / count,
                "collection_ms": collection_ms(),
            }
            receivers.cancel_scope.cancel()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="what a client connection weighs")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="write the table here too")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    print(f"{args.count} at once       objects each  tasks each  full collection ms")
    for name, plain in (("plain trio socket", True), ("open_udp_connection", False)):
        row = trio.run(partial(weigh, args.count, plain=plain))
        print(
            f"{name:<22}{row['objects_each']:>13.1f}{row['tasks_each']:>12.1f}"
            f"{row['collection_ms']:>20.1f}"
        )
        rows.append({"system": name, "count": args.count, **row})
    if args.json is not None:
        args.json.write_text(json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
