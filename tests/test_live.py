"""The registry of open endpoints that monitoring reads (trioudp.prometheus)."""

from __future__ import annotations

import trio

import trioudp
from trioudp._endpoint import live_endpoints


def endpoints() -> list[object]:
    return [endpoint for endpoint, _ in live_endpoints()]


async def test_open_endpoints_are_listed_oldest_first_until_closed() -> None:
    assert endpoints() == []
    async with trioudp.open_udp_server("127.0.0.1", 0) as server:
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            assert endpoints() == [server, conn._endpoint]
            token = trio.lowlevel.current_trio_token()
            assert all(each is token for _, each in live_endpoints())
        assert endpoints() == [server]
        await server.aclose()
        assert endpoints() == []
    assert endpoints() == []


async def test_a_block_that_fails_leaves_nothing_listed() -> None:
    try:
        async with trioudp.open_udp_server("127.0.0.1", 0):
            raise KeyError("boom")
    except KeyError:
        pass
    assert endpoints() == []


async def test_another_thread_reads_statistics_through_the_token() -> None:
    async with trioudp.open_udp_server("127.0.0.1", 0) as server:
        seen: list[int] = []

        def monitor() -> None:
            for endpoint, token in live_endpoints():
                stats = trio.from_thread.run_sync(endpoint.statistics, trio_token=token)
                seen.append(stats.datagrams_received)

        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            await conn.send(b"hello")
            await server.receive()
            await trio.to_thread.run_sync(monitor)
        assert seen == [1, 0]
