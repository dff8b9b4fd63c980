"""Handlers for tests/test_workers.py's worker processes, which import them by
name (a test module's own functions would drag pytest into every worker)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import trioudp

if os.environ.get("TRIOUDP_TEST_BROKEN_WORKER"):  # a worker that cannot start
    raise RuntimeError("this worker cannot start")

if TYPE_CHECKING:
    from trioudp import Connection


async def echo(connection: Connection) -> None:
    """Answer every message with this worker's index, a colon and the message;
    a message b"crash" makes the worker fail."""
    async for message in connection:
        if message.payload == b"crash":
            raise RuntimeError("crashing on purpose")
        await message.reply(b"%d:" % trioudp.worker_index() + message.payload)  # type: ignore[str-format]
