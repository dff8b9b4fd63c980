"""Every timeout from one table (trioudp/_timers.py): the heap that wakes the
engine and the actions that fire are read from the same entries, so the
engine never sleeps past a due timer and never wakes for nothing twice."""

from __future__ import annotations

import gc
import itertools
from math import inf
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sansio import ADDRESSES, traffic

from trioudp import Config
from trioudp._engine import Engine
from trioudp._peer import Peer

CONFIGS: list[dict[str, Any]] = [
    {"reorder_timeout": 0.02, "reassembly_timeout": 0.1, "idle_timeout": 1.0},
    {"ordered": False, "idle_timeout": 0.5},
    {"keepalive": 15, "dead_timeout": 40, "idle_timeout": 100.0},
]


def heap_is_never_late(engine: Engine) -> None:
    """Each peer's entry in the heap is due no later than its earliest timer."""
    timers = engine._timers
    for peer in engine.peers.values():
        earliest = min((entry[0] for entry in timers.table(peer, engine._ready)), default=inf)
        assert peer.timer_at <= earliest


@given(traffic(), st.sampled_from(CONFIGS))
def test_the_heap_and_the_actions_read_one_table(
    arriving: list[tuple[int, bytes, float]], options: dict[str, Any]
) -> None:
    engine = Engine(Config(**options), now=0.0, new_session_id=itertools.count(1).__next__)
    for source, datagram, now in arriving:
        engine.handle_timer(now)
        engine.receive_datagram(datagram, ADDRESSES[source], now)
        engine.datagrams_to_send(now)
        heap_is_never_late(engine)
    # Woken at each deadline, the engine finds something due, and afterwards
    # nothing is due at that time any more: it never spins, never stalls.
    previous = -inf
    for _ in range(200):
        deadline = engine.next_deadline()
        if deadline == inf:
            break
        assert deadline > previous
        engine.handle_timer(deadline)
        engine.datagrams_to_send(deadline)
        heap_is_never_late(engine)
        previous = deadline
    else:
        raise AssertionError("timers kept coming for 200 wake-ups")


def test_a_forgotten_peer_is_let_go_at_once_not_at_its_last_deadline() -> None:
    """Peers forgotten by the thousand (each evicted by the next) leave stale
    entries in the timer heap; these are swept out when half the heap is
    stale, so the Peers (and all they hold) are freed at once rather than at
    their idle deadline: session churn once kept millions of them alive."""
    engine = Engine(Config(max_peers=1), now=0.0)
    gc.collect()
    before = _peers_alive()
    engine.peer_for(("10.0.0.2", 1000), 0.0)
    for number in range(1, 10_000):
        engine.peer_for(("10.0.0.2", 1000 + number), number / 1000)
        engine.events()
    assert len(engine._timers.heap) < 200
    gc.collect()
    assert _peers_alive() - before < 200
    assert engine.statistics().peers_closed == 9_999
    engine.handle_timer(10**6)  # the survivor's deadlines still fire
    assert engine.statistics().peers_closed == 10_000


def _peers_alive() -> int:
    return sum(isinstance(thing, Peer) for thing in gc.get_objects())
