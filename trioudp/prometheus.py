"""Prometheus metrics for every live trioudp endpoint (``pip install 'trioudp[prometheus]'``).

Register a collector once, and every endpoint open in the process, now or
later (servers, client connections, multicast and broadcast endpoints), is
reported on each scrape, read from its :meth:`~trioudp.UDPServer.statistics`::

    import trioudp.prometheus

    trioudp.prometheus.register()  # prometheus_client's default REGISTRY
    trioudp.prometheus.start_http_server(9100)  # http://127.0.0.1:9100/metrics

or serve ``prometheus_client.generate_latest()`` from a trio task of your own.
``examples/prometheus_metrics.py`` is a runnable echo server that does this.

Names. Each statistics field becomes one metric named after it, in the
``trioudp`` namespace: a counter gets ``_total``
(``datagrams_received`` -> ``trioudp_datagrams_received_total``), a gauge
keeps its name, and a field whose name has no unit gets its base unit
(``rtt_smoothed`` -> ``trioudp_peer_rtt_smoothed_seconds``,
``congestion_window`` -> ``trioudp_peer_congestion_window_bytes``). One rule,
so the documentation of :class:`~trioudp.EndpointStatistics` is the
documentation of the metrics (it is their HELP text, too).

Labels. Every endpoint series has ``endpoint`` (``udp://`` and the local
address, e.g. ``udp://127.0.0.1:9999``; should two live endpoints share an
address, as multicast listeners on one port may, the later one gets a
``#2``, ``#3`` ... of its own for as long as it lives) and ``kind``
(``server``, ``connection``, ``multicast`` or ``broadcast``); a client
connection's also has ``peer``, the address it is connected to. ``labels=``
adds constant labels to every series, such as the ``worker`` of a process
among several.

Per peer. The ``trioudp_peer_*`` metrics have one series per peer (label
``peer``, its address): always for a client connection's one peer, and for
the peers of servers, multicast and broadcast endpoints only with
``per_peer=True``, since a server with 10**4 peers would make a scrape of
10**5 series. They are metrics of their own, not the endpoint metrics with
one more label, because Prometheus wants ``sum()`` over a metric's series to
mean something (https://prometheus.io/docs/practices/naming/): endpoint
totals and their peers' series in one metric would count every datagram
twice. Nor would summing the peers give the totals: these also count
forgotten peers and datagrams from unknown addresses. The figures that only
a reliable peer has (congestion window, path MTU, round-trip times) are
reported per peer only.

Counters never go down. A counter series reports the highest value it has
shown while its endpoint (or peer) lives, so ``rate()`` never sees a false
reset. Two statistics can go down: a message that ``overflow="drop_oldest"``
drops from a full receive channel is taken off ``messages_delivered`` and
``datagrams_delivered`` as it is added to the ``*_overflow_dropped``
counts, and a large message that drops several small ones lowers them. Their
series then hold still until the statistics pass their highest value again
(the drops show in ``*_overflow_dropped_total`` meanwhile). A closed
endpoint's series vanish; a peer that is forgotten (idle, evicted,
restarted) and comes back is a new connection whose per-peer series start
from zero again, which Prometheus takes as a counter reset, as it does a
restarted process.

Threads. Statistics are read in the thread of the trio run that owns the
endpoints, never while it changes them: a scrape from another thread (such
as :func:`start_http_server`'s) asks each trio run once, with
``trio.from_thread.run_sync``, for all its endpoints together. If a trio run
is busy in a long piece of synchronous work, the scrape waits for it (a
scrape that waits is a sign worth seeing); a run that has ended is skipped.
Called from a trio run's own thread (``generate_latest()`` in a task), the
collector reads that run's endpoints directly, and skips the endpoints of
any other trio run in the process, which it cannot wait for without risking
a deadlock.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import re
import threading
from typing import TYPE_CHECKING, cast

import attrs
import trio

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as _missing:  # pragma: no cover - tested by hiding the module
    raise ImportError(
        "trioudp.prometheus needs prometheus_client: pip install 'trioudp[prometheus]'"
    ) from _missing

from . import _statistics
from ._connection import Connection
from ._endpoint import Endpoint, UDPServer, live_endpoints
from ._group import BroadcastEndpoint, MulticastEndpoint
from ._statistics import COUNTERS, EndpointStatistics, PeerStatistics
from ._workers import live_groups

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric

    from ._message import Address

__all__ = ["TrioudpCollector", "register", "start_http_server"]


@attrs.frozen
class _Series:
    """How one statistics field is reported."""

    field: str
    counter: bool
    #: The base unit added to a name that has none.
    unit: str = ""

    def name(self, prefix: str) -> str:
        """The metric family's name (a counter's samples add ``_total``)."""
        return f"{prefix}{self.field}_{self.unit}" if self.unit else f"{prefix}{self.field}"


#: What a peer's statistics report, and how. Every PeerStatistics field.
_PEER_GAUGES = (
    _Series("datagrams_pending", counter=False),
    _Series("messages_unacknowledged", counter=False),
    _Series("bytes_in_flight", counter=False),
    _Series("congestion_window", counter=False, unit="bytes"),
    _Series("max_datagram_size", counter=False, unit="bytes"),
    _Series("rtt_smoothed", counter=False, unit="seconds"),
    _Series("rtt_variation", counter=False, unit="seconds"),
    _Series("rtt_min", counter=False, unit="seconds"),
)
PEER_SERIES = (*(_Series(name, counter=True) for name in COUNTERS), *_PEER_GAUGES)

#: A reliable sender's own figures: per peer only (an endpoint's are always 0).
PER_PEER_ONLY = frozenset(
    {"congestion_window", "max_datagram_size", "rtt_smoothed", "rtt_variation", "rtt_min"}
)

#: What an endpoint's statistics report, and how: every EndpointStatistics
#: field but the per-peer-only ones.
ENDPOINT_SERIES = (
    *(series for series in PEER_SERIES if series.field not in PER_PEER_ONLY),
    _Series("peers", counter=False),
    _Series("peers_opened", counter=True),
    _Series("peers_closed", counter=True),
    _Series("receive_errors", counter=True),
    _Series("datagrams_offloaded", counter=True),
    _Series("datagrams_coalesced", counter=True),
    _Series("datagrams_kernel_dropped", counter=True),
    _Series("bytes_buffered", counter=False),
)

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NAMESPACE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
#: The labels the collector sets itself.
OWN_LABELS = ("endpoint", "kind", "peer")


@attrs.frozen(eq=False)
class _PeerReading:
    connection: Connection
    address: Address
    statistics: PeerStatistics


@attrs.frozen(eq=False)
class _Reading:
    """One endpoint's statistics, read in its trio run's thread."""

    endpoint: Endpoint
    kind: str
    local_address: Address
    remote: Address | None
    statistics: EndpointStatistics
    peers: tuple[_PeerReading, ...]


class TrioudpCollector(Collector):
    """A ``prometheus_client`` collector of every live trioudp endpoint's
    statistics (see the module's documentation for names and labels).

    ``per_peer`` adds series for each peer of servers, multicast and broadcast
    endpoints (a client connection's one peer always has them). ``labels``
    are constant labels added to every series, e.g. ``{"worker": "3"}``.
    ``namespace`` is the metric names' prefix ("" for none).
    """

    def __init__(
        self,
        *,
        per_peer: bool = False,
        labels: Mapping[str, str] | None = None,
        namespace: str = "trioudp",
    ) -> None:
        constant: dict[str, str] = {}
        # Checked as objects: a worker number given as an int must fail here,
        # not in the middle of a scrape.
        for name, value in cast("Mapping[object, object]", labels or {}).items():
            if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
                raise ValueError(f"labels: {name!r} is not a Prometheus label name")
            if name.startswith("__") or name in OWN_LABELS:
                raise ValueError(
                    f"labels: {name!r} is reserved (the collector sets "
                    f"{', '.join(OWN_LABELS)}; names starting with __ are Prometheus')"
                )
            if not isinstance(value, str):
                raise TypeError(f"labels: the value of {name!r} must be a str, got {value!r}")
            constant[name] = value
        if namespace and not _NAMESPACE.fullmatch(namespace):
            raise ValueError(f"namespace: {namespace!r} is not a valid metric name prefix")
        self.per_peer = per_peer
        self.labels: Mapping[str, str] = constant
        self.namespace = namespace
        self._prefix = f"{namespace}_" if namespace else ""
        #: Guards the state below: scrapes may come from several threads at once.
        self._lock = threading.Lock()
        #: The ``endpoint`` label of each endpoint seen, for as long as it lives.
        self._names: dict[Endpoint, str] = {}
        #: The highest counter values each live endpoint and connection (and
        #: worker process: its group, index and pid) has shown.
        self._highest: dict[object, tuple[int, ...]] = {}

    def describe(self) -> Iterator[Metric]:
        """Every metric family the collector may report, without samples (so a
        registry knows its names without reading any statistics)."""
        yield from self._families(ENDPOINT_SERIES).values()
        yield from self._families(PEER_SERIES, per_peer=True).values()

    def collect(self) -> Iterator[Metric]:
        """The statistics of every live endpoint now, as metric families."""
        readings = _read_all(self.per_peer)
        endpoint_families = self._families(ENDPOINT_SERIES)
        peer_families = self._families(PEER_SERIES, per_peer=True)
        with self._lock:
            self._forget_closed()
            for reading in readings:
                if reading.endpoint._closed:  # since it was read: its series are gone
                    continue
                labels = {
                    "endpoint": self._name(reading),
                    "kind": reading.kind,
                    **({} if reading.remote is None else {"peer": _text(reading.remote)}),
                    **self.labels,
                }
                self._add(endpoint_families, reading.endpoint, reading.statistics, labels)
                for peer in reading.peers:
                    peer_labels = {**labels, "peer": _text(peer.address)}
                    self._add(peer_families, peer.connection, peer.statistics, peer_labels)
            for group in live_groups():
                address = f"udp://{_text(group.local_address)}"
                for index, (pid, statistics) in sorted(group._snapshot.items()):
                    labels = {**self.labels, "endpoint": address, "kind": "worker"}
                    labels["worker"] = str(index)
                    # A worker started again starts its counters from 0: a
                    # counter reset, as for any restarted process.
                    owner = (group, index, pid)
                    self._add(endpoint_families, owner, statistics, labels)
        for family in (*endpoint_families.values(), *peer_families.values()):
            if family.samples:
                yield family

    def _families(
        self, table: Iterable[_Series], *, per_peer: bool = False
    ) -> dict[_Series, Metric]:
        docs = _field_docs()
        prefix = self._prefix + "peer_" if per_peer else self._prefix
        scope = "Per peer. " if per_peer else ""
        families: dict[_Series, Metric] = {}
        for series in table:
            text = scope + docs.get(series.field, f"trioudp statistics: {series.field}.")
            name = series.name(prefix)
            if series.counter:
                families[series] = CounterMetricFamily(name, text, labels=(), unit=series.unit)
            else:
                families[series] = GaugeMetricFamily(name, text, labels=(), unit=series.unit)
        return families

    def _add(
        self,
        families: Mapping[_Series, Metric],
        owner: object,
        statistics: PeerStatistics,
        labels: dict[str, str],
    ) -> None:
        """Add ``owner``'s samples, each counter at the highest value it has shown."""
        counters = [series for series in families if series.counter]
        now = tuple(int(getattr(statistics, series.field)) for series in counters)
        before = self._highest.get(owner)
        highest = now if before is None else tuple(map(max, now, before))
        self._highest[owner] = highest
        for series, value in zip(counters, highest, strict=True):
            family = families[series]
            family.add_sample(family.name + "_total", labels, value)
        for series, family in families.items():
            if not series.counter:
                family.add_sample(family.name, labels, float(getattr(statistics, series.field)))

    def _name(self, reading: _Reading) -> str:
        """The endpoint's ``endpoint`` label: its local address, made unique
        among the live endpoints when it is first seen, and kept while it lives."""
        name = self._names.get(reading.endpoint)
        if name is None:
            base = f"udp://{_text(reading.local_address)}"
            taken = set(self._names.values())
            name = base
            number = 2
            while name in taken:
                name = f"{base}#{number}"
                number += 1
            self._names[reading.endpoint] = name
        return name

    def _forget_closed(self) -> None:
        """Let go of what the collector keeps for closed endpoints and ended
        connections (they never come back; a returning peer is a new connection)."""
        for endpoint in [each for each in self._names if each._closed]:
            del self._names[endpoint]
        for owner in [each for each in self._highest if _gone(each)]:
            del self._highest[owner]
        live: set[object] = {
            (group, index, pid)
            for group in live_groups()
            for index, (pid, _statistics) in group._snapshot.items()
        }
        for owner in list(self._highest):
            if isinstance(owner, tuple) and owner not in live:
                del self._highest[owner]


def register(
    registry: CollectorRegistry = REGISTRY,
    *,
    per_peer: bool = False,
    labels: Mapping[str, str] | None = None,
    namespace: str = "trioudp",
) -> TrioudpCollector:
    """Make a :class:`TrioudpCollector` with these options and register it
    with ``registry`` (prometheus_client's default one unless given)."""
    collector = TrioudpCollector(per_peer=per_peer, labels=labels, namespace=namespace)
    registry.register(collector)
    return collector


def start_http_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry``'s metrics at ``http://addr:port/metrics`` from a daemon
    thread: prometheus_client's ``start_http_server``, but on loopback unless
    told otherwise (pass ``addr="0.0.0.0"`` for a Prometheus on another host).
    Port 0 picks a free port: ``server.server_port``. ``server.shutdown()``
    stops it."""
    return prometheus_client.start_http_server(port, addr, registry)


# -- reading, in each trio run's thread ---------------------------------------------------


def _read_all(per_peer: bool) -> list[_Reading]:
    """Every live endpoint's statistics, each read in its own trio run's thread."""
    try:
        here: trio.lowlevel.TrioToken | None = trio.lowlevel.current_trio_token()
    except RuntimeError:
        here = None
    runs = list(dict.fromkeys(token for _endpoint, token in live_endpoints()))
    readings: list[_Reading] = []
    for token in runs:
        if token is here:
            readings += _read_run(token, per_peer)
        elif here is None:
            try:
                readings += trio.from_thread.run_sync(_read_run, token, per_peer, trio_token=token)
            except trio.RunFinishedError:
                continue
        # else: another run, from inside this one: waiting for it could deadlock.
    return readings


def _read_run(token: trio.lowlevel.TrioToken, per_peer: bool) -> list[_Reading]:
    """The statistics of the endpoints of the trio run whose thread this is."""
    readings: list[_Reading] = []
    for endpoint, owner in live_endpoints():
        if owner is not token or endpoint._closed:
            continue
        kind = _kind(endpoint)
        connections = endpoint._connections.values() if per_peer or kind == "connection" else ()
        readings.append(
            _Reading(
                endpoint=endpoint,
                kind=kind,
                local_address=endpoint.local_address,
                remote=endpoint._remote if kind == "connection" else None,
                statistics=endpoint.statistics(),
                peers=tuple(
                    _PeerReading(connection, connection.address, connection.statistics())
                    for connection in connections
                ),
            )
        )
    return readings


def _kind(endpoint: Endpoint) -> str:
    if isinstance(endpoint, UDPServer):
        return "server"
    if isinstance(endpoint, MulticastEndpoint):
        return "multicast"
    if isinstance(endpoint, BroadcastEndpoint):
        return "broadcast"
    if type(endpoint) is Endpoint:
        return "connection"
    return type(endpoint).__name__.lower()


def _gone(owner: object) -> bool:
    if isinstance(owner, Endpoint):
        return owner._closed
    if isinstance(owner, Connection):
        return owner.ended is not None or owner._endpoint._closed
    return False  # a worker's: see _forget_closed


def _text(address: Address) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


#: HELP texts for fields whose docstrings lean on the field above them.
_OWN_HELP = {
    "bytes_received": "Bytes of the datagrams read from the socket, headers included.",
    "bytes_sent": "Bytes of the datagrams handed to the kernel, headers included.",
    "rtt_variation": "Mean deviation of the round-trip time, in seconds.",
}


@functools.cache
def _field_docs() -> dict[str, str]:
    """Each statistics field's docstring, on one line: the HELP texts (where
    the source cannot be read, the collector says less)."""
    try:
        source = inspect.getsource(_statistics)
    except (OSError, TypeError):
        return dict(_OWN_HELP)
    docs: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name in ("PeerStatistics", "EndpointStatistics"):
            for field, doc in itertools.pairwise(node.body):
                if (
                    isinstance(field, ast.AnnAssign)
                    and isinstance(field.target, ast.Name)
                    and isinstance(doc, ast.Expr)
                    and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str)
                ):
                    docs[field.target.id] = " ".join(doc.value.value.replace("``", "").split())
    return {**docs, **_OWN_HELP}
