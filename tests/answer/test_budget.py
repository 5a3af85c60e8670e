"""The node-wide DHT lookup budget: rate, concurrency, a fair waiting room, deadlines."""

from __future__ import annotations

from pkdns.answer.budget import Admission, LookupBudget

T0 = 100.0


def budget(rate: float = 1.0, burst: float = 2.0, concurrency: int = 64, per_client: int = 3,
           max_wait: float = 1.0) -> LookupBudget[str]:
    return LookupBudget(rate, burst, concurrency, per_client, max_wait)


def test_burst_then_waits_for_the_next_token() -> None:
    b = budget()
    assert b.request("a", "k1", T0) is Admission.START
    assert b.request("a", "k2", T0) is Admission.START
    assert b.request("a", "k3", T0) is Admission.QUEUED
    assert b.next_release(T0) == T0 + 1.0
    assert b.release(T0 + 0.5) == ([], [])
    assert b.release(T0 + 1.0) == (["k3"], [])
    assert b.waiting == 0 and b.running == 3


def test_one_address_is_not_limited_below_the_node_budget() -> None:
    """40 new keys through one router at once all start (the old per-IP limit refused 15)."""
    b = LookupBudget[str](20.0, 100.0, 64, 32)
    assert all(b.request("127.0.0.1", f"k{i}", T0) is Admission.START for i in range(40))


def test_clients_take_turns_in_the_waiting_room() -> None:
    b = budget(rate=1.0, burst=1.0, per_client=10, max_wait=10.0)
    assert b.request("greedy", "g0", T0) is Admission.START
    for i in range(1, 6):
        assert b.request("greedy", f"g{i}", T0) is Admission.QUEUED
    assert b.request("modest", "m0", T0 + 0.1) is Admission.QUEUED
    started = [b.release(T0 + t)[0] for t in (1.0, 2.0, 3.0)]
    assert started == [["g1"], ["m0"], ["g2"]]


def test_a_client_share_of_the_room_is_bounded_but_forwarders_may_fill_it() -> None:
    b = budget(rate=1.0, burst=1.0, per_client=2)
    assert b.request("s", "s0", T0) is Admission.START
    assert [b.request("s", f"s{i}", T0) for i in (1, 2, 3)] == [
        Admission.QUEUED, Admission.QUEUED, Admission.REFUSED]
    assert b.request("other", "o1", T0) is Admission.QUEUED
    assert all(b.request("router", f"r{i}", T0, shared=True) is Admission.QUEUED
               for i in range(10))
    assert b.waiting == 13


def test_waiters_past_max_wait_are_given_up() -> None:
    b = budget(rate=0.0, concurrency=1, max_wait=1.0)
    assert b.request("a", "k1", T0) is Admission.START
    assert b.request("a", "k2", T0) is Admission.QUEUED
    assert b.next_release(T0) == T0 + 1.0           # only a finish or the deadline helps
    assert b.release(T0 + 1.0) == ([], ["k2"])
    assert b.waiting == 0 and b.next_release(T0 + 1.0) is None


def test_finished_frees_a_place_for_the_next() -> None:
    b = budget(rate=0.0, concurrency=1)
    b.request("a", "k1", T0)
    b.request("b", "k2", T0)
    assert b.release(T0) == ([], [])
    b.finished()
    assert b.release(T0 + 0.1) == (["k2"], [])


def test_background_refresh_never_queues_and_yields_to_waiters() -> None:
    b = budget(rate=1.0, burst=1.0, max_wait=10.0)
    assert b.take(T0)
    assert not b.take(T0)                          # no token
    assert b.request("a", "k1", T0) is Admission.QUEUED
    assert not b.take(T0 + 5.0)                    # a token, but a client waits
    assert b.release(T0 + 5.0) == (["k1"], [])
