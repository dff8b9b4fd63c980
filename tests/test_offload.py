"""UDP segmentation offload (GSO on send, GRO on receive) and its fallbacks."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import pytest
import trio

import trioudp
from trioudp._offload import (
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    gro_segment_size,
    gso_available,
    gso_runs,
    split_coalesced,
)

LOCAL = "127.0.0.1"


def _kernel_has_gso() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return gso_available(sock)


needs_gso = pytest.mark.skipif(
    not _kernel_has_gso(), reason="this kernel has no UDP GSO (Linux 4.18+ needed)"
)


def test_runs_are_equal_sized_with_a_shorter_last_one() -> None:
    assert list(gso_runs([100, 100, 100, 40])) == [(0, 4)]
    # A shorter datagram ends its run; a longer one starts a new run.
    assert list(gso_runs([100, 40, 100, 100])) == [(0, 2), (2, 4)]
    assert list(gso_runs([100, 100, 200, 200, 200])) == [(0, 2), (2, 5)]
    assert list(gso_runs([50])) == [(0, 1)]
    assert list(gso_runs([])) == []


def test_runs_keep_to_the_kernels_limits() -> None:
    many = list(gso_runs([10] * (GSO_MAX_SEGMENTS * 2 + 1)))
    assert [stop - start for start, stop in many] == [GSO_MAX_SEGMENTS, GSO_MAX_SEGMENTS, 1]
    big = 1200
    per_call = GSO_MAX_BYTES // big
    runs = list(gso_runs([big] * 100))
    assert all(stop - start <= per_call for start, stop in runs)
    assert all((stop - start) * big <= GSO_MAX_BYTES for start, stop in runs)
    assert runs[0] == (0, per_call)


def test_runs_never_mix_destinations_or_markings() -> None:
    keys = ["a", "a", "b", "b", "b", "a"]
    assert list(gso_runs([100] * 6, keys)) == [(0, 2), (2, 5), (5, 6)]


def test_coalesced_reads_split_at_the_segment_size() -> None:
    data = memoryview(bytes(range(250)))
    parts = [bytes(part) for part in split_coalesced(data, 250, 100)]
    assert parts == [bytes(range(100)), bytes(range(100, 200)), bytes(range(200, 250))]
    # No segment size, or one that covers the read: the read is one datagram.
    assert [bytes(p) for p in split_coalesced(data, 120, 0)] == [bytes(range(120))]
    assert [bytes(p) for p in split_coalesced(data, 120, 500)] == [bytes(range(120))]


def test_segment_size_is_read_from_the_gro_message_only() -> None:
    size = struct.pack("=i", 1200)
    assert gro_segment_size([(SOL_UDP, UDP_GRO, size)]) == 1200
    assert gro_segment_size([(SOL_UDP, UDP_SEGMENT, size)]) == 0
    assert gro_segment_size([(SOL_UDP, UDP_GRO, b"\x01")]) == 0
    assert gro_segment_size([]) == 0


async def _transfer(payloads: list[bytes], host: str = LOCAL, **options: Any) -> tuple[Any, Any]:
    """Send ``payloads`` from one server to another, one at a time (the
    receiver turns GRO on when the first large datagram arrives, so later ones
    may come coalesced); both ends' statistics."""
    async with (
        trioudp.open_udp_server(host, 0, **options) as receiver,
        trioudp.open_udp_server(host, 0, **options) as sender,
    ):
        for payload in payloads:
            await sender.send_to(receiver.local_address[:2], payload)
            with trio.fail_after(10):
                assert (await receiver.receive()).payload == payload
        return sender.statistics(), receiver.statistics()


@needs_gso
@pytest.mark.parametrize(
    "host",
    [
        LOCAL,
        pytest.param("::1", marks=pytest.mark.ipv6),
    ],
)
async def test_a_large_message_goes_in_few_system_calls_and_arrives_whole(host: str) -> None:
    payloads = [bytes([index]) * 200_000 + b"end" for index in range(3)]
    sent, received = await _transfer(payloads, host)
    fragments = sent.datagrams_sent
    assert fragments >= 3 * 170
    # Every full run of fragments went to the kernel as one GSO send.
    assert sent.datagrams_offloaded == fragments
    assert received.datagrams_received == fragments
    assert received.messages_delivered == 3
    assert received.datagrams_coalesced > 0


async def test_small_datagrams_never_turn_gro_on() -> None:
    sent, received = await _transfer([b"x" * 400] * 3 + [bytes(5000)] * 3, max_datagram_size=500)
    assert sent.datagrams_offloaded > 0
    assert received.datagrams_coalesced == 0


async def test_offload_off_sends_one_datagram_per_call() -> None:
    payloads = [b"x" * 50_000] * 2
    sent, received = await _transfer(payloads, offload=False)
    assert sent.datagrams_sent > 40
    assert sent.datagrams_offloaded == 0
    assert received.datagrams_coalesced == 0


class _RefusesSegmentation:
    """A socket whose device cannot segment (sendmsg with UDP_SEGMENT fails
    as it does on some drivers): everything else goes to the real socket."""

    def __init__(self, sock: socket.socket, error: int) -> None:
        self._sock = sock
        self._error = error
        self.refused = 0

    def sendmsg(self, buffers: Any, ancillary: Any = (), *rest: Any) -> int:
        if any(level == SOL_UDP and kind == UDP_SEGMENT for level, kind, _ in ancillary):
            self.refused += 1
            raise OSError(self._error, "segmentation refused")
        return self._sock.sendmsg(buffers, ancillary, *rest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@needs_gso
@pytest.mark.parametrize("reliable", [False, True], ids=["unreliable", "reliable"])
@pytest.mark.parametrize("error", [errno.EIO, errno.EINVAL])
async def test_a_device_that_refuses_segmentation_gets_one_datagram_per_call(
    reliable: bool, error: int
) -> None:
    async with (
        trioudp.open_udp_server(LOCAL, 0, reliable=reliable) as receiver,
        trioudp.open_udp_server(LOCAL, 0, reliable=reliable) as sender,
    ):
        refusing = _RefusesSegmentation(sender._transport._sock, error)
        sender._transport._sock = refusing  # type: ignore[assignment]
        payload = bytes(range(256)) * 400
        for _ in range(2):
            await sender.send_to(receiver.local_address, payload)
        with trio.fail_after(10):
            assert (await receiver.receive()).payload == payload
            assert (await receiver.receive()).payload == payload
        # Refused once, then never tried again; nothing was lost by it.
        assert refusing.refused == 1
        assert sender.statistics().datagrams_offloaded == 0
        assert sender.statistics().datagrams_send_dropped == 0


@needs_gso
async def test_an_address_the_kernel_refuses_does_not_turn_gso_off() -> None:
    """A GSO run to port 0 fails with EINVAL, as a run the device cannot
    segment does; sent alone, its first datagram fails too, so the address is
    at fault: the caller gets the error and GSO stays on. One bad send once
    turned segmentation off for the endpoint's whole life."""
    async with (
        trioudp.open_udp_server(LOCAL, 0) as receiver,
        trioudp.open_udp_server(LOCAL, 0) as sender,
    ):
        payload = bytes(range(256)) * 200
        # send_to() refuses port 0 itself now; this goes below that check.
        nowhere = sender._engine.destination((LOCAL, 0), trio.current_time())
        with pytest.raises(OSError, match=r"\[Errno 22\]"):
            await sender._send(nowhere, [payload], topic="", priority=None)
        before = sender.statistics().datagrams_offloaded
        await sender.send_to(receiver.local_address[:2], payload)
        with trio.fail_after(10):
            assert (await receiver.receive()).payload == payload
        assert sender.statistics().datagrams_offloaded - before >= 40


@needs_gso
async def test_reliable_engine_output_is_segmented_too() -> None:
    payload = b"r" * 300_000
    sent, received = await _transfer([payload], reliable=True)
    assert sent.datagrams_offloaded > 0
    assert received.messages_delivered == 1
