"""Authentication: key= puts a BLAKE2b tag on every frame."""

from __future__ import annotations

import itertools
import secrets
from typing import Any

import pytest
import trio
import trio.testing
from sansio import messages

import trioudp
from trioudp import Config
from trioudp._engine import Engine
from trioudp._events import PeerMoved
from trioudp._frame import (
    KIND_PING,
    TAG_SIZE,
    BadFrame,
    decode_frame_untrusted,
    encode_control,
    encode_message,
    sealer,
)
from trioudp._keys import check_key, keyed_session_id
from trioudp._peers import RESTART_QUIET
from trioudp._reasons import DropReason
from trioudp.testing import FakeNetwork

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SERVER = ("10.0.0.1", 5000)
A = ("10.0.0.2", 6000)


def session(epoch: int, low: int = 1) -> int:
    return epoch << 32 | low


def test_tag_round_trip_and_every_bit_flip_is_refused() -> None:
    (frame,) = encode_message(session(100), 5, b"signed payload", 1200, key=KEY)
    assert len(frame) == 16 + len(b"signed payload") + TAG_SIZE
    decoded = decode_frame_untrusted(frame, KEY)
    assert (bytes(decoded.payload), decoded.sequence) == (b"signed payload", 5)
    for bit in range(len(frame) * 8):
        damaged = bytearray(frame)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BadFrame):
            decode_frame_untrusted(bytes(damaged), KEY)


@pytest.mark.parametrize(
    ("frame_key", "receiver_key", "reason"),
    [
        (None, KEY, "not authenticated"),
        (OTHER_KEY, KEY, "tag mismatch"),
        (KEY, None, "a key this endpoint does not have"),
    ],
)
def test_frames_without_the_right_key_are_refused(
    frame_key: bytes | None, receiver_key: bytes | None, reason: str
) -> None:
    (frame,) = encode_message(session(100), 0, b"x", 1200, key=frame_key)
    with pytest.raises(BadFrame, match=reason) as info:
        decode_frame_untrusted(frame, receiver_key)
    assert info.value.reason is DropReason.UNAUTHENTICATED


def keyed_engine() -> Engine:
    return Engine(Config(), now=0.0, key=KEY)


def delivered(engine: Engine, frames: list[bytes]) -> list[bytes]:
    for frame in frames:
        engine.receive_datagram(frame, A, 0.0)
    return [message.payload for message in messages(engine)]


def test_a_replayed_older_session_is_stale() -> None:
    engine = keyed_engine()
    old = [encode_message(session(100), i, b"old %d" % i, 1200, key=KEY)[0] for i in range(3)]
    new = [encode_message(session(200), i, b"new %d" % i, 1200, key=KEY)[0] for i in range(3)]
    assert delivered(engine, old) == [b"old 0", b"old 1", b"old 2"]
    assert delivered(engine, new) == [b"new 0", b"new 1", b"new 2"]
    # Played back: refused, even once more sessions have come and gone.
    for epoch in range(201, 210):
        delivered(engine, [encode_message(session(epoch), 0, b"later", 1200, key=KEY)[0]])
    assert delivered(engine, old + new) == []
    stats = engine.statistics()
    assert stats.datagrams_stale_session == 6
    assert stats.datagrams_received == stats.datagrams_accounted


def test_replays_within_a_session_are_duplicates_or_late() -> None:
    engine = Engine(Config(reorder_window=4), now=0.0, key=KEY)
    frames = [encode_message(session(100), i, b"%d" % i, 1200, key=KEY)[0] for i in range(10)]
    assert len(delivered(engine, frames)) == 10
    assert delivered(engine, frames) == []
    stats = engine.statistics()
    assert (stats.datagrams_duplicate, stats.datagrams_late) == (4, 6)


async def test_keyed_endpoints_talk_and_strangers_are_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = FakeNetwork()
    with network.installed():
        async with trioudp.open_udp_server(*SERVER, key=KEY) as server:
            async with trioudp.open_udp_connection(*SERVER, key=KEY) as friend:
                await friend.send(b"x" * 5000, topic="big")
                with trio.fail_after(1):
                    message = await server.receive()
                assert (len(message.payload), message.topic) == (5000, "big")
                await message.reply(b"welcome")
                with trio.fail_after(1):
                    assert (await friend.receive()).payload == b"welcome"
            for stranger_key in (None, OTHER_KEY):
                async with trioudp.open_udp_connection(*SERVER, key=stranger_key) as stranger:
                    await stranger.send(b"let me in")
                    await stranger.send(b"y" * 5000)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.WouldBlock):
                server.receive_nowait()
            stats = server.statistics()
    assert stats.datagrams_unauthenticated == 2 * (1 + 5)
    assert stats.messages_delivered == 1
    assert stats.datagrams_received == stats.datagrams_accounted


async def test_keyed_multicast(autojump_clock: trio.testing.MockClock) -> None:
    network = FakeNetwork()
    with network.installed():
        async with (
            trioudp.open_multicast("239.1.1.1", 7000, key=KEY) as sender,
            trioudp.open_multicast("239.1.1.1", 7000, key=KEY) as member,
            trioudp.open_multicast("239.1.1.1", 7000) as outsider,
        ):
            await sender.send(b"for members")
            with trio.fail_after(1):
                assert (await member.receive()).payload == b"for members"
            await trio.testing.wait_all_tasks_blocked()
            assert outsider.statistics().datagrams_unauthenticated == 1


@pytest.mark.parametrize(
    ("key", "error", "message"),
    [
        (b"short", ValueError, r"key must be 16 to 64 bytes, got 5"),
        (b"x" * 65, ValueError, r"got 65: a random secret"),
        ("text key of enough length", TypeError, r"key must be bytes-like .* got str"),
        # bytes(32) would have made 32 zero bytes of an int: no secret at all.
        (32, TypeError, r"key must be bytes-like .* got int"),
        (bytes(32), ValueError, r"key is all zero bytes"),
        (None.__class__, TypeError, r"got type"),
    ],
    ids=["short", "long", "str", "int", "zeros", "a-type"],
)
async def test_bad_keys(key: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        async with trioudp.open_udp_server("127.0.0.1", 0, key=key):  # type: ignore[arg-type]
            pass
    with pytest.raises(error, match=message):
        async with trioudp.open_udp_connection("127.0.0.1", 9, key=key):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="raw mode"):
        async with trioudp.open_udp_server(
            "127.0.0.1", 0, key=secrets.token_bytes(32), framing=False
        ):
            pass


def test_a_peer_whose_clock_went_back_is_served_again_within_idle_timeout() -> None:
    """With a key, a session older by its clock than the one a server has is
    refused as a replay. A client that restarted with its clock 5 s behind
    was locked out for as long as it kept sending (its refused frames kept the
    old session alive); now only accepted frames do, and it is served once the
    old session has been silent for idle_timeout."""
    key = secrets.token_bytes(32)
    config = Config(idle_timeout=30.0)
    server = Engine(config, now=0.0, key=key)
    client_address = ("10.0.0.2", 6000)

    def client(clock: float) -> Engine:
        return Engine(
            config,
            now=0.0,
            connected_to=("10.0.0.1", 5000),
            key=key,
            new_session_id=lambda: keyed_session_id(clock),
        )

    def send(sender: Engine, payload: bytes, now: float) -> list[bytes]:
        assert sender.client_peer is not None
        if server.next_deadline() <= now:
            server.handle_timer(now)
        sender.send(sender.client_peer, [payload], now)
        for data, _, _ in sender.datagrams_to_send(now):
            server.receive_datagram(data, client_address, now)
        return [message.payload for message in messages(server)]

    assert send(client(1_000_000.0), b"before", 0.0) == [b"before"]
    behind = client(999_995.0)  # restarted, its clock 5 s back
    refused = [send(behind, b"behind %d" % second, float(second)) for second in range(1, 30)]
    assert refused == [[]] * 29
    assert send(behind, b"served", 31.0) == [b"served"]
    assert server.statistics().datagrams_stale_session == 29


ALICE = A
BOB = ("10.0.0.3", 6000)
MALLORY = ("10.0.0.66", 6666)


def _client(
    reliable: bool = False, started: float = 1_000_000.0, config: Config | None = None
) -> Engine:
    """A keyed client whose session was made at the wall-clock second ``started``."""
    return Engine(
        config or Config(reliable=reliable),
        now=0.0,
        connected_to=SERVER,
        key=KEY,
        new_session_id=lambda: keyed_session_id(started),
    )


def _say(client: Engine, payload: bytes, now: float = 0.0) -> list[bytes]:
    """What ``client`` puts on the wire with one message (captured)."""
    assert client.client_peer is not None
    if client.config.reliable:
        client.queue(client.client_peer, payload, now)
    else:
        client.send(client.client_peer, [payload], now)
    return [data for data, _, _ in client.datagrams_to_send(now)]


def _deliver(
    server: Engine, datagrams: list[bytes], source: tuple[str, int], now: float = 0.0
) -> list[bytes]:
    for data in datagrams:
        server.receive_datagram(data, source, now)
    return [message.payload for message in messages(server)]


@pytest.mark.parametrize("reliable", [False, True], ids=["unreliable", "reliable"])
def test_keyed_frames_played_back_from_another_address_are_duplicates(reliable: bool) -> None:
    """Frames captured from a client and sent again from another address were
    all delivered, and answered there. A keyed session is known by its id
    wherever it comes from: a frame received before is a duplicate, opens no
    peer, and nothing is sent to the new address."""
    server = Engine(Config(reliable=reliable), now=0.0, key=KEY)
    alice = _client(reliable)
    captured = _say(alice, b"pay 10")
    assert _deliver(server, captured, ALICE) == [b"pay 10"]
    server.datagrams_to_send(0.0)
    assert _deliver(server, captured, MALLORY) == []
    assert MALLORY not in server.peers
    assert all(to != MALLORY for _, to, _ in server.datagrams_to_send(0.0))
    stats = server.statistics()
    assert stats.datagrams_duplicate == len(captured)
    assert stats.peers_opened == 1


@pytest.mark.parametrize("reliable", [False, True], ids=["unreliable", "reliable"])
def test_a_keyed_session_follows_its_client_to_a_new_address(reliable: bool) -> None:
    """NAT rebinding: a fresh frame of a known keyed session from a new address
    moves the peer there (PeerMoved), its connection and state with it, once
    the old address has been silent RESTART_QUIET (before that it is refused:
    a session id two clients happen to share, or a relay of fresh frames,
    leaves the old address talking)."""
    server = Engine(Config(reliable=reliable), now=0.0, key=KEY)
    alice = _client(reliable)
    assert _deliver(server, _say(alice, b"one"), ALICE) == [b"one"]
    peer = server.peers[ALICE]
    server.events()
    two = _say(alice, b"two")
    assert _deliver(server, two, BOB, RESTART_QUIET / 2) == []
    assert server.peers == {ALICE: peer}
    later = RESTART_QUIET * 1.5  # her NAT's new port, the old one silent since
    assert _deliver(server, two, BOB, later) == [b"two"]
    assert server.peers == {BOB: peer}
    assert peer.address == BOB
    (moved,) = [event for event in server.events() if isinstance(event, PeerMoved)]
    assert moved.before == ALICE
    assert server.statistics().peers_opened == 1


def test_a_fresh_frame_of_another_peers_session_cannot_take_an_address() -> None:
    """With a key, a frame of Bob's session played back from Alice's address
    once replaced Alice's session there (it was newer). Now a frame seen
    before is a duplicate, and a fresh one is refused while Alice is there."""
    server = Engine(Config(), now=0.0, key=KEY)
    alice, bob = _client(), _client(started=1_000_010.0)  # Bob's session is the newer
    assert _deliver(server, _say(alice, b"alice 1"), ALICE) == [b"alice 1"]
    seen = _say(bob, b"bob 1")
    assert _deliver(server, seen, BOB) == [b"bob 1"]
    withheld = _say(bob, b"bob 2")  # captured on the way, not let through
    assert _deliver(server, seen + withheld, ALICE) == []
    assert _deliver(server, _say(alice, b"alice 2"), ALICE) == [b"alice 2"]
    assert server.peers[ALICE].statistics().session_changes == 0
    assert server.statistics().peers_opened == 2


@pytest.mark.parametrize("reliable", [False, True], ids=["unreliable", "reliable"])
def test_an_endpoints_own_frames_reflected_to_it_are_refused(reliable: bool) -> None:
    """A keyed frame is valid whoever sends it: the server's own reply, sent
    back to it, was delivered as a message from a client. A frame bearing one
    of an endpoint's own session ids is its own, reflected: dropped."""
    server = Engine(Config(reliable=reliable), now=0.0, key=KEY)
    alice = _client(reliable)
    assert _deliver(server, _say(alice, b"hello"), ALICE) == [b"hello"]
    peer = server.peers[ALICE]
    if reliable:
        server.queue(peer, b"reply", 0.0)
    else:
        server.send(peer, [b"reply"], 0.0)
    reply = [data for data, _, _ in server.datagrams_to_send(0.0)]
    assert _deliver(server, reply, ALICE) == []
    assert _deliver(server, reply, MALLORY) == []
    assert MALLORY not in server.peers
    assert server.statistics().datagrams_own >= len(reply)
    for data in _say(alice, b"again"):  # and the client's to itself
        alice.receive_datagram(data, SERVER, 0.0)
    assert messages(alice) == []
    # A PING of ours, reflected, opens no peer and is not answered.
    ping = encode_control(KIND_PING, peer.send_session, 0, b"", sealer(KEY), authenticated=True)
    server.receive_datagram(ping, MALLORY, 0.0)
    assert MALLORY not in server.peers
    assert server.datagrams_to_send(0.0) == []


async def test_a_moved_keyed_peer_keeps_its_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The shell follows a PeerMoved: the same Connection, now at the new
    address, and replies go there."""
    network = FakeNetwork()
    alice = _client()
    with network.installed():
        async with trioudp.open_udp_server(*SERVER, key=KEY) as server:
            for data in _say(alice, b"from home"):
                network.inject(data, ALICE, SERVER)
            assert (await server.receive()).payload == b"from home"
            connection = server.connections[ALICE]
            await trio.sleep(RESTART_QUIET)
            for data in _say(alice, b"from the train"):
                network.inject(data, BOB, SERVER)
            message = await server.receive()
            assert (message.payload, message.address) == (b"from the train", BOB)
            assert server.connections == {BOB: connection}
            assert connection.address == BOB


def test_a_keepalive_ping_from_a_new_address_opens_no_second_peer() -> None:
    """NAT rebinding of an idle keyed client, whose first datagram from the new
    address is a keepalive PING: the PING opened a second peer there, and every
    data frame of the session from it was then refused. Now a PING of a
    session known elsewhere opens nothing, and the next data frame moves it."""
    config = Config(keepalive=15.0)
    server = Engine(config, now=0.0, key=KEY)
    alice = _client(config=config)
    assert _deliver(server, _say(alice, b"one"), ALICE) == [b"one"]
    now = alice.next_deadline()
    alice.handle_timer(now)
    (ping,) = [data for data, _, _ in alice.datagrams_to_send(now)]
    server.receive_datagram(ping, BOB, now)  # her NAT's new port
    assert list(server.peers) == [ALICE]
    assert server.datagrams_to_send(now) == []
    assert _deliver(server, _say(alice, b"two", now), BOB, now) == [b"two"]
    assert list(server.peers) == [BOB]
    assert server.statistics().peers_opened == 1


def test_a_recorded_ping_played_back_from_many_addresses_opens_one_peer_at_most() -> None:
    """One keyed PING recorded on the path and played back from 60 spoofed
    addresses opened a peer at each (answered with an ACK) until max_peers was
    reached, and a real new client was refused."""
    server = Engine(Config(keepalive=15.0, max_peers=50), now=0.0, key=KEY)
    alice = _client(config=Config(keepalive=15.0))
    assert _deliver(server, _say(alice, b"hi"), ALICE) == [b"hi"]
    now = alice.next_deadline()
    alice.handle_timer(now)
    (ping,) = [data for data, _, _ in alice.datagrams_to_send(now)]
    server.receive_datagram(ping, ALICE, now)
    server.datagrams_to_send(now)
    for number in range(60):
        server.receive_datagram(ping, (f"10.9.0.{number}", 40000 + number), now)
    assert server.datagrams_to_send(now) == []
    assert list(server.peers) == [ALICE]
    assert _deliver(server, _say(_client(), b"carol", now), MALLORY, now) == [b"carol"]
    stats = server.statistics()
    assert stats.datagrams_received == stats.datagrams_accounted


def test_a_keyed_download_survives_its_clients_nat_rebinding() -> None:
    """A reliable keyed client that only receives (it sends ACKs, no data) and
    whose NAT rebinds mid-transfer: its ACKs from the new address were dropped
    and the server's sender gave up. An ACK naming our session that
    acknowledges something new moves the peer, once the old address is quiet."""
    config = Config(reliable=True)
    server = Engine(config, now=0.0, key=KEY)
    client = _client(config=config)
    assert _deliver(server, _say(client, b"GET big"), ALICE) == [b"GET big"]
    peer = server.peers[ALICE]
    for index in range(200):
        server.queue(peer, bytes([index]) * 1000, 0.0)
    source, now = ALICE, 0.0
    got: list[bytes] = []
    for _step in range(100_000):
        if len(got) == 200 or peer.lost is not None or now > 40:
            break
        if len(got) >= 5:
            source = BOB  # rebound mid-transfer
        for data, to, _ in server.datagrams_to_send(now):
            if to == source:
                client.receive_datagram(data, SERVER, now)
        got += [message.payload for message in messages(client)]
        for data, _, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, source, now)
        messages(server)
        now = max(now + 0.001, min(server.next_deadline(), client.next_deadline(), now + 0.05))
        for engine in (server, client):
            if engine.next_deadline() <= now:
                engine.handle_timer(now)
    assert len(got) == 200
    assert peer.lost is None
    assert list(server.peers) == [BOB]


def test_a_peer_a_ping_opened_takes_its_sessions_data() -> None:
    """A keyed client whose first datagram is a PING (a keepalive before any
    message): the peer it opens is known by the PING's session, and the data
    that follows from the same address is that peer's, not a move."""
    server = Engine(Config(), now=0.0, key=KEY)
    alice = _client()
    assert alice.client_peer is not None
    session = alice.client_peer.send_session
    ping = encode_control(KIND_PING, session, 0, b"", sealer(KEY), authenticated=True)
    server.receive_datagram(ping, ALICE, 0.0)
    peer = server.peers[ALICE]
    assert _deliver(server, _say(alice, b"after the ping"), ALICE) == [b"after the ping"]
    assert server.peers == {ALICE: peer}
    assert server.statistics().datagrams_stale_session == 0


async def test_keys_rotate_in_three_steps_without_a_pause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """key= takes a list: the first key signs, every one is accepted. Rolled out
    in three steps ([old, new], then [new, old], then new), every pair of
    endpoints at neighbouring steps talks both ways, and after the last step
    the old key is refused."""
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    steps: list[Any] = [old, [old, new], [new, old], new]
    with FakeNetwork().installed():
        pairs = list(itertools.pairwise(steps))
        for server_key, client_key in [*pairs, *((b, a) for a, b in pairs)]:
            async with (
                trioudp.open_udp_server(*SERVER, key=server_key) as server,
                trioudp.open_udp_connection(*SERVER, key=client_key) as client,
            ):
                await client.send(b"ping")
                with trio.fail_after(1):
                    message = await server.receive()
                await message.reply(b"pong")
                with trio.fail_after(1):
                    assert (await client.receive()).payload == b"pong"
        async with (
            trioudp.open_udp_server(*SERVER, key=new) as server,
            trioudp.open_udp_connection(*SERVER, key=old) as client,
        ):
            await client.send(b"ping")
            await trio.testing.wait_all_tasks_blocked()
            assert server.statistics().datagrams_unauthenticated == 1


@pytest.mark.parametrize(
    ("keys", "error", "message"),
    [
        ([], ValueError, r"key= takes 1 to 4 keys"),
        ([bytes(range(1, 33))] * 5, ValueError, r"got 5"),
        ([bytes(range(1, 33)), b"short"], ValueError, r"got 5: a random secret"),
        ([bytes(range(1, 33)), 32], TypeError, r"or a list of them .* got int"),
    ],
    ids=["none", "five", "one-short", "one-int"],
)
def test_bad_key_lists(keys: list[Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        check_key(keys)
