"""Topics and priorities over real loopback sockets."""

from __future__ import annotations

import socket
import struct

import pytest
import trio

import trioudp
from trioudp._multicast import IP_RECVTOS

LOCAL = "127.0.0.1"


async def test_topics_are_filtered_by_subscription() -> None:
    async with trioudp.open_udp_server(LOCAL, 0, topics=["temp"]) as server:
        assert server.subscriptions == frozenset({"temp"})
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            await conn.send(b"21.5", topic="temp")
            await conn.send(b"40%", topic="humidity")
            await conn.send(b"no topic")
            await conn.send(b"22.0", topic="temp")
            with trio.fail_after(5):
                got = [await server.receive() for _ in range(2)]
            assert [(m.topic, m.payload) for m in got] == [("temp", b"21.5"), ("temp", b"22.0")]
            server.subscribe("humidity", "")
            await conn.send(b"41%", topic="humidity")
            await conn.send(b"plain")
            server.unsubscribe("temp")
            await conn.send(b"23.0", topic="temp")
            await conn.send(b"end", topic="humidity")
            with trio.fail_after(5):
                got = [await server.receive() for _ in range(3)]
            assert [m.payload for m in got] == [b"41%", b"plain", b"end"]
            stats = server.statistics()
            assert stats.datagrams_filtered == 3
            assert stats.messages_lost == 0
            server.subscriptions = None
            await conn.send(b"anything", topic="x")
            with trio.fail_after(5):
                assert (await server.receive()).topic == "x"


async def test_reply_carries_a_topic() -> None:
    async with (
        trioudp.open_udp_server(LOCAL, 0) as server,
        trioudp.open_udp_connection(*server.local_address[:2]) as conn,
    ):
        await conn.send(b"ping", topic="query")
        with trio.fail_after(5):
            request = await server.receive()
            await request.reply(b"pong", topic="answer")
            reply = await conn.receive()
        assert (request.topic, reply.topic, reply.payload) == ("query", "answer", b"pong")


async def test_bad_topics_are_refused() -> None:
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        with pytest.raises(TypeError, match="for one topic pass"):
            server.subscriptions = "abc"
        with pytest.raises(ValueError, match="delivers every topic"):
            server.unsubscribe("a")
        with pytest.raises(ValueError, match="at most 255 bytes"):
            await server.send((LOCAL, 9), b"x", topic="t" * 300)
        # Checked on every path, the quickest one (a small bytes payload) too.
        odd_topics: list[object] = [None, b"", 0, False, []]
        for odd in odd_topics:
            with pytest.raises(TypeError, match="a topic is a str"):
                await server.send((LOCAL, 9), b"x", topic=odd)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="raw mode"):
        async with trioudp.open_udp_server(LOCAL, 0, framing=False, topics=["a"]):
            pass


def _receive_tos(sock: socket.socket) -> tuple[bytes, int]:
    data, ancillary, _flags, _address = sock.recvmsg(2000, socket.CMSG_SPACE(4))
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_IP and kind in (socket.IP_TOS, IP_RECVTOS):
            return data, value[0]
    raise AssertionError("no TOS in the ancillary data")


async def test_priorities_mark_the_dscp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind((LOCAL, 0))
        listener.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        listener.settimeout(5)
        target = listener.getsockname()
        async with trioudp.open_udp_connection(*target, priority=trioudp.Priority.CRITICAL) as conn:
            await conn.send(b"urgent")
            await conn.send(b"bulk", priority=trioudp.Priority.LOW)
            await conn.send(b"dscp 10", priority=10)
            marks = [_receive_tos(listener)[1] for _ in range(3)]
        assert marks == [46 << 2, 1 << 2, 10 << 2]
        with pytest.raises(ValueError, match="DSCP from 0 to 63"):
            async with trioudp.open_udp_connection(*target, priority=64):
                pass
        async with trioudp.open_udp_connection(*target) as conn:
            with pytest.raises(ValueError, match="DSCP from 0 to 63"):
                await conn.send(b"x", priority=-1)
            await conn.send(b"default")
            assert _receive_tos(listener)[1] == 0


def test_priority_values_are_the_documented_code_points() -> None:
    assert [(p.name, int(p)) for p in trioudp.Priority] == [
        ("LOW", 1),
        ("NORMAL", 0),
        ("HIGH", 34),
        ("CRITICAL", 46),
    ]
    assert trioudp.Config(priority=trioudp.Priority.HIGH).to_dict()["priority"] == 34
    assert struct.calcsize("i") == 4
