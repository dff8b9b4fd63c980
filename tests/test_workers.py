"""One port, several worker processes (issue 16): SO_REUSEPORT groups whose
placement program keeps each peer on one worker, and serve_workers' processes,
restarts, statistics and shutdown. Linux only; on loopback."""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
from workers_app import echo  # tests/, on sys.path (and so on the workers')

import trioudp
from trioudp import Config
from trioudp._workers import bind_group

if TYPE_CHECKING:
    from trioudp import Workers

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT groups are Linux's"
)

LOCAL = "127.0.0.1"


async def exchange(
    group: Workers, peers: int, messages: int, **options: object
) -> dict[int, list[bytes]]:
    """Each of ``peers`` connections sends ``messages`` numbered messages, each
    after the answer to the one before; the answers, by peer."""
    answers: dict[int, list[bytes]] = {}

    async def peer(number: int) -> None:
        async with trioudp.open_udp_connection(*group.local_address[:2], **options) as conn:  # type: ignore[arg-type]
            got = answers[number] = []
            for index in range(messages):
                await conn.send(b"%d" % index)
                with trio.fail_after(30):
                    got.append((await conn.receive()).payload)

    async with trio.open_nursery() as nursery:
        for number in range(peers):
            nursery.start_soon(peer, number)
    return answers


def workers_of(answers: list[bytes]) -> set[bytes]:
    return {answer.split(b":")[0] for answer in answers}


def test_the_placement_program_keeps_each_peer_on_one_socket() -> None:
    """The group's sockets, bound by the parent, each get a fixed share of the
    peers; a socket whose reader closed its copy stays in the group, and its
    peers stay with it."""

    async def main() -> None:
        sockets = await bind_group(LOCAL, 0, Config(), 3)
        port = sockets[0].getsockname()[1]
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(300)]

        def round_trip() -> dict[int, set[int]]:
            for client in clients:
                client.sendto(b"x", (LOCAL, port))
            seen: dict[int, set[int]] = collections.defaultdict(set)
            for index, sock in enumerate(sockets):
                while True:
                    try:
                        _data, address = sock.recvfrom(100)
                    except BlockingIOError:
                        break
                    seen[address[1]].add(index)
            return seen

        try:
            first = round_trip()
            assert len(first) == 300
            assert all(len(where) == 1 for where in first.values())
            shares = collections.Counter(next(iter(where)) for where in first.values())
            assert min(shares.values()) >= 60, shares  # 100 each on average
            # A worker's copy of socket 1 closes (it crashed): the parent's keeps it.
            worker_copy = sockets[1].dup()
            worker_copy.close()
            assert round_trip() == first
        finally:
            for each in (*sockets, *clients):
                each.close()

    trio.run(main)


async def test_every_peer_is_served_by_one_worker_in_order_none_twice() -> None:
    async with trio.open_nursery() as nursery:
        group: Workers = await nursery.start(trioudp.serve_workers, echo, LOCAL, 0)
        assert group.count == (os.cpu_count() or 1)
        answers = await exchange(group, 200, 5)
        for number, got in answers.items():
            (worker,) = workers_of(got)
            assert got == [worker + b":%d" % i for i in range(5)], number
        assert len({next(iter(workers_of(got))) for got in answers.values()}) == group.count
        figures = await group.statistics()
        assert sorted(figures) == list(range(group.count))
        assert sum(each.messages_delivered for each in figures.values()) == 1000
        assert sum(each.peers for each in figures.values()) == 200
        nursery.cancel_scope.cancel()


async def test_a_crashed_worker_is_logged_counted_and_restarted_and_keeps_its_peers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trioudp.workers")
    async with trio.open_nursery() as nursery:
        group: Workers = await nursery.start(
            partial(trioudp.serve_workers, workers=2), echo, LOCAL, 0
        )
        before = group.pids()
        async with (
            trioudp.open_udp_connection(*group.local_address[:2]) as victim,
            trioudp.open_udp_connection(*group.local_address[:2]) as bystander,
        ):
            await victim.send(b"hello")
            (worker,) = workers_of([(await victim.receive()).payload])
            await victim.send(b"crash")
            # The worker is gone or being started again: what the peer sends
            # meanwhile waits for it in its socket, and goes to no other worker.
            # (What the worker had read before it died is lost with it: an
            # unreliable peer asks again.)
            answer = None
            with trio.fail_after(60):
                while answer is None:
                    await victim.send(b"after")
                    with trio.move_on_after(1):
                        answer = (await victim.receive()).payload
            assert answer == worker + b":after"
            assert group.restarts == 1
            index = int(worker)
            after = group.pids()
            assert after[index] != before[index]
            assert after[1 - index] == before[1 - index]
            await bystander.send(b"unbothered")
            with trio.fail_after(10):
                assert (await bystander.receive()).payload.endswith(b":unbothered")
        (record,) = [r for r in caplog.records if r.name == "trioudp.workers"]
        assert f"trioudp worker {index} exited with status 1" in record.getMessage()
        nursery.cancel_scope.cancel()


async def test_reliable_peers_stay_exactly_once_in_order_across_a_killed_worker() -> None:
    """SIGKILL, between two runs of messages: the dead worker's peers carry on
    with its replacement (a receiver restart, for their senders), and the
    other worker's peers never notice."""
    async with trio.open_nursery() as nursery:
        group: Workers = await nursery.start(
            partial(trioudp.serve_workers, workers=2, reliable=True), echo, LOCAL, 0
        )
        answers: dict[int, list[bytes]] = collections.defaultdict(list)
        restarts: dict[int, int] = {}
        first_half = trio.Event()
        killed = trio.Event()
        done = 0

        async def peer(number: int) -> None:
            nonlocal done
            async with trioudp.open_udp_connection(*group.local_address[:2], reliable=True) as conn:
                for index in range(40):
                    if index == 20:
                        # Quiet before the kill: every message answered and
                        # acknowledged (one answered whose ACK was still held,
                        # up to 25 ms, would come again to the new worker:
                        # docs/robustness.md).
                        with trio.fail_after(60):
                            await conn.flush()
                        done += 1
                        if done == 20:
                            first_half.set()
                        await killed.wait()
                    await conn.send(b"%d" % index)
                    with trio.fail_after(60):
                        answers[number].append((await conn.receive()).payload)
                with trio.fail_after(60):
                    await conn.flush()
                restarts[number] = conn.statistics().receiver_restarts

        async with trio.open_nursery() as peers:
            for number in range(20):
                peers.start_soon(peer, number)
            await first_half.wait()
            victim = group.pids()[0]
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            killed.set()
        for number, got in answers.items():
            (worker,) = workers_of(got)
            assert got == [worker + b":%d" % i for i in range(40)], number
            assert restarts[number] == (1 if worker == b"0" else 0), number
        assert group.restarts == 1
        nursery.cancel_scope.cancel()


async def test_leaving_stops_every_worker_and_frees_the_port() -> None:
    async with trio.open_nursery() as nursery:
        group: Workers = await nursery.start(
            partial(trioudp.serve_workers, workers=2), echo, LOCAL, 0
        )
        pids = group.pids()
        port = group.local_address[1]
        nursery.cancel_scope.cancel()
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, port))  # nobody holds it any more


async def test_a_worker_that_cannot_start_fails_serve_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def local(connection: trioudp.Connection) -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match="a function defined at the top level of a module"):
        await trioudp.serve_workers(local, LOCAL, 0)
    with pytest.raises(ValueError, match="workers must be a number of processes"):
        await trioudp.serve_workers(echo, LOCAL, 0, workers=0)
    echo.__module__ = "no_such_module_for_trioudp"
    try:
        with pytest.raises(TypeError, match="import it by name"):
            await trioudp.serve_workers(echo, LOCAL, 0, workers=1)
    finally:
        echo.__module__ = "workers_app"
    monkeypatch.setenv("TRIOUDP_TEST_BROKEN_WORKER", "1")  # the workers' import fails
    with pytest.raises(RuntimeError, match="worker 0 exited with status 1 before it was"):
        await trioudp.serve_workers(echo, LOCAL, 0, workers=1)


async def test_reuse_port_lets_servers_share_a_port_and_is_linux_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with (
        trioudp.open_udp_server(LOCAL, 0, reuse_port=True) as first,
        trioudp.open_udp_server(LOCAL, first.local_address[1], reuse_port=True) as second,
    ):
        served = collections.Counter[str]()
        all_in = trio.Event()
        async with trio.open_nursery() as nursery:

            async def count(server: trioudp.UDPServer, name: str) -> None:
                async for _message in server:
                    served[name] += 1
                    if served.total() == 50:
                        all_in.set()

            nursery.start_soon(count, first, "first")
            nursery.start_soon(count, second, "second")
            # 50 peers open at once: a port closed and taken again by the next
            # connection would be one peer with a new session, which a server
            # takes only after the old one was quiet for 1 s.
            async with contextlib.AsyncExitStack() as peers:
                for _ in range(50):
                    conn = await peers.enter_async_context(
                        trioudp.open_udp_connection(LOCAL, first.local_address[1])
                    )
                    await conn.send(b"x")
                with trio.fail_after(10):
                    await all_in.wait()
            nursery.cancel_scope.cancel()
        assert served["first"] > 0
        assert served["second"] > 0
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(OSError, match="reuse_port=True needs Linux") as info:
        async with trioudp.open_udp_server(LOCAL, 0, reuse_port=True):
            pass
    assert info.value.errno == errno.EOPNOTSUPP


async def test_prometheus_reports_every_worker_with_a_worker_label() -> None:
    prometheus = pytest.importorskip("prometheus_client", reason="pip install trioudp[prometheus]")
    from prometheus_client.parser import text_string_to_metric_families

    from trioudp.prometheus import TrioudpCollector

    registry = prometheus.CollectorRegistry()
    registry.register(TrioudpCollector())
    async with trio.open_nursery() as nursery:
        group: Workers = await nursery.start(
            partial(trioudp.serve_workers, workers=2), echo, LOCAL, 0
        )
        answers = await exchange(group, 20, 3)
        figures = await group.statistics()
        text = prometheus.generate_latest(registry).decode()
        samples = {
            sample.labels["worker"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "trioudp_messages_delivered_total" and "worker" in sample.labels
        }
        assert samples == {str(i): float(figures[i].messages_delivered) for i in range(2)}
        assert sum(samples.values()) == 60
        assert len(answers) == 20
        nursery.cancel_scope.cancel()
    text = prometheus.generate_latest(registry).decode()
    assert 'kind="worker"' not in text  # gone with the workers


class _Server:
    async def handle(self, connection: trioudp.Connection) -> None:
        pass  # pragma: no cover


async def test_mistakes_that_would_misplace_or_multiply_workers_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(TypeError, match="import it by name"):
        await trioudp.serve_workers(_Server().handle, LOCAL, 0)  # a bound method
    async with trio.open_nursery() as nursery:
        group: Workers = await nursery.start(
            partial(trioudp.serve_workers, workers=1), echo, LOCAL, 0
        )
        # A second group on the port would join the first's and re-place its peers.
        with pytest.raises(OSError, match="already in use"):
            await trioudp.serve_workers(echo, LOCAL, group.local_address[1], workers=1)
        nursery.cancel_scope.cancel()
    # A script without the __name__ guard would start workers in every worker.
    monkeypatch.setenv("TRIOUDP_WORKER", "0")
    with pytest.raises(RuntimeError, match="guard the script's start with if __name__"):
        await trioudp.serve_workers(echo, LOCAL, 0)


async def test_a_cancelled_statistics_request_leaves_no_stale_reply_and_workers_exit_quietly(
    capfd: pytest.CaptureFixture[str],
) -> None:
    async def ask_and_give_up(group: Workers, pid: int) -> None:
        """A statistics request cancelled while its reply is on the way."""
        os.kill(pid, signal.SIGSTOP)  # the worker cannot answer yet
        async with trio.open_nursery() as asking:
            asking.start_soon(group.statistics)
            await trio.testing.wait_all_tasks_blocked()  # asked, waiting
            asking.cancel_scope.cancel()
        os.kill(pid, signal.SIGCONT)  # its reply comes, to nobody

    async with trio.open_nursery() as nursery:
        group: Workers = await nursery.start(
            partial(trioudp.serve_workers, workers=1), echo, LOCAL, 0
        )
        (pid,) = group.pids()
        assert pid is not None
        await ask_and_give_up(group, pid)
        await exchange(group, 1, 5)
        (figures,) = (await group.statistics()).values()
        assert figures.messages_delivered == 5  # not the stale reply's 0
        await ask_and_give_up(group, pid)
        nursery.cancel_scope.cancel()  # with that reply unread
    assert "Traceback" not in capfd.readouterr().err
