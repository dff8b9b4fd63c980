"""Endpoint options: one frozen, validated, dict-round-trippable value."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

import attrs

from ._frame import FRAGMENT_OVERHEAD, MAX_FRAGMENTS

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Self

#: The largest UDP payload IPv4 can carry (65535 - 20 byte IP header - 8 byte UDP header).
MAX_UDP_PAYLOAD = 65507

Overflow = Literal["drop_oldest", "drop_newest"]


def _integer(low: int, high: int, *, optional: bool = False) -> Callable[[Any, Any, Any], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if optional and value is None:
            return
        if type(value) is not int or not low <= value <= high:
            also = " or None" if optional else ""
            raise ValueError(
                f"{attribute.name} must be an integer from {low} to {high}{also}, got {value!r}"
            )

    return check


def _seconds(low: float, high: float, *, optional: bool = False) -> Callable[[Any, Any, Any], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if optional and value is None:
            return
        if (
            type(value) not in (int, float)
            or not math.isfinite(value)  # type: ignore[arg-type]
            or not low <= value <= high  # type: ignore[operator]
        ):
            also = " (or None to disable it)" if optional else ""
            raise ValueError(
                f"{attribute.name} must be a number of seconds from {low} to {high}{also}, "
                f"got {value!r}"
            )

    return check


def _rate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if (
        type(value) not in (int, float)
        or not math.isfinite(value)  # type: ignore[arg-type]
        or not 1000 <= value <= 1e12  # type: ignore[operator]
    ):
        raise ValueError(
            f"{attribute.name} must be a number of bytes per second from 1000 to 1e12 "
            f"(or None to send as fast as the kernel takes them), got {value!r}"
        )


def _dscp(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 63:
        raise ValueError(
            f"{attribute.name} must be a trioudp.Priority or a DSCP from 0 to 63, got {value!r}"
        )


def _boolean(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not bool:
        raise ValueError(f"{attribute.name} must be True or False, got {value!r}")


def _overflow(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("drop_oldest", "drop_newest"):
        raise ValueError(f"{attribute.name} must be 'drop_oldest' or 'drop_newest', got {value!r}")


_MiB = 1024 * 1024


@attrs.frozen(kw_only=True)
class Config:
    """Every option of a trioudp endpoint, validated when it is made.

    Pass one to any ``open_*`` function as ``config=``, or give the same names as
    keyword arguments (they override the ``config``'s values). ``Config.from_dict``
    and ``to_dict`` turn it into plain JSON/TOML-friendly values and back.

    Memory is bounded by these numbers: one peer holds at most ``peer_buffer_bytes``
    of incomplete or out-of-order messages, each receive channel at most
    ``channel_capacity`` messages of at most ``channel_bytes`` in all, and the
    endpoint at most ``total_buffer_bytes`` of everything it holds, channels
    included, each thing charged what it really costs in memory.
    """

    framing: bool = attrs.field(default=True, validator=_boolean)
    """True: trioudp frames (header, CRC32C, order, fragments). False: raw mode,
    plain datagrams in and out, to talk to any UDP peer."""

    max_datagram_size: int = attrs.field(default=1200, validator=_integer(64, MAX_UDP_PAYLOAD))
    """The largest UDP payload sent, in bytes. 1200 crosses any Internet path
    (RFC 9000 §14, RFC 8085 §3.2); raise it on a LAN with a known MTU."""

    max_message_size: int = attrs.field(default=_MiB, validator=_integer(0, 2**32 - 1))
    """The largest message sent or accepted, in bytes. Larger messages are
    fragmented into ``max_datagram_size`` pieces; a peer's larger ones are dropped."""

    ordered: bool = attrs.field(default=True, validator=_boolean)
    """True: each peer's messages are delivered in the order they were sent,
    waiting up to ``reorder_timeout`` for a missing one. False: delivered as soon as
    whole. Duplicates are dropped either way."""

    reorder_window: int = attrs.field(default=256, validator=_integer(1, 32768))
    """How many messages ahead of the next expected one are held, and how far back
    duplicates are remembered."""

    reorder_timeout: float = attrs.field(default=0.1, validator=_seconds(0, 3600))
    """How long a message waits for an earlier missing one before the gap is
    skipped and counted lost (``ordered=True`` only)."""

    reassembly_timeout: float = attrs.field(default=1.0, validator=_seconds(0.001, 3600))
    """How long an incomplete fragmented message may go without a new fragment
    before it is dropped."""

    max_partial_messages: int = attrs.field(default=32, validator=_integer(1, 65535))
    """How many fragmented messages one peer may have in reassembly at once."""

    peer_buffer_bytes: int = attrs.field(default=4 * _MiB, validator=_integer(0, 2**40))
    """Bytes one peer may hold in reassembly and reorder buffers together (and in
    reliable mode, its messages the application has not received yet), each
    thing charged its real cost in memory, not only its payload."""

    total_buffer_bytes: int = attrs.field(default=64 * _MiB, validator=_integer(0, 2**44))
    """Bytes an endpoint may hold in all: every peer's reassembly and reorder
    buffers, every receive channel (the server's, each connection's), and
    reliable messages queued to send, each charged its real cost in memory
    (``statistics().bytes_buffered``)."""

    channel_capacity: int = attrs.field(default=1024, validator=_integer(1, 2**20))
    """Messages a receive channel holds before ``overflow`` applies."""

    channel_bytes: int = attrs.field(default=16 * _MiB, validator=_integer(1, 2**40))
    """Payload bytes a receive channel holds before ``overflow`` applies: with
    ``channel_capacity``, the bound on what waits for a slow consumer."""

    overflow: Overflow = attrs.field(default="drop_oldest", validator=_overflow)
    """What a full receive channel does with a new message: ``"drop_oldest"``
    makes room by dropping its oldest one, ``"drop_newest"`` drops the new one.
    Either way the drop is counted. While the channel's consumer keeps taking
    messages, the socket is read only as fast as it takes them: what it cannot
    take yet waits in the kernel's buffer (whose drops are counted as
    ``datagrams_kernel_dropped``) rather than being decoded and dropped, so a
    flood costs the consumer nothing. A consumer that stops taking (or waits on
    something else) holds nothing up: the socket is read on for the other
    peers, and its full channel applies this policy."""

    max_peers: int = attrs.field(default=10_000, validator=_integer(1, 2**24))
    """Peers an endpoint keeps state for; datagrams from further new peers are
    dropped and counted until one leaves."""

    idle_timeout: float | None = attrs.field(
        default=60.0, validator=_seconds(0.001, 7 * 86400, optional=True)
    )
    """Seconds of silence after which a server forgets a peer and ends its
    connection; None keeps peers until ``max_peers`` pushes them out. Messages
    still waiting in an ended connection's own channel are let go this long
    after it ended (60 s if None)."""

    receive_buffer_size: int | None = attrs.field(
        default=2 * _MiB, validator=_integer(1024, 2**31 - 1, optional=True)
    )
    """SO_RCVBUF to ask the kernel for, so a burst of fragments is not lost while
    the receive task is busy (Linux caps it at net.core.rmem_max); None keeps the
    system's default."""

    send_buffer_size: int | None = attrs.field(
        default=None, validator=_integer(1024, 2**31 - 1, optional=True)
    )
    """SO_SNDBUF to ask the kernel for (Linux caps it at net.core.wmem_max)."""

    send_rate: float | None = attrs.field(default=None, validator=_rate)
    """Bytes per second this unreliable endpoint sends at most, in all (UDP
    payloads: the application's datagrams and its own, to every peer), in
    bursts of up to 64 KiB or 5 ms of ``send_rate``, whichever is more. A
    ``send()`` that would go faster waits (as it waits for room in the kernel),
    so a sender of large messages does not overrun a receiver that could keep
    up at this rate; cancelled while it waits, the rest of its message is not
    sent (counted in ``datagrams_send_dropped``). None: as fast as the kernel
    takes them. Not with ``reliable=True``, which paces itself; at least four
    datagrams per ``reassembly_timeout``, so that a message's fragments arrive
    close enough together to be put back together."""

    priority: int = attrs.field(default=0, validator=_dscp)
    """The DSCP every datagram is marked with (a :class:`Priority` or 0 to 63):
    how networks that honour it should queue this endpoint's traffic."""

    offload: bool = attrs.field(default=True, validator=_boolean)
    """Use Linux UDP segmentation offload where the kernel has it: the
    fragments of a large message (and runs of equal-sized datagrams) go to the
    kernel in one ``sendmsg`` (GSO), and once a datagram of 512 bytes or more
    arrives, the kernel may hand over several received datagrams in one read
    (GRO). False sends and reads one datagram per system call. Elsewhere it
    does nothing."""

    reliable: bool = attrs.field(default=False, validator=_boolean)
    """True: every message is acknowledged, sent again until it is, and delivered
    exactly once and in order, or ``send()``/``flush()`` raise
    :class:`PeerLostError`. Both ends must set it; unicast only. A sender holds
    at most ``reorder_window`` unacknowledged messages (and about
    ``peer_buffer_bytes`` of them): ``send()`` waits for room."""

    give_up_timeout: float = attrs.field(default=10.0, validator=_seconds(0.1, 86400))
    """How long a reliable sender waits for any answer from a peer that has
    unacknowledged messages before it declares the peer lost."""

    probe_path_mtu: bool = attrs.field(default=True, validator=_boolean)
    """Reliable mode: once a message had to be cut into fragments, probe the
    path for larger datagrams than ``max_datagram_size`` (RFC 8899: 1472,
    8972 and 65507 bytes, what Ethernet, jumbo frames and the loopback carry),
    and cut the messages sent after a size is confirmed to it (the peer's
    ``max_datagram_size`` statistic). Its datagrams then go with IP
    fragmentation forbidden. On Linux, with ``max_datagram_size`` at most
    1200 (a larger one you chose for a path you know: it is kept, and IP may
    fragment it as before), on a socket trioudp made (``from_socket`` probes
    only if you set ``IP_MTU_DISCOVER`` to ``IP_PMTUDISC_DO`` or ``_PROBE``
    yourself). False keeps every datagram within ``max_datagram_size``, as on
    a path whose MTU may shrink during a session (docs/protocol.md)."""

    keepalive: float | None = attrs.field(
        default=None, validator=_seconds(15, 86400, optional=True)
    )
    """Seconds of silence towards a peer after which a PING is sent (jittered to
    80-100% of it, RFC 8085 §3.5, at least 15 s); its answer keeps ``state``
    established. None sends none."""

    dead_timeout: float | None = attrs.field(
        default=None, validator=_seconds(0.001, 7 * 86400, optional=True)
    )
    """Seconds without hearing from a peer after which its connection's state
    is ``LOST`` (with ``keepalive``, a live peer answers the PINGs). None: never."""

    def __attrs_post_init__(self) -> None:
        if self.framing:
            chunk = self.max_datagram_size - FRAGMENT_OVERHEAD
            if -(-self.max_message_size // chunk) > MAX_FRAGMENTS:
                raise ValueError(
                    f"max_message_size={self.max_message_size} needs more than {MAX_FRAGMENTS} "
                    f"fragments of {chunk} bytes; raise max_datagram_size or lower "
                    f"max_message_size to at most {MAX_FRAGMENTS * chunk}"
                )
            if self.channel_bytes < self.max_message_size:
                raise ValueError(
                    f"channel_bytes={self.channel_bytes} cannot hold one message of "
                    f"max_message_size={self.max_message_size}; raise channel_bytes"
                )
            if self.peer_buffer_bytes < self.max_message_size:
                raise ValueError(
                    f"peer_buffer_bytes={self.peer_buffer_bytes} cannot hold one message of "
                    f"max_message_size={self.max_message_size}; raise peer_buffer_bytes"
                )
        if self.reliable and not self.framing:
            raise ValueError(
                "reliable=True needs trioudp's frames to carry acknowledgements; "
                "it cannot be used with framing=False"
            )
        if self.keepalive is not None and not self.framing:
            raise ValueError(
                "keepalive sends trioudp PING frames, which a plain UDP peer would take for "
                "data; it cannot be used with framing=False (dead_timeout can)"
            )
        if self.reliable and not self.ordered:
            raise ValueError(
                "reliable=True delivers every message once and in order; drop ordered=False"
            )
        if (
            self.keepalive is not None
            and self.dead_timeout is not None
            and self.dead_timeout <= self.keepalive
        ):
            raise ValueError(
                f"dead_timeout={self.dead_timeout} would declare a peer lost before the "
                f"keepalive={self.keepalive} PING goes; make it a few keepalives long"
            )
        if self.total_buffer_bytes < self.peer_buffer_bytes:
            raise ValueError(
                f"total_buffer_bytes={self.total_buffer_bytes} is smaller than "
                f"peer_buffer_bytes={self.peer_buffer_bytes}; raise total_buffer_bytes"
            )
        self._check_send_rate()

    def _check_send_rate(self) -> None:
        rate = self.send_rate
        if rate is None:
            return
        if self.reliable:
            raise ValueError(
                "send_rate paces unreliable sends; reliable=True paces itself by its "
                "congestion control and acknowledgements, which must not wait behind "
                "paced data: drop send_rate"
            )
        if self.framing and rate * self.reassembly_timeout < 4 * self.max_datagram_size:
            raise ValueError(
                f"send_rate={rate:g} sends a {self.max_datagram_size}-byte fragment every "
                f"{self.max_datagram_size / rate:.3g} s, too close to "
                f"reassembly_timeout={self.reassembly_timeout} for a receiver to keep a "
                f"message's fragments: raise send_rate to at least "
                f"{4 * self.max_datagram_size / self.reassembly_timeout:g} or "
                f"reassembly_timeout"
            )

    def to_dict(self) -> dict[str, Any]:
        """Every option as plain values (ints, floats, bools, strings, None)."""
        return {
            name: int(value) if isinstance(value, enum.IntEnum) else value
            for name, value in attrs.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> Self:
        """Make a Config from a mapping such as ``to_dict()`` gave or a JSON/TOML
        table; missing options take their defaults, unknown ones are an error."""
        return cls(**_known(options))

    def evolve(self, **options: Any) -> Self:
        """A copy with the given options changed (validated like a new Config)."""
        return attrs.evolve(self, **_known(options))


def _known(options: object) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise TypeError(
            f"Config.from_dict() takes a mapping of option names to values, such as "
            f"{{'reliable': True}} or a table read from JSON or TOML, got "
            f"{type(options).__name__}"
        )
    given = cast("Mapping[object, Any]", options)
    names = attrs.fields_dict(Config)
    unknown = sorted(str(name) for name in given if name not in names)
    if unknown:
        raise TypeError(
            f"unknown trioudp option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"the options are: {', '.join(names)}"
        )
    return cast("dict[str, Any]", dict(given))


class Options(TypedDict, total=False):
    """The keyword arguments every ``open_*`` function takes: the fields of Config."""

    framing: bool
    max_datagram_size: int
    max_message_size: int
    ordered: bool
    reorder_window: int
    reorder_timeout: float
    reassembly_timeout: float
    max_partial_messages: int
    peer_buffer_bytes: int
    total_buffer_bytes: int
    channel_capacity: int
    channel_bytes: int
    overflow: Overflow
    max_peers: int
    idle_timeout: float | None
    receive_buffer_size: int | None
    send_buffer_size: int | None
    send_rate: float | None
    priority: int
    offload: bool
    reliable: bool
    give_up_timeout: float
    probe_path_mtu: bool
    keepalive: float | None
    dead_timeout: float | None


def make_config(config: Config | None, options: Mapping[str, Any]) -> Config:
    """The Config an ``open_*`` call asked for: ``config`` (or the defaults) with
    ``options`` laid over it."""
    if config is not None and not isinstance(config, Config):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"config must be a trioudp.Config, got {type(config).__name__}")
    if config is None:
        return Config.from_dict(options)
    return config.evolve(**options) if options else config
