"""trioudp.testing's fake network, and the whole stack on bad networks."""

from __future__ import annotations

import errno
import hashlib
import itertools
import random

import pytest
import trio
import trio.testing

import trioudp
from trioudp.testing import CLEAN, HARSH, MODERATE, FakeNetwork, Faults, open_chaos_proxy

SERVER = ("10.0.0.1", 5000)
PROFILES = {"clean": CLEAN, "moderate": MODERATE, "harsh": HARSH}
MAXIMUM = 64 * 1024
#: 0, 1, one byte short of a full datagram, full, one over (two fragments), the maximum.
SIZES = [0, 1, 1179, 1180, 1181, MAXIMUM]


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def exchange(
    network: FakeNetwork, count: int, *, ordered: bool, seed: int
) -> tuple[list[bytes], list[trioudp.Message], trioudp.EndpointStatistics]:
    """A client sends ``count`` messages of every size to a server over
    ``network``; returns what was sent and what arrived."""
    rng = random.Random(seed)
    sent = [rng.randbytes(SIZES[i % len(SIZES)]) for i in range(count)]
    received: list[trioudp.Message] = []
    options = {"max_message_size": MAXIMUM, "ordered": ordered}
    with network.installed():
        async with trioudp.open_udp_server(*SERVER, **options) as server:  # type: ignore[arg-type]
            async with trio.open_nursery() as nursery:

                async def collect() -> None:
                    async for message in server:
                        received.append(message)

                nursery.start_soon(collect)
                async with trioudp.open_udp_connection(*SERVER, **options) as conn:  # type: ignore[arg-type]
                    for payload in sent:
                        await conn.send(payload)
                        await trio.sleep(0.001)
                await trio.sleep(10)  # every timeout has run out by then
                nursery.cancel_scope.cancel()
            stats = server.statistics()
    return sent, received, stats


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("profile", list(PROFILES))
async def test_bad_networks_never_break_duplicate_or_reorder_messages(
    autojump_clock: trio.testing.MockClock, profile: str, seed: int
) -> None:
    network = FakeNetwork(seed=seed, faults=PROFILES[profile])
    sent, received, stats = await exchange(network, 60, ordered=True, seed=seed)
    sequences = [message.sequence for message in received if message.sequence is not None]
    assert len(sequences) == len(received)
    assert len(set(sequences)) == len(sequences)  # no duplicates
    assert sequences == sorted(sequences)  # in order
    for message in received:
        assert message.sequence is not None
        assert digest(message.payload) == digest(sent[message.sequence])
    assert stats.datagrams_received == stats.datagrams_accounted
    assert stats.datagrams_pending == 0
    if profile == "clean":
        assert len(received) == len(sent)
    else:
        assert network.statistics.lost > 0
        assert len(received) > len(sent) // 4
    if profile == "harsh":
        assert stats.datagrams_duplicate > 0
        assert stats.datagrams_crc_error + stats.datagrams_malformed > 0


@pytest.mark.parametrize("seed", range(10))
async def test_unordered_delivery_on_a_harsh_network(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    network = FakeNetwork(seed=seed, faults=HARSH)
    sent, received, stats = await exchange(network, 60, ordered=False, seed=seed)
    sequences = [message.sequence for message in received]
    assert len(sequences) == len(set(sequences))
    for message in received:
        assert message.sequence is not None
        assert digest(message.payload) == digest(sent[message.sequence])
    assert stats.datagrams_received == stats.datagrams_accounted


async def test_the_same_seed_gives_the_same_run(autojump_clock: trio.testing.MockClock) -> None:
    runs: list[list[tuple[int | None, bytes]]] = []
    for _ in range(2):
        _sent, received, _stats = await exchange(
            FakeNetwork(seed=7, faults=HARSH), 30, ordered=True, seed=7
        )
        runs.append([(m.sequence, digest(m.payload)) for m in received])
    assert runs[0] == runs[1]


async def test_closed_port_is_reported_as_unreachable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_connection("10.0.0.9", 7) as conn:
            await conn.send(b"anyone?")
            with trio.fail_after(1), pytest.raises(trioudp.UnreachableError):
                await conn.receive()
    assert network.statistics.unreachable == 1


async def test_mtu_drops_or_refuses(autojump_clock: trio.testing.MockClock) -> None:
    network = FakeNetwork(faults=Faults(mtu=600))
    with network.installed():
        async with trioudp.open_udp_server(*SERVER) as server:
            async with trioudp.open_udp_connection(*SERVER, max_datagram_size=500) as small:
                await small.send(b"s" * 2000)  # fragments of 500 bytes pass
                with trio.fail_after(1):
                    assert len((await server.receive()).payload) == 2000
            async with trioudp.open_udp_connection(*SERVER) as big:
                await big.send(b"b" * 1000)  # one 1020-byte datagram: lost on the way
                await trio.testing.wait_all_tasks_blocked()
                assert network.statistics.too_big == 1
        network.set_faults(Faults(mtu=600, mtu_error=True))
        async with trioudp.open_udp_connection(*SERVER) as refused:
            with pytest.raises(OSError, match="lower max_datagram_size"):
                await refused.send(b"b" * 1000)


async def test_rate_limit_and_bursty_loss(autojump_clock: trio.testing.MockClock) -> None:
    network = FakeNetwork(seed=3, faults=Faults(rate=10_000))
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER) as server,
            trioudp.open_udp_connection(*SERVER) as conn,
        ):
            for _ in range(30):
                await conn.send(b"x" * 980)  # 30 kB at once through 10 kB/s
            await trio.testing.wait_all_tasks_blocked()
            assert 8 <= server.statistics().messages_delivered <= 11
            assert network.statistics.over_rate >= 19
    bursty = FakeNetwork(seed=4, faults=Faults(burst_start=0.05, burst_end=0.2))
    with bursty.installed():
        async with (
            trioudp.open_udp_server(*SERVER, ordered=False) as server,
            trioudp.open_udp_connection(*SERVER) as conn,
        ):
            for i in range(400):
                await conn.send(b"%d" % i)
            await trio.testing.wait_all_tasks_blocked()
            delivered = [m.sequence or 0 for m in await server.receive_batch(1000)]
    gaps = [b - a - 1 for a, b in itertools.pairwise(delivered) if b - a > 1]
    assert bursty.statistics.lost > 0
    assert max(gaps) >= 3  # losses come in bursts


async def test_per_link_faults(autojump_clock: trio.testing.MockClock) -> None:
    network = FakeNetwork()
    network.set_faults(Faults(loss=1.0), source="10.0.0.66")
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER) as server,
            trioudp.open_udp_connection(*SERVER, local_address=("10.0.0.66", 0)) as cut,
            trioudp.open_udp_connection(*SERVER, local_address=("10.0.0.2", 0)) as fine,
        ):
            await cut.send(b"lost")
            await fine.send(b"arrives")
            with trio.fail_after(1):
                message = await server.receive()
            assert (message.payload, message.address[0]) == (b"arrives", "10.0.0.2")


async def test_multicast_and_broadcast_on_the_fake_network(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_multicast("239.1.2.3", 6000) as a,
            trioudp.open_multicast("239.1.2.3", 6000) as b,
            trioudp.open_multicast("239.9.9.9", 6000) as other,
        ):
            await a.send(b"to the group", topic="t")
            with trio.fail_after(1):
                message = await b.receive()
            assert (message.payload, message.topic) == (b"to the group", "t")
            await trio.testing.wait_all_tasks_blocked()
            assert other.statistics().datagrams_received == 0
            assert a.statistics().datagrams_own == 1
        async with trioudp.open_broadcast(6001) as x, trioudp.open_broadcast(6001) as y:
            await x.send(b"hello lan")
            with trio.fail_after(1):
                assert (await y.receive()).payload == b"hello lan"


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError, match="loss must be a probability from 0 to 1"):
        Faults(loss=1.5)
    with pytest.raises(ValueError, match="delay must be a number of seconds"):
        Faults(delay=-1)
    with pytest.raises(ValueError, match="mtu must be a positive number"):
        Faults(mtu=0)


@pytest.mark.parametrize("refusals", [1, 3, 50])
async def test_full_send_buffers_are_waited_out(
    autojump_clock: trio.testing.MockClock, refusals: int
) -> None:
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER) as server,
            trioudp.open_udp_connection(*SERVER) as conn,
        ):
            network.refuse_sends(refusals)  # EAGAIN: wait until writable
            start = trio.current_time()
            await conn.send(b"x" * 3000)  # three fragments
            with trio.fail_after(1):
                assert len((await server.receive()).payload) == 3000
            assert trio.current_time() - start == pytest.approx(refusals * 0.001, abs=1e-6)


async def test_no_buffers_backs_off_then_drops(autojump_clock: trio.testing.MockClock) -> None:
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_udp_server(*SERVER) as server,
            trioudp.open_udp_connection(*SERVER) as conn,
        ):
            network.refuse_sends(3, errno.ENOBUFS)
            start = trio.current_time()
            await conn.send(b"after a short wait")
            assert trio.current_time() - start == pytest.approx(0.001 + 0.002 + 0.004)
            with trio.fail_after(1):
                assert (await server.receive()).payload == b"after a short wait"
            network.refuse_sends(100, errno.ENOBUFS)  # never any buffer: give up
            start = trio.current_time()
            await conn.send(b"dropped")
            assert trio.current_time() - start == pytest.approx(0.511)
            assert conn.statistics().datagrams_send_dropped == 1
            network._refusals.clear()
            await conn.send(b"fine again")
            with trio.fail_after(1):
                assert (await server.receive()).payload == b"fine again"


async def test_testing_tools_check_their_arguments_at_once() -> None:
    for bad in (None, {"loss": 0.1}, 0.1):
        with pytest.raises(TypeError, match=r"faults must be a trioudp\.testing\.Faults"):
            FakeNetwork(faults=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"faults must be a trioudp\.testing\.Faults"):
            FakeNetwork().set_faults(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"faults must be a trioudp\.testing\.Faults"):
            async with open_chaos_proxy(("127.0.0.1", 9), faults=bad):  # type: ignore[arg-type]
                pass
    with pytest.raises(TypeError, match="mtu_error"):
        Faults(mtu_error="no")  # type: ignore[arg-type]
    network = FakeNetwork()
    with pytest.raises(TypeError, match="error must be an errno"):
        network.refuse_sends(1, error="EAGAIN")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="count must be a whole number"):
        network.refuse_sends(-1)
    for payload in (5, "x"):
        with pytest.raises(TypeError, match="payload must be bytes-like"):
            network.inject(payload, ("10.0.0.9", 1), ("10.0.0.1", 5000))  # type: ignore[arg-type]
    for target in ("127.0.0.1:9", ("127.0.0.1",), ("127.0.0.1", 0)):
        with pytest.raises((TypeError, ValueError), match="target"):
            async with open_chaos_proxy(target):  # type: ignore[arg-type]
                pass
    with pytest.raises(OSError, match="cannot reach target"):
        async with open_chaos_proxy(("::1", 9)):
            pass
