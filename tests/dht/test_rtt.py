"""Round-trip estimates (pkdns.dht.rtt): the soft timeout from a handful of round trips, a
join's hellos as samples that leave the answer rate alone."""

from __future__ import annotations

from pkdns.dht.rtt import (
    DEFAULT_GIVE_UP,
    DEFAULT_SOFT,
    FEW_SAMPLES_FACTOR,
    MIN_SAMPLES,
    PRIOR_ANSWER_RATE,
    SOFT_MAX,
    SOFT_MIN,
    RttEstimator,
)

A = ("192.0.2.1", 6881)


def test_nothing_measured_the_defaults_apply() -> None:
    rtt = RttEstimator()
    assert rtt.soft_timeout() == DEFAULT_SOFT
    assert rtt.give_up(A) == DEFAULT_GIVE_UP
    assert rtt.quantile(0.5) is None


def test_one_fast_round_trip_lowers_the_soft_timeout_to_its_floor() -> None:
    """A cold command on a LAN (or the loopback lab) knows one round trip of a few ms once it
    joined: its first lookup round frees silent slots after SOFT_MIN, not DEFAULT_SOFT."""
    rtt = RttEstimator()
    rtt.hello(A, 0.002)
    assert rtt.soft_timeout() == SOFT_MIN
    assert rtt.give_up(A) == DEFAULT_GIVE_UP   # too few to say when to stop counting


def test_a_few_round_trips_use_the_slowest_never_above_the_default() -> None:
    rtt = RttEstimator()
    for i, t in enumerate([0.05, 0.12, 0.08]):
        rtt.observe(("192.0.2.1", i), t)
    assert rtt.soft_timeout() == FEW_SAMPLES_FACTOR * 0.12
    rtt.observe(("192.0.2.9", 1), 0.9)   # one slow answer: back to the default, not 1.8 s
    assert rtt.soft_timeout() == DEFAULT_SOFT


def test_from_min_samples_the_quantile_takes_over() -> None:
    """Eight round trips, the slowest an outlier: p75 x 1.25, which the outlier does not
    move (twice the slowest would have been DEFAULT_SOFT)."""
    rtt = RttEstimator()
    for i in range(MIN_SAMPLES - 1):
        rtt.observe(("192.0.2.1", i), 0.1)
    rtt.observe(("192.0.2.2", 1), 0.35)
    assert rtt.soft_timeout() == 1.25 * 0.1
    for i in range(3 * MIN_SAMPLES):
        rtt.observe(("192.0.2.3", i), 5.0)
    assert rtt.soft_timeout() == SOFT_MAX


def test_a_hello_is_a_sample_and_a_known_node_but_not_an_answer_rate() -> None:
    """A join does not report its unanswered hellos, so its answers must not raise the
    answer rate (which widens lookups when it falls); a lookup's answer does."""
    rtt = RttEstimator()
    assert rtt.node(A) is None
    rtt.hello(A, 0.03)
    assert rtt.node(A) == 0.03 and rtt.answer_rate == PRIOR_ANSWER_RATE
    rtt.observe(A, 0.05)
    assert rtt.answer_rate > PRIOR_ANSWER_RATE
    assert rtt.node(A) == 0.03 + (0.05 - 0.03) / 8   # smoothed (RFC 6298 §2)


def test_negative_round_trips_are_ignored() -> None:
    """A clock that stepped back must not make a sample (or a known node)."""
    rtt = RttEstimator()
    rtt.hello(A, -0.1)
    rtt.observe(A, -0.1)
    assert rtt.node(A) is None and rtt.soft_timeout() == DEFAULT_SOFT
    assert rtt.answer_rate == PRIOR_ANSWER_RATE
