"""The topic router."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

import trioudp

LOCAL = "127.0.0.1"


async def test_messages_go_to_their_topic_handlers_in_order() -> None:
    router = trioudp.Router()
    seen: dict[str, list[bytes]] = {"temp": [], "cmd": []}
    done = trio.Event()

    @router.route("temp")
    async def on_temp(message: trioudp.Message) -> None:
        seen["temp"].append(message.payload)

    @router.route("cmd")
    async def on_cmd(message: trioudp.Message) -> None:
        seen["cmd"].append(message.payload)
        await message.reply(b"done: " + message.payload)
        if message.payload == b"stop":
            done.set()

    async with trioudp.open_udp_server(LOCAL, 0) as server, trio.open_nursery() as nursery:
        await nursery.start(router.run, server)
        assert server.subscriptions == frozenset({"temp", "cmd"})
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            for i in range(20):
                await conn.send(b"%d" % i, topic="temp")
            await conn.send(b"noise", topic="other")
            await conn.send(b"stop", topic="cmd")
            with trio.fail_after(5):
                await done.wait()
                assert (await conn.receive()).payload == b"done: stop"
            # Topics run in tasks of their own, unordered against each other:
            # let the "temp" task finish what it was handed.
            await trio.testing.wait_all_tasks_blocked()
        assert seen == {"temp": [b"%d" % i for i in range(20)], "cmd": [b"stop"]}
        assert router.statistics().dispatched == 21
        assert server.statistics().datagrams_filtered == 1  # dropped at the socket
        nursery.cancel_scope.cancel()


async def test_default_handler_takes_the_rest() -> None:
    router = trioudp.Router()
    rest: list[str] = []

    @router.default
    async def anything(message: trioudp.Message) -> None:
        rest.append(message.topic)

    async with trioudp.open_udp_server(LOCAL, 0) as server, trio.open_nursery() as nursery:
        await nursery.start(router.run, server)
        assert server.subscriptions is None
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            await conn.send(b"a", topic="x")
            await conn.send(b"b")
            await trio.testing.wait_all_tasks_blocked()
        assert rest == ["x", ""]
        nursery.cancel_scope.cancel()


async def test_a_handler_error_is_raised_by_default() -> None:
    router = trioudp.Router()

    @router.route("bad")
    async def broken(message: trioudp.Message) -> None:
        raise ZeroDivisionError("handler bug")

    async def scenario() -> None:
        async with trioudp.open_udp_server(LOCAL, 0) as server, trio.open_nursery() as nursery:
            await nursery.start(router.run, server)
            async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
                await conn.send(b"x", topic="bad")
                await trio.sleep_forever()

    with pytest.raises(ZeroDivisionError, match="handler bug"):
        await scenario()


async def test_logged_errors_do_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    router = trioudp.Router(errors="log")
    good: list[bytes] = []

    @router.route("bad")
    async def broken(message: trioudp.Message) -> None:
        raise ValueError(f"cannot handle {message.payload!r}")

    @router.route("good")
    async def fine(message: trioudp.Message) -> None:
        good.append(message.payload)

    async with trioudp.open_udp_server(LOCAL, 0) as server, trio.open_nursery() as nursery:
        await nursery.start(router.run, server)
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            for i in range(3):
                await conn.send(b"bad%d" % i, topic="bad")
                await conn.send(b"good%d" % i, topic="good")
            await trio.testing.wait_all_tasks_blocked()
        assert good == [b"good0", b"good1", b"good2"]
        assert router.statistics().handler_errors == 3
        assert "cannot handle b'bad2'" in caplog.text
        assert caplog.records[0].name == "trioudp._router"
        assert caplog.records[0].levelno == logging.ERROR
        nursery.cancel_scope.cancel()


async def test_a_full_queue_drops_the_oldest(autojump_clock: trio.testing.MockClock) -> None:
    router = trioudp.Router(capacity=2)
    handled: list[bytes] = []
    release = trio.Event()

    @router.route("t")
    async def slow(message: trioudp.Message) -> None:
        await release.wait()
        handled.append(message.payload)

    async with trioudp.open_udp_server(LOCAL, 0) as server, trio.open_nursery() as nursery:
        await nursery.start(router.run, server)
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            for i in range(6):
                await conn.send(b"%d" % i, topic="t")
            await trio.testing.wait_all_tasks_blocked()
            release.set()
            await trio.testing.wait_all_tasks_blocked()
        # The first was taken at once; of the rest, the last two fit.
        assert handled == [b"0", b"4", b"5"]
        assert router.statistics().dropped == 3
        nursery.cancel_scope.cancel()


def test_router_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="capacity"):
        trioudp.Router(capacity=0)
    with pytest.raises(ValueError, match="errors must be"):
        trioudp.Router(errors="ignore")  # type: ignore[arg-type]
    router = trioudp.Router()

    async def handler(message: trioudp.Message) -> None:
        pass

    router.add("a", handler)
    with pytest.raises(ValueError, match="already has a handler"):
        router.add("a", handler)
    with pytest.raises(ValueError, match="at most 255 bytes"):
        router.add("x" * 300, handler)
    assert router.topics == frozenset({"a"})


async def test_running_without_routes_is_an_error() -> None:
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        with pytest.raises(ValueError, match="no routes"):
            await trioudp.Router().run(server)


def test_handlers_that_cannot_be_are_refused_when_added() -> None:
    router = trioudp.Router()
    with pytest.raises(TypeError, match=r"add\('t', handler\) takes an async function"):
        router.add("t", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"default\(\) takes an async function.*got 'x'"):
        router.default("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"route\(\) takes the topic, as in @router.route"):
        router.route(print)  # type: ignore[arg-type]  # a bare @router.route


async def test_a_plain_function_handler_fails_clearly_and_run_checks_its_source() -> None:
    router = trioudp.Router()
    router.add("t", lambda message: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=r"run\(\) takes a trioudp endpoint or connection"):
        await router.run(None)  # type: ignore[arg-type]
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            await conn.send(b"x", topic="t")
        with (
            trio.fail_after(5),
            pytest.raises(TypeError, match="returned NoneType, not an awaitable: make it async"),
        ):
            await router.run(server)


async def test_run_gives_the_endpoint_its_subscriptions_back() -> None:
    router = trioudp.Router()

    @router.route("temp")
    async def on_temp(message: trioudp.Message) -> None:
        pass

    async with trioudp.open_udp_server(LOCAL, 0, topics=["temp", "log"]) as server:
        async with trio.open_nursery() as nursery:
            await nursery.start(router.run, server)
            assert server.subscriptions == frozenset({"temp"})
            nursery.cancel_scope.cancel()
        assert server.subscriptions == frozenset({"temp", "log"})
