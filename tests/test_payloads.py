"""Payloads are sent byte by byte, whatever object carries the bytes."""

from __future__ import annotations

from array import array

import pytest
import trio
import trio.testing

import trioudp
from trioudp.testing import FakeNetwork, Faults

SERVER = ("10.0.0.1", 5000)


def payloads() -> list[object]:
    return [
        array("I", range(1000)),  # 4,000 bytes in 1,000 items of 4
        memoryview(bytes(range(256)) * 10).cast("B", (40, 64)),  # 2-D
        array("d", [0.5, -1.25]),
        bytearray(b"plain"),
        memoryview(b"a view"),
        b"",
    ]


def as_bytes(payload: object) -> bytes:
    return memoryview(payload).tobytes()  # type: ignore[arg-type]


@pytest.mark.parametrize("reliable", [False, True], ids=["unreliable", "reliable"])
@pytest.mark.parametrize("batch", [False, True], ids=["send", "send_batch"])
async def test_any_contiguous_buffer_is_sent_as_its_bytes(
    autojump_clock: trio.testing.MockClock, reliable: bool, batch: bool
) -> None:
    """An array of 4-byte items is 4,000 bytes, not 1,000 items: it is cut into
    datagrams by byte (a link that refuses anything over max_datagram_size
    carries every one) and arrives as exactly those bytes."""
    network = FakeNetwork(faults=Faults(mtu=1200, mtu_error=True))
    sent = payloads()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER, reliable=reliable) as server,
            trioudp.open_udp_connection(*SERVER, reliable=reliable) as conn,
        ):
            if batch:
                await conn.send_batch(sent)  # type: ignore[arg-type]
            else:
                for payload in sent:
                    await conn.send(payload)  # type: ignore[arg-type]
            with trio.fail_after(5):
                received = [(await server.receive()).payload for _ in sent]
    assert received == [as_bytes(payload) for payload in sent]
    assert network.statistics.too_big == 0


async def test_a_buffer_that_is_not_contiguous_is_refused_by_type(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER) as server,
            trioudp.open_udp_connection(*SERVER) as conn,
        ):
            with pytest.raises(TypeError, match=r"memoryview.*contiguous|contiguous.*memoryview"):
                await conn.send(memoryview(b"abcdef")[::2])
            with pytest.raises(TypeError, match="got str; encode text first"):
                await conn.send("text")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="got int"):
                await conn.send_batch([b"fine", 7])  # type: ignore[list-item]
            await conn.send(b"still usable")
            with trio.fail_after(1):
                assert (await server.receive()).payload == b"still usable"
            assert server.statistics().messages_delivered == 1  # nothing of the refused went
