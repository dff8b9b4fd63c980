"""trioudp.prometheus: every live endpoint's statistics as Prometheus metrics."""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, cast

import attrs
import pytest
import trio
import trio.testing

import trioudp
from trioudp.testing import FakeNetwork

pytest.importorskip(
    "prometheus_client", reason="the prometheus extra: pip install 'trioudp[prometheus]'"
)

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

import trioudp.prometheus
from trioudp.prometheus import ENDPOINT_SERIES, PEER_SERIES, PER_PEER_ONLY

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from prometheus_client.metrics_core import Metric
    from prometheus_client.samples import Sample

LOCAL = "127.0.0.1"
#: prometheus_client's OpenMetrics functions have no type hints.
openmetrics_text = cast(
    "Callable[[CollectorRegistry], bytes]",
    openmetrics.generate_latest,  # pyright: ignore[reportUnknownMemberType]
)
openmetrics_families = cast(
    "Callable[[str], Iterator[Metric]]",
    openmetrics_parser.text_string_to_metric_families,  # pyright: ignore[reportUnknownMemberType]
)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def fresh(*, per_peer: bool = False, labels: Mapping[str, str] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    trioudp.prometheus.register(registry, per_peer=per_peer, labels=labels)
    return registry


def parse(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def scrape(registry: CollectorRegistry) -> list[Sample]:
    return parse(generate_latest(registry).decode())


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def series(
    samples: list[Sample], **labels: str
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples with these labels, by name and every label."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for sample in samples
        if all(sample.labels.get(k) == v for k, v in labels.items())
    }


def name_of(address: trioudp.Address) -> str:
    return f"udp://{address[0]}:{address[1]}"


def counters_never_fell(before: list[Sample], after: list[Sample], **labels: str) -> int:
    """Check every endpoint counter of ``before`` is still there in ``after``
    and no lower; return how many rose."""
    old, new = series(before, **labels), series(after, **labels)
    rose = 0
    for key, was in old.items():
        if key[0].endswith("_total") and not key[0].startswith("trioudp_peer_"):
            assert key in new, key
            assert new[key] >= was, (key, was, new[key])
            rose += new[key] > was
    return rose


async def test_counters_match_statistics_after_traffic() -> None:
    registry = fresh()
    async with (
        trioudp.open_udp_server(LOCAL, 0) as server,
        trioudp.open_udp_connection(*server.local_address[:2]) as conn,
    ):
        for number in range(5):
            await conn.send(b"message %d" % number)
        with trio.fail_after(5):
            for _ in range(5):
                await server.receive()
        samples = scrape(registry)
        stats = server.statistics()
        client = conn.statistics()  # the endpoint's one peer
        endpoint = name_of(server.local_address)
        assert value(samples, "trioudp_datagrams_received_total", endpoint=endpoint) == 5
        assert value(samples, "trioudp_messages_delivered_total", endpoint=endpoint) == 5
        for each in ENDPOINT_SERIES:
            name = each.name("trioudp_") + ("_total" if each.counter else "")
            assert value(samples, name, endpoint=endpoint, kind="server") == getattr(
                stats, each.field
            ), name
        mine = {"endpoint": name_of(conn.local_address), "peer": f"{LOCAL}:{conn.address[1]}"}
        assert value(samples, "trioudp_datagrams_sent_total", **mine, kind="connection") == 5
        assert value(samples, "trioudp_bytes_sent_total", **mine) == client.bytes_sent
        assert value(samples, "trioudp_peer_messages_sent_total", **mine) == 5


async def test_per_peer_series_only_when_asked() -> None:
    plain, detailed = fresh(), fresh(per_peer=True)
    async with (
        trioudp.open_udp_server(LOCAL, 0) as server,
        trioudp.open_udp_connection(*server.local_address[:2]) as conn,
    ):
        for _ in range(3):
            await conn.send(b"hello")
        with trio.fail_after(5):
            for _ in range(3):
                await server.receive()
        endpoint = name_of(server.local_address)
        peer = f"{LOCAL}:{conn.local_address[1]}"
        samples = scrape(plain)
        assert not [
            s
            for s in samples
            if s.name.startswith("trioudp_peer_") and s.labels["kind"] == "server"
        ]
        # A client connection's one peer has its series all the same.
        client = {"endpoint": name_of(conn.local_address), "kind": "connection"}
        assert value(samples, "trioudp_peer_datagrams_sent_total", **client) == 3
        samples = scrape(detailed)
        assert (
            value(samples, "trioudp_peer_datagrams_received_total", endpoint=endpoint, peer=peer)
            == 3
        )
        assert value(samples, "trioudp_peer_bytes_received_total", peer=peer) == (
            server.connections[conn.local_address].statistics().bytes_received
        )
        # The endpoint series carry no peer label: sum() over them counts once.
        assert value(samples, "trioudp_datagrams_received_total", endpoint=endpoint) == 3
        assert "peer" not in next(s.labels for s in samples if s.labels.get("endpoint") == endpoint)


async def test_labels_name_each_endpoint_and_its_kind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = fresh(labels={"worker": "3"})
    with FakeNetwork().installed():
        async with (
            trioudp.open_udp_server("10.0.0.1", 5000) as server,
            trioudp.open_udp_connection("10.0.0.1", 5000) as conn,
            trioudp.open_multicast("239.1.2.3", 6000) as group,
            trioudp.open_broadcast(6001) as lan,
        ):
            samples = [s for s in scrape(registry) if s.name.startswith("trioudp_")]
            kinds = {
                s.labels["endpoint"]: (s.labels["kind"], s.labels.get("peer"))
                for s in samples
                if s.name == "trioudp_peers"
            }
            assert kinds == {
                "udp://10.0.0.1:5000": ("server", None),
                name_of(conn.local_address): ("connection", "10.0.0.1:5000"),
                name_of(group.local_address): ("multicast", None),
                name_of(lan.local_address): ("broadcast", None),
            }
            assert {s.labels["worker"] for s in samples} == {"3"}
            assert server.local_address == ("10.0.0.1", 5000)


async def test_endpoints_on_one_address_get_names_of_their_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = fresh()

    def names() -> list[str]:
        return [s.labels["endpoint"] for s in scrape(registry) if s.name == "trioudp_peers"]

    with FakeNetwork().installed():
        async with (
            trioudp.open_multicast("239.1.2.3", 6000) as first,
            trioudp.open_multicast("239.1.2.3", 6000) as second,
        ):
            base = name_of(first.local_address)
            assert second.local_address == first.local_address
            assert names() == [base, base + "#2"]
            await first.aclose()
            assert names() == [base + "#2"]  # kept while it lives
            async with trioudp.open_multicast("239.1.2.3", 6000):
                assert names() == [base + "#2", base]


async def test_closed_endpoints_vanish() -> None:
    registry = fresh(per_peer=True)
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        endpoint = name_of(server.local_address)
        async with trioudp.open_udp_connection(*server.local_address[:2]) as conn:
            await conn.send(b"hello")
            with trio.fail_after(5):
                await server.receive()
            client = name_of(conn.local_address)
            peer = f"{LOCAL}:{conn.local_address[1]}"
            assert series(scrape(registry), endpoint=client)
        samples = scrape(registry)
        assert not series(samples, endpoint=client)
        assert series(samples, endpoint=endpoint)
        # The server still knows its peer (there is no idle_timeout).
        assert series(samples, kind="server", peer=peer)
    assert not series(scrape(registry), endpoint=endpoint)


async def test_counters_never_fall_as_peers_idle_out_and_are_evicted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = fresh(per_peer=True)
    async with (
        trioudp.open_udp_server(LOCAL, 0, idle_timeout=1.0, max_peers=1) as server,
        trioudp.open_udp_connection(*server.local_address[:2]) as first,
        trioudp.open_udp_connection(*server.local_address[:2]) as second,
    ):
        endpoint = {"endpoint": name_of(server.local_address)}
        for _ in range(3):
            await first.send(b"hello")
        with trio.fail_after(5):
            for _ in range(3):
                await server.receive()
        leaving = server.connections[first.local_address]
        before = scrape(registry)
        with trio.fail_after(5):
            await leaving.state.wait_value(trioudp.ConnectionState.CLOSED)
        assert leaving.ended == "idle"
        idled = scrape(registry)
        assert counters_never_fell(before, idled, **endpoint) > 0  # peers_closed, at least
        assert not series(idled, peer=f"{LOCAL}:{first.local_address[1]}", kind="server")

        for _ in range(2):
            await second.send(b"hello")
        with trio.fail_after(5):
            for _ in range(2):
                await server.receive()
        evicted = server.connections[second.local_address]
        before = scrape(registry)
        await server.send_to(first.local_address, b"room for you")  # max_peers=1: evicts
        assert evicted.ended == "evicted"
        after = scrape(registry)
        assert counters_never_fell(before, after, **endpoint) > 0
        stats = server.statistics()
        assert stats.peers_closed == 2
        # Nothing was held up: the totals are the statistics themselves.
        assert value(after, "trioudp_datagrams_received_total", **endpoint) == 5
        assert value(after, "trioudp_bytes_received_total", **endpoint) == stats.bytes_received


async def test_counters_never_fall_when_a_full_channel_drops_its_oldest() -> None:
    """overflow="drop_oldest" takes a dropped message off messages_delivered:
    ten small messages are delivered, then one as large as them all drops
    them. The metric keeps the highest value shown."""
    registry = fresh(per_peer=True)
    async with (
        trioudp.open_udp_server(
            LOCAL, 0, channel_bytes=100, max_message_size=100, overflow="drop_oldest"
        ) as server,
        trioudp.open_udp_connection(*server.local_address[:2]) as conn,
    ):
        for _ in range(10):
            await conn.send(b"x" * 10)
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().messages_delivered == 10
        before = scrape(registry)
        await conn.send(b"y" * 100)
        await trio.testing.wait_all_tasks_blocked()
        stats = server.statistics()
        assert stats.messages_overflow_dropped == 10
        after = scrape(registry)
        endpoint = name_of(server.local_address)
        peer = f"{LOCAL}:{conn.local_address[1]}"
        assert counters_never_fell(before, after, endpoint=endpoint) > 0
        for name, labels in (
            ("trioudp_messages_delivered_total", {"kind": "server"}),
            ("trioudp_peer_messages_delivered_total", {"peer": peer}),
        ):
            was = value(before, name, endpoint=endpoint, **labels)
            now = value(after, name, endpoint=endpoint, **labels)
            assert now >= was == 10, name
        dropped = value(after, "trioudp_messages_overflow_dropped_total", endpoint=endpoint)
        assert dropped == 10


async def test_scrapes_from_other_threads_read_in_the_trio_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = fresh()
    readers: list[int] = []
    read = trioudp.UDPServer.statistics

    def recorded(server: trioudp.UDPServer) -> trioudp.EndpointStatistics:
        readers.append(threading.get_ident())
        return read(server)

    monkeypatch.setattr(trioudp.UDPServer, "statistics", recorded)
    async with (
        trioudp.open_udp_server(LOCAL, 0) as server,
        trioudp.open_udp_connection(*server.local_address[:2]) as conn,
    ):
        for _ in range(4):
            await conn.send(b"hello")
        with trio.fail_after(5):
            for _ in range(4):
                await server.receive()
        endpoint = name_of(server.local_address)
        http, thread = trioudp.prometheus.start_http_server(0, registry=registry)
        try:
            url = f"http://{LOCAL}:{http.server_port}/metrics"

            def fetch() -> str:
                with urllib.request.urlopen(url, timeout=10) as response:
                    return bytes(response.read()).decode()

            with trio.fail_after(20):
                text = await trio.to_thread.run_sync(fetch)
                other = await trio.to_thread.run_sync(generate_latest, registry)
        finally:
            await trio.to_thread.run_sync(http.shutdown)
            http.server_close()
        await trio.to_thread.run_sync(thread.join)
        assert http.server_address[0] == LOCAL
        for samples in (parse(text), parse(other.decode())):
            assert value(samples, "trioudp_datagrams_received_total", endpoint=endpoint) == 4
            assert value(samples, "trioudp_peers", endpoint=endpoint) == 1
        assert readers == [threading.get_ident()] * 2  # the trio thread, once a scrape


async def test_each_trio_run_is_read_in_its_own_thread() -> None:
    """A thread outside every trio run reads them all; a trio run's own
    thread reads its endpoints only (waiting for another run could deadlock)."""
    registry = fresh()
    there: list[trioudp.Address] = []
    ready, stop = threading.Event(), threading.Event()

    async def elsewhere() -> None:
        async with trioudp.open_udp_server(LOCAL, 0) as server:
            there.append(server.local_address)
            ready.set()
            await trio.to_thread.run_sync(stop.wait)

    runner = threading.Thread(target=trio.run, args=(elsewhere,))
    runner.start()
    try:
        async with trioudp.open_udp_server(LOCAL, 0) as server:
            here = server.local_address
            with trio.fail_after(20):
                await trio.to_thread.run_sync(ready.wait)
                outside = await trio.to_thread.run_sync(generate_latest, registry)
            inside = generate_latest(registry)
    finally:
        stop.set()
        await trio.to_thread.run_sync(runner.join)

    def endpoints(text: bytes) -> set[str]:
        return {s.labels["endpoint"] for s in parse(text.decode()) if s.name == "trioudp_peers"}

    assert endpoints(outside) == {name_of(here), name_of(there[0])}
    assert endpoints(inside) == {name_of(here)}


async def test_reliable_peers_have_their_gauges() -> None:
    registry = fresh()
    async with (
        trioudp.open_udp_server(LOCAL, 0, reliable=True) as server,
        trioudp.open_udp_connection(*server.local_address[:2], reliable=True) as conn,
    ):
        for _ in range(3):
            await conn.send(b"hello")
        with trio.fail_after(5):
            await conn.flush()
        samples = scrape(registry)
        stats = conn.statistics()
        mine = {"endpoint": name_of(conn.local_address), "kind": "connection"}
        assert value(samples, "trioudp_peer_rtt_smoothed_seconds", **mine) > 0
        assert value(samples, "trioudp_peer_rtt_min_seconds", **mine) == stats.rtt_min
        assert value(samples, "trioudp_peer_congestion_window_bytes", **mine) == (
            stats.congestion_window
        )
        assert value(samples, "trioudp_peer_max_datagram_size_bytes", **mine) > 0
        assert value(samples, "trioudp_peer_messages_acked_total", **mine) == 3
        assert value(samples, "trioudp_messages_unacknowledged", **mine) == 0
        # An endpoint's statistics have no such figures of their own.
        assert not [s for s in samples if s.name == "trioudp_rtt_smoothed_seconds"]


async def test_the_exposition_parses_in_both_formats() -> None:
    registry = fresh(per_peer=True)
    async with (
        trioudp.open_udp_server(LOCAL, 0, reliable=True) as server,
        trioudp.open_udp_connection(*server.local_address[:2], reliable=True) as conn,
    ):
        await conn.send(b"hello")
        with trio.fail_after(5):
            await server.receive()
            await conn.flush()
        text = generate_latest(registry).decode()
        strict = openmetrics_text(registry).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    received = families["trioudp_datagrams_received"]
    assert received.type == "counter"
    assert received.documentation == "Datagrams read from the socket."
    assert families["trioudp_peers"].type == "gauge"
    assert families["trioudp_peer_datagrams_received"].documentation.startswith("Per peer. ")
    assert "``" not in text
    # OpenMetrics' parser checks the conventions: counters' _total, units as suffixes.
    strict_families = {family.name: family for family in openmetrics_families(strict)}
    assert strict_families["trioudp_peer_rtt_smoothed_seconds"].unit == "seconds"
    assert strict_families.keys() == families.keys()


def test_every_statistics_field_is_a_metric() -> None:
    endpoint_fields = {field.name for field in attrs.fields(trioudp.EndpointStatistics)}
    peer_fields = {field.name for field in attrs.fields(trioudp.PeerStatistics)}
    assert {each.field for each in ENDPOINT_SERIES} == endpoint_fields - PER_PEER_ONLY
    assert {each.field for each in PEER_SERIES} == peer_fields
    assert peer_fields >= PER_PEER_ONLY
    gauges = {each.field for each in (*ENDPOINT_SERIES, *PEER_SERIES) if not each.counter}
    assert gauges == {
        "peers",
        "datagrams_pending",
        "messages_unacknowledged",
        "bytes_in_flight",
        "bytes_buffered",
        *PER_PEER_ONLY,
    }


def test_options_are_checked() -> None:
    for bad in ("kind", "__worker", "not-a-name", "peer"):
        with pytest.raises(ValueError, match="labels"):
            trioudp.prometheus.TrioudpCollector(labels={bad: "1"})
    with pytest.raises(TypeError, match="must be a str"):
        trioudp.prometheus.TrioudpCollector(labels={"worker": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="namespace"):
        trioudp.prometheus.TrioudpCollector(namespace="my-app")


async def test_namespace_prefixes_every_name() -> None:
    registry = CollectorRegistry()
    registry.register(trioudp.prometheus.TrioudpCollector(namespace="app"))
    async with trioudp.open_udp_server(LOCAL, 0) as server:
        samples = series(scrape(registry), endpoint=name_of(server.local_address))
    names = {name for name, _labels in samples}
    assert "app_datagrams_received_total" in names
    assert "app_peers" in names
    assert all(name.startswith("app_") for name in names)


def test_a_registry_refuses_a_second_collector() -> None:
    registry = fresh()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        trioudp.prometheus.register(registry)


def test_a_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "trioudp.prometheus")
    with pytest.raises(ImportError, match=r"pip install 'trioudp\[prometheus\]'"):
        importlib.import_module("trioudp.prometheus")


async def test_the_example_serves_metrics() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / "prometheus_metrics.py"), "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(30):
            while b"\n" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, output  # it ended before it was ready
                output += chunk
        line = output.decode().splitlines()[0]
        assert "listening on 127.0.0.1 port" in line, line
        port = int(line.split(" port ")[1].split(",")[0])
        url = line.split("metrics at ")[1].strip()
        assert url.startswith(f"http://{LOCAL}:")
        async with trioudp.open_udp_connection(LOCAL, port) as conn:
            await conn.send(b"hello")
            with trio.fail_after(10):
                assert (await conn.receive()).payload == b"Echo: hello"

        def fetch() -> str:
            with urllib.request.urlopen(url, timeout=10) as response:
                return bytes(response.read()).decode()

        with trio.fail_after(30):
            text = await trio.to_thread.run_sync(fetch)
        samples = parse(text)
        server = {"endpoint": f"udp://{LOCAL}:{port}", "kind": "server"}
        assert value(samples, "trioudp_messages_delivered_total", **server) == 1
        assert value(samples, "trioudp_messages_sent_total", **server) == 1
    finally:
        process.terminate()
        with trio.fail_after(30):
            await process.wait()
