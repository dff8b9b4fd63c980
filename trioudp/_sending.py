"""What the application sends, as datagrams: checking, encoding and bundling,
and the one list of datagrams the engine hands the shell.

Unreliable messages are encoded at once: one frame, or fragments of
``max_datagram_size``; a batch packs small messages into BUNDLE frames (one
header and one checksum for several). Reliable messages go to their peer's
``Sender`` (_reliable.py), which makes its datagrams when it may send them.

Every datagram the engine makes, for the application or by itself (ACKs,
PINGs, REJECTs, retransmissions), is appended to one ``Output``, which the
shell empties with ``Engine.datagrams_to_send`` and puts on the wire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._frame import (
    MAX_TOPIC,
    PART_OVERHEAD,
    byte_view,
    encode_bundle,
    encode_message,
    frame_overhead,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TypeAlias

    from typing_extensions import Buffer

    from ._config import Config
    from ._message import Address
    from ._peer import Peer

#: A datagram to put on the wire: its bytes, where to, and the DSCP to mark it
#: with (None: the endpoint's own).
Datagram: TypeAlias = "tuple[bytes, Address, int | None]"


def encode_topic(topic: str) -> bytes:
    """A topic's wire form, checked: UTF-8, at most MAX_TOPIC bytes."""
    if not isinstance(topic, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"a topic is a str, got {type(topic).__name__}")
    try:
        encoded = topic.encode()
    except UnicodeEncodeError:
        raise ValueError(
            f"a topic must be valid text (it goes as UTF-8), got {topic!r}, which has a "
            f"lone surrogate"
        ) from None
    if len(encoded) > MAX_TOPIC:
        raise ValueError(f"a topic is at most {MAX_TOPIC} bytes of UTF-8, got {len(encoded)}")
    return encoded


class Output:
    """The datagrams waiting for the shell, counted as sent to their peer."""

    __slots__ = ("datagrams",)

    def __init__(self) -> None:
        self.datagrams: list[Datagram] = []

    def add(self, peer: Peer, datagram: bytes, now: float, priority: int | None = None) -> None:
        counters = peer.counters
        counters.datagrams_sent += 1
        counters.bytes_sent += len(datagram)
        peer.last_sent = now
        self.datagrams.append((datagram, peer.address, priority))

    def extend(
        self, peer: Peer, datagrams: list[bytes], now: float, priority: int | None = None
    ) -> None:
        """``add`` for each of ``datagrams``, counted at once."""
        counters = peer.counters
        counters.datagrams_sent += len(datagrams)
        counters.bytes_sent += sum(map(len, datagrams))
        peer.last_sent = now
        address = peer.address
        self.datagrams.extend([(datagram, address, priority) for datagram in datagrams])

    def add_to(self, address: Address, datagram: bytes) -> None:
        """A datagram to an address no peer owns (a REJECT to a stranger)."""
        self.datagrams.append((datagram, address, None))


class Encoder:
    """Turns the application's payloads into datagrams for one endpoint."""

    def __init__(self, config: Config, key: bytes | None) -> None:
        self._config = config
        self._key = key
        self.framing = config.framing

    def checked(self, payloads: Sequence[Buffer]) -> list[memoryview]:
        """Each payload as a view of its bytes; raises TypeError or ValueError,
        before anything is sent, if any of them cannot be."""
        limit = self._config.max_message_size
        views: list[memoryview] = []
        for payload in payloads:
            view = byte_view(payload)
            if self.framing and view.nbytes > limit:
                raise ValueError(
                    f"a {view.nbytes}-byte message is larger than max_message_size={limit}; "
                    f"raise max_message_size on both ends"
                )
            views.append(view)
        return views

    def encode(
        self, peer: Peer, payloads: list[memoryview], topic: bytes, *, group: bool
    ) -> list[bytes]:
        """The datagrams that carry checked ``payloads`` to ``peer``, in order:
        in a batch, small messages share BUNDLE frames up to
        ``max_datagram_size``; larger ones are fragmented."""
        config = self._config
        if not self.framing:
            if topic:
                raise ValueError("raw mode (framing=False) has no header to carry a topic")
            for view in payloads:
                if view.nbytes > config.max_datagram_size:
                    raise ValueError(
                        f"a {view.nbytes}-byte datagram is larger than max_datagram_size="
                        f"{config.max_datagram_size}; raw mode does not fragment, so raise "
                        f"max_datagram_size (up to 65507) or send less"
                    )
            return [bytes(view) for view in payloads]
        if len(payloads) == 1:  # one message: nothing to bundle
            (view,) = payloads
            made = encode_message(
                peer.send_session,
                peer.send_sequence,
                view,
                config.max_datagram_size,
                topic=topic,
                group=group,
                key=self._key,
            )
            peer.send_sequence = (peer.send_sequence + 1) & 0xFFFFFFFF
            return made
        room = config.max_datagram_size - frame_overhead(topic=topic, key=self._key, reliable=False)
        datagrams: list[bytes] = []
        bundle: list[memoryview] = []
        used = 0
        sequence = peer.send_sequence
        for view in payloads:
            size = view.nbytes + PART_OVERHEAD
            if bundle and used + size > room:
                sequence = self._close(peer, sequence, bundle, topic, group, datagrams)
                used = 0
            bundle.append(view)
            used += size
            if size > room:
                sequence = self._close(peer, sequence, bundle, topic, group, datagrams)
                used = 0
        self._close(peer, sequence, bundle, topic, group, datagrams)
        return datagrams

    def _close(
        self,
        peer: Peer,
        sequence: int,
        bundle: list[memoryview],
        topic: bytes,
        group: bool,
        out: list[bytes],
    ) -> int:
        """Encode the messages gathered in ``bundle`` from ``sequence`` on (one
        alone as a plain frame or fragments, several as a BUNDLE); empties it
        and gives the next sequence number."""
        if not bundle:
            return sequence
        session = peer.send_session
        if len(bundle) == 1:
            out.extend(
                encode_message(
                    session,
                    sequence,
                    bundle[0],
                    self._config.max_datagram_size,
                    topic=topic,
                    group=group,
                    key=self._key,
                )
            )
        else:
            out.append(
                encode_bundle(session, sequence, bundle, topic=topic, group=group, key=self._key)
            )
        sequence = (sequence + len(bundle)) & 0xFFFFFFFF
        peer.send_sequence = sequence
        bundle.clear()
        return sequence
