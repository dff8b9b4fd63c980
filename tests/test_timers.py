"""Every timeout from one table (trioudp/_timers.py): the heap that wakes the
engine and the actions that fire are read from the same entries, so the
engine never sleeps past a due timer and never wakes for nothing twice."""

from __future__ import annotations

import itertools
from math import inf
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sansio import ADDRESSES, traffic

from trioudp import Config
from trioudp._engine import Engine

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
