"""Loss-recovery building blocks: the RTT estimator and acknowledgement ranges."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioudp._recovery import AckRanges, RttEstimator


def test_initial_probe_timeout_is_about_a_second() -> None:
    # RFC 9002: 333 ms initial RTT -> 333 + 4 * 166.5 + 25 ms.
    assert RttEstimator().pto() == pytest.approx(1.024)


def test_samples_move_the_estimate_as_rfc_9002_says() -> None:
    rtt = RttEstimator()
    rtt.update(0.1)
    assert (rtt.smoothed, rtt.variation, rtt.minimum) == (0.1, 0.05, 0.1)
    assert rtt.pto() == pytest.approx(0.1 + 0.2 + 0.025)
    rtt.update(0.2, ack_delay=0.01)  # the peer's delay is taken off: 0.19
    assert rtt.variation == pytest.approx(0.75 * 0.05 + 0.25 * 0.09)
    assert rtt.smoothed == pytest.approx(0.875 * 0.1 + 0.125 * 0.19)
    assert rtt.latest == 0.2


def test_ack_delay_is_capped_and_never_goes_below_the_minimum() -> None:
    rtt = RttEstimator()
    rtt.update(0.1)
    rtt.update(0.11, ack_delay=0.05)  # 0.11 < 0.1 + 0.025: not adjusted
    assert rtt.smoothed == pytest.approx(0.875 * 0.1 + 0.125 * 0.11)
    rtt = RttEstimator()
    rtt.update(0.1)
    rtt.update(0.5, ack_delay=1.0)  # capped at max_ack_delay
    assert rtt.smoothed == pytest.approx(0.875 * 0.1 + 0.125 * 0.475)


def test_backoff_doubles_and_is_capped() -> None:
    rtt = RttEstimator()
    rtt.update(0.1)
    assert [rtt.pto(n) for n in range(3)] == pytest.approx([0.325, 0.65, 1.3])
    assert rtt.pto(100) == 60.0


def test_loss_delay_is_nine_eighths_of_the_rtt() -> None:
    rtt = RttEstimator()
    rtt.update(0.08)
    rtt.update(0.16)
    assert rtt.loss_delay() == pytest.approx(9 / 8 * 0.16)
    rtt.update(-1)  # nonsense samples are ignored
    assert rtt.latest == 0.16


def test_ranges_merge_and_report_newest_first() -> None:
    ranges = AckRanges()
    for number in (5, 7, 6, 1, 2, 10):
        assert ranges.add(number)
    assert not ranges.add(6)
    assert ranges.ranges() == [(10, 10), (5, 7), (1, 2)]
    assert 6 in ranges
    assert 3 not in ranges
    assert "x" not in ranges
    assert ranges.largest() == 10
    assert ranges.add(3)
    assert ranges.add(4)
    assert ranges.ranges() == [(10, 10), (1, 7)]


def test_ranges_are_bounded() -> None:
    ranges = AckRanges(limit=3)
    for number in range(0, 20, 2):
        ranges.add(number)
    assert ranges.ranges() == [(18, 18), (16, 16), (14, 14)]
    with pytest.raises(ValueError, match="limit"):
        AckRanges(limit=0)


@given(st.lists(st.integers(0, 200), max_size=120))
def test_ranges_match_the_set_of_numbers(numbers: list[int]) -> None:
    ranges = AckRanges(limit=1000)
    for number in numbers:
        ranges.add(number)
    covered = {n for start, end in ranges.ranges() for n in range(start, end + 1)}
    assert covered == set(numbers)
    listed = ranges.ranges()
    assert all(a[0] > b[1] + 1 for a, b in itertools.pairwise(listed))  # disjoint, not adjacent


def test_the_probe_timeout_follows_each_new_sample_and_backoff() -> None:
    # It is kept between samples (a sender reads it at every look at its
    # timers), so it must be worked out again after each sample and backoff.
    rtt = RttEstimator()
    timeouts: list[float] = []
    for sample, backoff in [(0.1, 0), (0.3, 0), (0.02, 0), (0.02, 1), (5.0, 1), (5.0, 0)]:
        rtt.update(sample)
        timeout = rtt.probe_timeout(backoff, 1.0)
        assert timeout == min(rtt.pto(backoff), max(1.0, rtt.pto()))
        timeouts.append(timeout)
    assert len(set(timeouts)) == len(timeouts)
