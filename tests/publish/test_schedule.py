"""The pure republish plan: zones on schedule and on reload, popular packets within budget."""

from __future__ import annotations

import dataclasses

from pkdns.config import RepublishConfig, ZoneConfig
from pkdns.publish.schedule import Budget, Candidate, RepublishPlan
from pkdns.state import ScheduleEntry

T0 = 1_700_000_000.0
CFG = RepublishConfig()
Z1 = ZoneConfig(seed="/k/1.seed", zone="/k/1.zone", interval=600)
Z2 = ZoneConfig(seed="/k/2.seed", zone="/k/2.zone", interval=3600)
A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_zones_due_at_start_then_every_interval() -> None:
    plan = RepublishPlan(dataclasses.replace(CFG, ip_check_interval=0), T0)
    plan.set_zones([Z1, Z2], T0)
    assert [j.zone for j in plan.due_zones(T0)] == [Z1, Z2]
    assert plan.zone_done("zone:/k/1.zone", 8, None, T0) == T0 + 600
    assert plan.zone_done("zone:/k/2.zone", 3, None, T0) == T0 + 3600
    assert plan.due_zones(T0 + 599) == []
    assert [j.zone for j in plan.due_zones(T0 + 600)] == [Z1]
    assert plan.next_wakeup(T0 + 1) == T0 + 1   # popular candidates not looked at yet
    assert plan.due_popular([], T0 + 1) == []
    assert plan.next_wakeup(T0 + 2) == T0 + 61  # the next popular tick comes first


def test_dyndns_zone_is_checked_and_due_at_once_when_the_address_changed() -> None:
    """A new external address is noticed within ip_check_interval, not at the interval."""
    plan = RepublishPlan(CFG, T0)
    plan.set_zones([Z2], T0)
    assert plan.due_checks(T0) == []                     # due anyway (and not signed yet)
    plan.zone_done("zone:/k/2.zone", 8, None, T0)
    assert plan.next_wakeup(T0 + 1) == T0 + 1            # the first popular tick
    plan.due_popular([], T0 + 1)
    assert plan.next_wakeup(T0 + 2) == T0 + CFG.ip_check_interval == T0 + 30
    assert plan.due_checks(T0 + 29) == []
    (job,) = plan.due_checks(T0 + 30)
    assert plan.checked(job.name, False, T0 + 30) is False
    assert plan.due_zones(T0 + 30) == [] and plan.due_checks(T0 + 59) == []
    assert [j.name for j in plan.due_checks(T0 + 60)] == [job.name]
    assert plan.checked(job.name, True, T0 + 60) is True
    assert plan.due_zones(T0 + 60) == [job]              # republished now, not at T0 + 3600
    assert plan.due_checks(T0 + 90) == []                # due: no check needed
    plan.zone_done(job.name, 8, None, T0 + 61)
    assert plan.due_checks(T0 + 91) == [job]
    assert plan.checked(job.name, None, T0 + 91) is False   # no variables: stop checking
    assert plan.due_checks(T0 + 3000) == [] and plan.next_wakeup(T0 + 3000) <= T0 + 3661
    off = RepublishPlan(dataclasses.replace(CFG, ip_check_interval=0), T0)
    off.set_zones([Z2], T0)
    off.zone_done("zone:/k/2.zone", 8, None, T0)
    assert off.due_checks(T0 + 3599) == []


def test_failed_zone_is_retried_sooner() -> None:
    plan = RepublishPlan(CFG, T0)
    plan.set_zones([Z2], T0)
    assert plan.zone_done("zone:/k/2.zone", 0, None, T0) == T0 + CFG.retry_after
    job = plan.zones["zone:/k/2.zone"]
    assert job.failures == 1 and job.last_result == "stored on 0"
    assert plan.zone_done("zone:/k/2.zone", 0, "UsageError: bad zone", T0 + 300) == T0 + 600
    assert job.failures == 2 and job.last_result == "UsageError: bad zone"
    short = ZoneConfig(seed="s", zone="z", interval=60)
    plan.set_zones([short], T0)
    assert plan.zone_done("zone:z", 0, "x", T0) == T0 + 60  # never later than the interval


def test_reload_makes_every_zone_due_and_keeps_results() -> None:
    plan = RepublishPlan(CFG, T0)
    plan.set_zones([Z1, Z2], T0)
    plan.zone_done("zone:/k/1.zone", 8, None, T0)
    plan.zone_done("zone:/k/2.zone", 8, None, T0)
    plan.set_zones([Z1], T0 + 10)
    (job,) = plan.due_zones(T0 + 10)
    assert job.zone == Z1 and job.last_result == "stored on 8 nodes"
    assert plan.zone_done("zone:/k/2.zone", 1, None, T0 + 11) == T0 + 11  # removed: ignored


def test_min_stored() -> None:
    plan = RepublishPlan(dataclasses.replace(CFG, min_stored=3), T0)
    plan.set_zones([Z1], T0)
    assert plan.zone_done("zone:/k/1.zone", 2, None, T0) == T0 + 300


def _cands(seen: float, **queries: int) -> list[Candidate]:
    keys = {"a": A, "b": B, "c": C}
    return [Candidate(keys[k], n, seen) for k, n in queries.items()]


def test_popular_needs_queries_and_age() -> None:
    plan = RepublishPlan(CFG, T0)
    fresh = _cands(T0 - 100, a=10)
    assert plan.due_popular(fresh, T0) == []            # confirmed on the network 100 s ago
    old = _cands(T0 - 3600, a=10, b=2)
    assert plan.due_popular(old, T0 + 30) == []         # the 60 s tick has not come
    assert plan.due_popular(old, T0 + 60) == [A]        # b was asked only twice
    plan.popular_done(A, 10, 8, None, T0 + 60)
    assert plan.due_popular(_cands(T0 - 3600, a=100), T0 + 1000) == []  # put < 1 h ago
    assert plan.due_popular(_cands(T0 - 3600, a=12), T0 + 3700) == []  # 2 new queries only
    assert plan.due_popular(_cands(T0 - 3600, a=13), T0 + 3800) == [A]


def test_popular_counter_reset_and_exclusion() -> None:
    plan = RepublishPlan(CFG, T0)
    plan.popular_done(A, 50, 8, None, T0 - 7200)
    assert plan.due_popular(_cands(T0 - 7200, a=4, b=5), T0, exclude={B}) == [A]


def test_popular_failure_retries_after_retry_after() -> None:
    plan = RepublishPlan(CFG, T0)
    assert plan.due_popular(_cands(T0 - 4000, a=5), T0) == [A]
    plan.popular_done(A, 5, 0, "DhtError: no nodes", T0)
    assert plan.due_popular(_cands(T0 - 4000, a=5), T0 + 120) == []
    assert plan.due_popular(_cands(T0 - 4000, a=5), T0 + 300) == [A]


def test_budget_orders_by_queries_and_refills() -> None:
    plan = RepublishPlan(dataclasses.replace(CFG, popular_budget_per_hour=2), T0)
    cands = _cands(T0 - 4000, a=5, b=50, c=7)
    assert plan.due_popular(cands, T0) == [B, C]
    assert plan.due_popular(cands, T0 + 60) == []       # empty bucket (1/30 of a token back)
    assert plan.due_popular(cands, T0 + 1800) == [B]    # one token back after 30 min


def test_budget_bucket() -> None:
    bucket = Budget(per_hour=3600, at=0.0)
    assert all(bucket.take(0.0) for _ in range(3600)) and not bucket.take(0.0)
    assert bucket.take(1.0) and not bucket.take(1.0)
    assert not Budget(per_hour=0).take(100.0)


def test_popular_off() -> None:
    plan = RepublishPlan(dataclasses.replace(CFG, popular=False), T0)
    assert plan.due_popular(_cands(0, a=100), T0) == []
    assert plan.next_wakeup(T0) == T0 + 60


def test_entries_round_trip_through_saved_schedule() -> None:
    plan = RepublishPlan(CFG, T0)
    plan.set_zones([Z1], T0)
    plan.zone_done("zone:/k/1.zone", 4, None, T0)
    plan.popular_done(A, 9, 4, None, T0)
    entries = {e.name: e for e in plan.entries()}
    assert entries["zone:/k/1.zone"] == ScheduleEntry("zone:/k/1.zone", T0 + 600,
                                                      "stored on 4 nodes", T0)
    assert entries["popular:" + A.hex()].next_at == T0 + 3600
    restored = RepublishPlan(CFG, T0 + 100, entries)
    # restored: A was put at T0, so even with many queries it is not due before T0 + 3600
    assert restored.due_popular(_cands(T0 - 9000, a=100), T0 + 100) == []
    assert restored.due_popular(_cands(T0 - 9000, a=100), T0 + 3600) == [A]


def test_forget_popular() -> None:
    plan = RepublishPlan(CFG, T0)
    plan.popular_done(A, 9, 4, None, T0)
    plan.popular_done(B, 9, 4, None, T0)
    plan.forget_popular([B])
    assert [e.name for e in plan.entries()] == ["popular:" + B.hex()]
