"""Path MTU discovery (issue 14, target 3; trioudp/_pmtu.py): a reliable
sender that has to fragment probes for larger datagrams and uses the largest
the path carries, never loses a message to a probe, and stays at
``max_datagram_size`` on a path (or towards a receiver) that takes no more."""

from __future__ import annotations

import errno
from typing import Any

import pytest
import trio
import trio.testing

import trioudp
from trioudp._frame import decode_frame_untrusted, encode_probe, probe_packet, sealer
from trioudp._pmtu import MAX_PROBES, PROBE_SIZES_IPV4, RAISE_INTERVAL, PathMtu
from trioudp.testing import FakeNetwork, Faults

SERVER = ("10.0.0.1", 5000)
MESSAGE = bytes(range(256)) * 1024  # 256 KiB


def test_each_acknowledged_probe_confirms_its_size_and_the_next_is_tried() -> None:
    path = PathMtu(1200, PROBE_SIZES_IPV4)
    assert path.probe_due() is None  # nothing was fragmented yet: nothing to gain
    path.wanted = True
    for packet, size in enumerate(PROBE_SIZES_IPV4):
        assert path.probe_due() == size
        path.sent(packet, timeout=1.0)
        assert path.probe_due() is None  # one at a time
        assert path.acknowledged([(packet + 1, packet + 5)]) == -1
        assert path.acknowledged([(packet, packet)]) == packet
        assert path.size == size
    assert path.probe_due() is None
    assert not path.searching


def test_a_size_lost_max_probes_times_stops_the_search_below_it() -> None:
    path = PathMtu(1200, PROBE_SIZES_IPV4)
    path.wanted = True
    path.sent(0, timeout=1.0)
    assert path.acknowledged([(0, 0)]) == 0
    for attempt in range(MAX_PROBES):
        assert path.probe_due() == 8972
        path.sent(attempt + 1, timeout=2.0 + attempt)
        path.on_timer(1.5 + attempt)  # not yet
        assert path.probe_due() is None
        path.on_timer(2.0 + attempt)
    assert path.probe_due() is None
    assert path.size == 1472


def test_a_probe_the_kernel_refuses_ends_the_search_and_nothing_else() -> None:
    path = PathMtu(1200, PROBE_SIZES_IPV4)
    path.wanted = True
    path.sent(0, timeout=1.0)
    assert not path.refused(1200)  # not the probe: a data datagram
    assert path.refused(1472)
    assert path.size == 1200
    assert path.probe_due() is None


@pytest.mark.parametrize("key", [None, b"k" * 32])
def test_a_probe_is_a_ping_of_exactly_its_size_carrying_a_packet_number(
    key: bytes | None,
) -> None:
    datagram = encode_probe(7, 3, 2**32 + 5, 1472, sealer(key), authenticated=key is not None)
    assert len(datagram) == 1472
    frame = decode_frame_untrusted(datagram, key)
    assert (frame.session, frame.sequence) == (7, 3)
    assert probe_packet(frame.payload) == 5
    assert probe_packet(b"") is None  # an ordinary PING
    assert probe_packet(b"\x02\x00\x00\x00\x05") is None  # a body of another kind


async def exchange(
    network: FakeNetwork, count: int, *, probe_path_mtu: bool = True
) -> tuple[trioudp.PeerStatistics, list[bytes]]:
    """Send ``count`` reliable messages of 256 KiB to a server on ``network``:
    the client's statistics after they are all acknowledged and 30 s more
    (for the probes to run their course), and what arrived."""
    got: list[bytes] = []
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER, reliable=True) as server,
            trio.open_nursery() as nursery,
        ):

            async def sink() -> None:
                async for message in server:
                    got.append(message.payload)

            nursery.start_soon(sink)
            async with trioudp.open_udp_connection(
                *SERVER, reliable=True, probe_path_mtu=probe_path_mtu
            ) as client:
                for _ in range(count):
                    await client.send(MESSAGE)
                await client.flush()
                await trio.sleep(30)  # on the autojump clock
                stats = client.statistics()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    return stats, got


async def test_a_path_that_carries_anything_gets_the_largest_datagrams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stats, got = await exchange(FakeNetwork(), 4)
    assert got == [MESSAGE] * 4
    assert stats.max_datagram_size == 65507
    assert stats.pings_sent == 3  # a probe of each size, each acknowledged at once
    # The first message went in 1200-byte fragments (225 of them), or some of
    # it; the rest, queued meanwhile but not yet sent, was cut again to 65507
    # bytes once the probes confirmed it: 5 fragments a message.
    assert stats.datagrams_sent < 225 + 4 * 5 + 3


@pytest.mark.parametrize("refused_at_once", [False, True])
async def test_a_1500_byte_path_stops_the_search_at_1472_and_loses_nothing(
    autojump_clock: trio.testing.MockClock, refused_at_once: bool
) -> None:
    # Larger datagrams are lost on the way, or (the interface's own MTU)
    # refused by the kernel with EMSGSIZE: a probe that does not fit ends the
    # search, and never fails the peer.
    network = FakeNetwork(faults=Faults(mtu=1472, mtu_error=refused_at_once))
    stats, got = await exchange(network, 4)
    assert got == [MESSAGE] * 4
    assert stats.max_datagram_size == 1472
    assert stats.messages_failed == 0
    # 1472 confirmed; 8972 lost MAX_PROBES times, or refused once.
    assert stats.pings_sent == 1 + (1 if refused_at_once else MAX_PROBES)
    assert stats.datagrams_retransmitted == 0


async def test_without_probes_acknowledged_the_sender_stays_at_max_datagram_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A path that drops everything larger than 1200 bytes, as well as a
    # receiver that predates probes (it ignores a PING's body): the probes go
    # unanswered, the data never waits on them.
    stats, got = await exchange(FakeNetwork(faults=Faults(mtu=1200)), 3)
    assert got == [MESSAGE] * 3
    assert stats.max_datagram_size == 1200
    assert stats.pings_sent == MAX_PROBES
    assert stats.messages_failed == 0


async def test_probing_turned_off_sends_no_probe(autojump_clock: trio.testing.MockClock) -> None:
    stats, got = await exchange(FakeNetwork(), 2, probe_path_mtu=False)
    assert got == [MESSAGE] * 2
    assert (stats.max_datagram_size, stats.pings_sent) == (1200, 0)


async def test_small_messages_never_probe(autojump_clock: trio.testing.MockClock) -> None:
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER, reliable=True),
            trioudp.open_udp_connection(*SERVER, reliable=True) as client,
        ):
            for number in range(100):
                await client.send(b"%d" % number)
            await client.flush()
            stats = client.statistics()
    assert (stats.max_datagram_size, stats.pings_sent) == (1200, 0)


async def test_on_loopback_a_reliable_sender_finds_the_loopbacks_mtu() -> None:
    got: list[int] = []
    async with (
        trioudp.open_udp_server("127.0.0.1", 0, reliable=True) as server,
        trio.open_nursery() as nursery,
    ):

        async def sink() -> None:
            async for message in server:
                got.append(len(message.payload))

        nursery.start_soon(sink)
        async with trioudp.open_udp_connection(
            "127.0.0.1", server.local_address[1], reliable=True
        ) as client:
            for _ in range(3):
                await client.send(MESSAGE)
            with trio.fail_after(10):
                await client.flush()
            stats = client.statistics()
        nursery.cancel_scope.cancel()
    assert got == [len(MESSAGE)] * 3
    assert stats.max_datagram_size == 65507
    assert stats.messages_failed == 0


def test_the_engine_takes_a_refused_probe_for_the_end_of_the_search() -> None:
    # EMSGSIZE for a datagram of the probe's size ends the search and does not
    # fail the peer; for any other, it stays what it was: permanent.
    from trioudp import Config
    from trioudp._engine import Engine

    engine = Engine(Config(reliable=True), now=0.0, connected_to=SERVER)
    peer = engine.client_peer
    assert peer is not None
    engine.queue(peer, MESSAGE, 0.0)
    engine.datagrams_to_send(0.0)
    sender = peer.sender
    assert sender is not None
    sender.path.sent(10**6, timeout=1.0)  # as if its probe of 1472 went
    assert not engine.send_failed(SERVER, errno.EMSGSIZE, 1, 0.0, permanent=True, size=1472)
    assert peer.lost is None
    assert not sender.path.searching
    assert engine.send_failed(SERVER, errno.EMSGSIZE, 1, 0.0, permanent=True, size=1200)
    assert peer.lost is not None


def test_a_search_stopped_by_lost_probes_starts_again_with_later_traffic() -> None:
    path = PathMtu(1200, PROBE_SIZES_IPV4)
    path.wanted = True
    for attempt in range(MAX_PROBES):
        path.sent(attempt, timeout=float(attempt + 1))
        path.on_timer(float(attempt + 1))
    assert path.probe_due() is None  # stopped at 1200, for RAISE_INTERVAL
    path.on_timer(MAX_PROBES + RAISE_INTERVAL - 1)
    assert path.probe_due() is None
    path.on_timer(MAX_PROBES + RAISE_INTERVAL)
    assert path.probe_due() is None  # not on an idle session ...
    path.wanted = True  # ... but once a message is cut into fragments again
    assert path.probe_due() == 1472


def test_a_larger_max_datagram_size_than_1200_is_never_probed_beyond() -> None:
    # As on a real socket (test_only_a_reliable_socket_that_probes_...): a
    # size chosen for a known path is kept, on a fake network too.
    from trioudp import Config
    from trioudp._budget import Budget
    from trioudp._peer import Peer
    from trioudp._reliable import Sender

    for size, probes in [(1200, True), (1000, True), (1400, False)]:
        config = Config(reliable=True, max_datagram_size=size)
        sender = Sender.for_peer(Peer(("10.0.0.1", 5000), 1, 0.0), config, None, Budget(config))
        sender.path.wanted = True
        assert (sender.path.probe_due() is not None) is probes


def test_a_peer_at_an_ipv4_mapped_address_is_probed_with_ipv4_sizes() -> None:
    from trioudp import Config
    from trioudp._budget import Budget
    from trioudp._peer import Peer
    from trioudp._reliable import Sender

    config = Config(reliable=True)
    cases: list[tuple[trioudp.Address, int]] = [
        (("::ffff:10.0.0.1", 5000, 0, 0), 1472),
        (("fd00::1", 5000, 0, 0), 1452),
        (("10.0.0.1", 5000), 1472),
    ]
    for address, first in cases:
        sender = Sender.for_peer(Peer(address, 1, 0.0), config, None, Budget(config))
        sender.path.wanted = True
        assert sender.path.probe_due() == first


async def test_a_message_is_not_cut_again_once_a_fragment_of_it_went(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server restarts between two messages. Of the next one's first
    # transmission (3 fragments of 1200 bytes and a probe of 1472) the link
    # loses fragments 1 and 2; the new server's first ACK, which confirms the
    # probe, has a new receiver id. The message was once cut again to 1472 then
    # (its fragments looked unsent after the restart), the server mixed the
    # two cuts and dropped it as malformed having acknowledged every fragment:
    # flush() never returned.
    network = FakeNetwork(faults=Faults(delay=0.01))
    message = bytes(range(256)) * 11 + b"Z" * 184  # 3 fragments at 1200 or at 1472
    lose = {"armed": False, "seen": 0}
    transmit = FakeNetwork._transmit

    def lossy(self: FakeNetwork, sender: object, data: bytes, destination: object) -> None:
        if lose["armed"] and tuple(destination)[:2] == SERVER and len(data) in (1200, 708):  # type: ignore[arg-type]
            lose["seen"] += 1
            if lose["seen"] in (2, 3):
                return
        transmit(self, sender, data, destination)  # type: ignore[arg-type]

    monkeypatch.setattr(FakeNetwork, "_transmit", lossy)
    got: list[bytes] = []
    with network.installed():
        async with trioudp.open_udp_connection(*SERVER, reliable=True) as client:
            async with trioudp.open_udp_server(*SERVER, reliable=True) as first:
                await client.send(b"hello")
                got.append((await first.receive()).payload)
                await client.flush()
            async with trioudp.open_udp_server(*SERVER, reliable=True) as second:
                lose["armed"] = True
                await client.send(message)
                with trio.fail_after(30):
                    await client.flush()
                    got.append((await second.receive()).payload)
                stats = second.statistics()
    assert got == [b"hello", message]
    assert stats.datagrams_malformed == 0
    assert lose["seen"] >= 3  # the losses happened


async def test_a_replayed_ack_of_a_probe_moves_no_keyed_peer(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a key a peer follows its session to a new address (NAT rebinding)
    # on an ACK that acknowledges something new. An ACK that acknowledged only
    # a probe once stayed "new" for good: replayed from anywhere, it moved the
    # server's peer there and held it.
    attacker = ("10.6.6.6", 6666)
    key = b"k" * 32
    recorded: list[bytes] = []
    transmit = FakeNetwork._transmit

    def tap(self: FakeNetwork, sender: object, data: bytes, destination: object) -> None:
        if tuple(destination)[:2] == SERVER:  # type: ignore[arg-type]
            recorded.append(bytes(data))
        transmit(self, sender, data, destination)  # type: ignore[arg-type]

    monkeypatch.setattr(FakeNetwork, "_transmit", tap)
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER, reliable=True, key=key) as server,
            trioudp.open_udp_connection(*SERVER, reliable=True, key=key) as client,
        ):
            await client.send(b"hello")
            address = (await server.receive()).address
            await server.send_to(address, b"x" * 1500)  # fragmented: the server probes
            assert len((await client.receive()).payload) == 1500
            await trio.sleep(30)  # the probes run their course
            assert server.connections[address].statistics().max_datagram_size == 65507
            await trio.sleep(2)  # the client has been quiet a while
            for datagram in reversed(recorded):
                network.inject(datagram, attacker, SERVER)
                await trio.testing.wait_all_tasks_blocked()
            peers = set(server.connections)
    assert address in peers
    assert attacker not in peers


@pytest.mark.parametrize(
    ("options", "probed"),
    [
        ({"reliable": True}, True),
        ({"reliable": True, "probe_path_mtu": False}, False),
        # A larger max_datagram_size was chosen for a known path: kept, and
        # IP may fragment it as before (no Don't Fragment).
        ({"reliable": True, "max_datagram_size": 1400}, False),
        ({"reliable": False}, False),
    ],
)
async def test_only_a_reliable_socket_that_probes_forbids_fragmentation(
    options: dict[str, Any], probed: bool
) -> None:
    import socket
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("path MTU probing needs Linux's IP_MTU_DISCOVER")
    async with trioudp.open_udp_server("127.0.0.1", 0, **options) as server:
        mode = server.socket.getsockopt(socket.IPPROTO_IP, 10)  # IP_MTU_DISCOVER
        assert (mode == 3) is probed  # IP_PMTUDISC_PROBE
        if options["reliable"]:
            assert server._config.probe_path_mtu is probed


async def test_bundles_stay_within_max_datagram_size_once_the_path_takes_more(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A receiver takes a bundle whole or not at all: 60 KB bundles of 30 KB
    # messages were refused by a small budget and sent again and again.
    sizes: list[tuple[int, bool]] = []
    transmit = FakeNetwork._transmit

    def tap(self: FakeNetwork, sender: object, data: bytes, destination: object) -> None:
        if tuple(destination)[:2] == SERVER:  # type: ignore[arg-type]
            sizes.append((len(data), bool(data[3] & 0x40)))  # BUNDLE
        transmit(self, sender, data, destination)  # type: ignore[arg-type]

    monkeypatch.setattr(FakeNetwork, "_transmit", tap)
    with FakeNetwork().installed():
        async with (
            trioudp.open_udp_server(*SERVER, reliable=True) as server,
            trioudp.open_udp_connection(*SERVER, reliable=True) as client,
        ):
            await client.send(MESSAGE)
            await client.flush()
            await trio.sleep(30)
            assert client.statistics().max_datagram_size == 65507
            await client.send_batch([b"m" * 100] * 200)
            await client.flush()
            taken = await server.receive_batch(1000)
    assert any(bundle for _, bundle in sizes)
    assert all(size <= 1200 for size, bundle in sizes if bundle)
    assert len(taken) == 201
