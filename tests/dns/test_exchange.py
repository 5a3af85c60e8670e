"""The upstream exchange as a pure state machine: events and a made-up ``now`` in, actions
out. No socket, no sleep: the timing rules (retransmit, failover, deadline, TCP budget) are
checked at exact times."""

from __future__ import annotations

import random
import struct

import dns.message

from pkdns.config import HostPort
from pkdns.dns import wire
from pkdns.dns.actions import Action, Attempt, Close, Done, Tcp, Timer
from pkdns.dns.exchange import TCP_TIMEOUT, Exchange
from pkdns.dns.health import DOWN_AFTER, PROBE_MAX, Health
from pkdns.dns.upstreams import Entropy, Policy
from tests.support.upstream import answer

A, B = ("192.0.2.1", 53), ("192.0.2.2", 53)
NAME = "www.example.test"
QUESTION = wire.name_wire(NAME) + b"\x00\x01\x00\x01"


class Counted:
    """The exchange's Report: what it counted, in order."""

    def __init__(self) -> None:
        self.fails: list[tuple[HostPort, str]] = []
        self.spoofs: list[tuple[HostPort, str, int]] = []

    def fail(self, addr: HostPort, reason: str) -> None:
        self.fails.append((addr, reason))

    def spoof_suspected(self, addr: HostPort, question: bytes, why: str, misses: int,
                        now: float) -> None:
        self.spoofs.append((addr, why, misses))


def policy(*ups: HostPort, timeout: float = 1.0, use_0x20: bool = True,
           nearmiss_max: int = 1) -> Policy:
    return Policy(ups or (A,), timeout, Health(), Entropy(random.Random(5)), Counted(),
                  use_0x20, nearmiss_max)


def counted(pol: Policy) -> Counted:
    assert isinstance(pol.report, Counted)
    return pol.report


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def take(ex: Exchange, actions: list[Action]) -> list[Action]:
    """A copy of ``actions``, the list handed back as a driver does."""
    out = list(actions)
    ex.taken()
    return out


def attempts(actions: list[Action]) -> list[Attempt]:
    return [a for a in actions if isinstance(a, Attempt)]


def timer(actions: list[Action]) -> Timer:
    return [a for a in actions if isinstance(a, Timer)][-1]


def done(actions: list[Action]) -> bytes | None:
    last = actions[-1]
    assert isinstance(last, Done), kinds(actions)
    return last.reply


def ok(att: Attempt, rrs: str = f"{NAME}. 300 IN A 192.0.2.7", **kw: object) -> bytes:
    """The upstream's reply to ``att`` (echoing its question, case and all)."""
    return answer(att.packet, rrs, **kw)  # type: ignore[arg-type]


def test_one_attempt_answered() -> None:
    ex = Exchange(policy(), QUESTION, False, False, 3.0)
    acts = take(ex, ex.start(0.0))
    assert kinds(acts) == ["Attempt", "Timer"]
    att = attempts(acts)[0]
    assert att.addr == A and (timer(acts).at, timer(acts).regular) == (1.0, True)
    reply = ok(att)
    acts = take(ex, ex.received(att, reply, 0.01))
    assert kinds(acts) == ["Done"] and done(acts) == reply and ex.done and not att.live


def test_silent_upstream_retransmits_until_the_deadline() -> None:
    """0.2 s per attempt, 0.7 s budget: attempts at 0, 0.2, 0.4, 0.6 (fresh IDs), the last
    timer is the deadline, and the deadline ends it with no reply."""
    ex = Exchange(policy(timeout=0.2), QUESTION, False, False, 0.7)
    acts = take(ex, ex.start(0.0))
    sent = attempts(acts)
    for due in (0.2, 0.4, 0.6):
        assert abs(timer(acts).at - due) < 1e-9 and timer(acts).regular
        acts = take(ex, ex.timer(timer(acts).at))
        sent += attempts(acts)
    assert (timer(acts).at, timer(acts).regular) == (0.7, False)
    assert len(sent) == 4 and len({a.qid for a in sent}) == 4
    assert len(ex.attempts) == 4                       # earlier ones keep listening
    assert done(take(ex, ex.timer(0.7))) is None
    assert not any(a.live for a in sent)


def test_a_late_reply_to_an_earlier_attempt_is_taken() -> None:
    ex = Exchange(policy(timeout=0.2), QUESTION, False, False, 1.0)
    first = attempts(take(ex, ex.start(0.0)))[0]
    take(ex, ex.timer(0.2))
    reply = ok(first)
    assert done(take(ex, ex.received(first, reply, 0.3))) == reply


def test_a_silent_upstream_fails_over_and_the_next_is_preferred() -> None:
    pol = policy(A, B, timeout=0.2)
    ex = Exchange(pol, QUESTION, False, False, 1.0)
    assert attempts(take(ex, ex.start(0.0)))[0].addr == A
    second = attempts(take(ex, ex.timer(0.2)))[0]
    assert second.addr == B
    done(take(ex, ex.received(second, ok(second), 0.25)))
    ex = Exchange(pol, QUESTION, False, False, 2.0)
    assert attempts(take(ex, ex.start(1.0)))[0].addr == B


def test_port_unreachable_fails_over_at_once() -> None:
    pol = policy(A, B, timeout=2.0)
    ex = Exchange(pol, QUESTION, False, False, 3.0)
    first = attempts(take(ex, ex.start(0.0)))[0]
    acts = take(ex, ex.broken(first, True, "network: refused", 0.001))
    assert kinds(acts) == ["Close", "Attempt", "Timer"] and attempts(acts)[0].addr == B
    assert isinstance(acts[0], Close) and acts[0].attempt is first and not first.live
    assert counted(pol).fails == [(A, "refused")] and pol.health.servers[A].hard
    alone = Exchange(policy(A), QUESTION, False, False, 3.0)
    only = attempts(take(alone, alone.start(0.0)))[0]
    assert done(take(alone, alone.broken(only, True, "network: refused", 0.001))) is None


def test_a_failed_send_takes_the_upstream_out() -> None:
    pol = policy(A, B)
    ex = Exchange(pol, QUESTION, False, False, 3.0)
    first = attempts(take(ex, ex.start(0.0)))[0]
    acts = take(ex, ex.unsent(first, "network: Network is unreachable", 0.0))
    assert attempts(acts)[0].addr == B and ex.out == {0}
    assert counted(pol).fails == [(A, "network: Network is unreachable")]


def test_error_rcodes_try_every_upstream_then_return_the_last() -> None:
    pol = policy(A, B)
    ex = Exchange(pol, QUESTION, False, False, 3.0)
    a = attempts(take(ex, ex.start(0.0)))[0]
    acts = take(ex, ex.received(a, ok(a, rcode=5), 0.01))
    b = attempts(acts)[0]
    assert b.addr == B
    servfail = ok(b, rcode=2)
    assert done(take(ex, ex.received(b, servfail, 0.02))) == servfail
    assert counted(pol).fails == [(A, "rcode5"), (B, "rcode2")]
    assert not pol.health.down


def test_formerr_to_our_opt_is_asked_again_without_it() -> None:
    pol = policy()
    ex = Exchange(pol, QUESTION, True, False, 3.0)
    first = attempts(take(ex, ex.start(0.0)))[0]
    assert first.packet[11] == 1                       # our OPT
    acts = take(ex, ex.received(first, ok(first, rcode=1), 0.01))
    plain = attempts(acts)[0]
    assert plain.addr == A and plain.packet[11] == 0 and plain.qid != first.qid
    assert counted(pol).fails == [(A, "rcode1_edns")]
    reply = ok(plain)
    assert done(take(ex, ex.received(plain, reply, 0.02))) == reply
    again = Exchange(pol, QUESTION, True, False, 3.0)
    first = attempts(take(again, again.start(0.0)))[0]
    plain = attempts(take(again, again.received(first, ok(first, rcode=1), 0.01)))[0]
    formerr = ok(plain, rcode=1)                       # FORMERR without OPT too: it stands
    assert done(take(again, again.received(plain, formerr, 0.02))) == formerr


def test_truncation_goes_to_tcp_with_a_fresh_id_and_what_is_left_of_the_deadline() -> None:
    ex = Exchange(policy(timeout=2.0), QUESTION, False, False, 1.0)
    att = attempts(take(ex, ex.start(0.0)))[0]
    acts = take(ex, ex.received(att, ok(att, tc=True), 0.6))
    assert kinds(acts) == ["Close", "Timer", "Tcp"] and timer(acts).at == 0
    tcp = acts[-1]
    assert isinstance(tcp, Tcp) and tcp.addr == A and tcp.qid != att.qid
    assert abs(tcp.timeout - 0.4) < 1e-9                # not 2 s more
    assert struct.unpack(">H", tcp.packet[:2])[0] == tcp.qid and tcp.packet[2:] == att.packet[2:]
    assert done(take(ex, ex.tcp_done(tcp, None, "tcp timeout", 1.0))) is None
    early = Exchange(policy(timeout=2.0), QUESTION, False, False, 10.0)
    att = attempts(take(early, early.start(0.0)))[0]
    acts = take(early, early.received(att, ok(att, tc=True), 0.1))
    assert isinstance(acts[-1], Tcp) and acts[-1].timeout == TCP_TIMEOUT
    reply = ok(att)
    assert done(take(early, early.tcp_done(acts[-1], reply, "", 0.2))) == reply


def test_a_second_truncated_reply_does_not_start_a_second_tcp_retry() -> None:
    ex = Exchange(policy(timeout=0.2), QUESTION, False, False, 3.0)
    first = attempts(take(ex, ex.start(0.0)))[0]
    second = attempts(take(ex, ex.timer(0.2)))[0]
    assert kinds(take(ex, ex.received(first, ok(first, tc=True), 0.3)))[-1] == "Tcp"
    assert kinds(take(ex, ex.received(second, ok(second, tc=True), 0.31))) == ["Close"]


def wrong_id(att: Attempt) -> bytes:
    reply = ok(att, f"{NAME}. 300 IN A 203.0.113.66")
    return struct.pack(">H", att.qid ^ 1) + reply[2:]


def test_one_near_miss_is_tolerated_the_second_drops_the_attempt_then_tcp() -> None:
    pol = policy(use_0x20=False)
    ex = Exchange(pol, QUESTION, False, False, 3.0)
    first = attempts(take(ex, ex.start(0.0)))[0]
    assert take(ex, ex.received(first, wrong_id(first), 0.01)) == []
    acts = take(ex, ex.received(first, wrong_id(first), 0.02))
    assert kinds(acts) == ["Close", "Attempt", "Timer"]          # a fresh socket and ID
    again = attempts(acts)[0]
    assert again.addr == A and again.qid != first.qid and timer(acts).at == 1.02
    take(ex, ex.received(again, wrong_id(again), 0.03))
    acts = take(ex, ex.received(again, wrong_id(again), 0.04))
    assert kinds(acts) == ["Close", "Timer", "Tcp"]
    assert counted(pol).spoofs == [(A, "nearmiss", 2), (A, "nearmiss", 2)]
    assert [r for _a, r in counted(pol).fails] == ["unwanted_reply"] * 4
    assert not pol.health.servers[A].silent and not pol.health.servers[A].answers


def test_no_near_miss_limit_when_it_is_zero() -> None:
    ex = Exchange(policy(nearmiss_max=0), QUESTION, False, False, 3.0)
    att = attempts(take(ex, ex.start(0.0)))[0]
    for k in range(50):
        assert take(ex, ex.received(att, wrong_id(att), k / 100)) == []
    assert done(take(ex, ex.received(att, ok(att), 0.6))) is not None


def test_0x20_case_must_be_echoed_our_id_in_lowercase_goes_to_tcp() -> None:
    pol = policy()
    ex = Exchange(pol, QUESTION, False, False, 3.0)
    att = attempts(take(ex, ex.start(0.0)))[0]
    assert att.question != QUESTION and att.question.lower() == QUESTION
    lower = answer(wire.build_query_for(att.qid, QUESTION, False, False),
                   f"{NAME}. 300 IN A 203.0.113.66")
    acts = take(ex, ex.received(att, lower, 0.01))
    assert kinds(acts) == ["Close", "Timer", "Tcp"]
    assert counted(pol).fails == [(A, "case_mismatch")]
    assert counted(pol).spoofs == [(A, "case", 0)]


def test_a_question_sent_in_lowercase_may_come_back_in_any_case() -> None:
    ex = Exchange(policy(use_0x20=False), QUESTION, False, False, 3.0)
    att = attempts(take(ex, ex.start(0.0)))[0]
    assert att.question == QUESTION
    query = dns.message.make_query("WwW.eXaMpLe.TeSt", "A")
    query.id = att.qid
    reply = answer(query.to_wire(), "WwW.eXaMpLe.TeSt. 300 IN A 192.0.2.7")
    assert done(take(ex, ex.received(att, reply, 0.01))) == reply


def test_silence_counts_against_a_server_only_when_it_answered_nothing_else() -> None:
    pol = policy(timeout=0.2)
    srv = pol.health.servers[A]
    slow = Exchange(pol, qn("slow.example"), False, False, 3.0)
    take(slow, slow.start(0.0))
    fast = Exchange(pol, QUESTION, False, False, 3.0)
    att = attempts(take(fast, fast.start(0.1)))[0]
    take(fast, fast.received(att, ok(att), 0.15))
    take(slow, slow.timer(0.2))                        # the server answered meanwhile
    assert srv.silent == 0
    take(slow, slow.timer(0.4))
    assert srv.silent == 1


def qn(name: str) -> bytes:
    return wire.name_wire(name) + b"\x00\x01\x00\x01"


def test_a_dead_upstream_gets_at_most_one_query_per_probe_time() -> None:
    """20 new names a second for 10 s at a silent upstream (0.2 s per attempt, 0.5 s budget):
    down after DOWN_AFTER silent attempts, then probes 1, 2, 4, 8 s apart, and a question
    with no probe due fails at once; the first reply brings it back."""
    pol = policy(timeout=0.2)
    live: list[tuple[Exchange, float]] = []          # exchanges and their timer
    sent: list[float] = []
    failed_at_once = 0
    down_at = None
    for tick in range(200):
        now = tick / 20
        for ex, at in list(live):
            if at <= now:
                live.remove((ex, at))
                acts = take(ex, ex.timer(at))
                sent += [at] * len(attempts(acts))
                if not ex.done:
                    live.append((ex, timer(acts).at))
        ex = Exchange(pol, qn(f"n{tick}.zone{tick % 5}.test"), False, False, now + 0.5)
        acts = take(ex, ex.start(now))
        sent += [now] * len(attempts(acts))
        if ex.done:
            failed_at_once += 1
        else:
            live.append((ex, timer(acts).at))
        if down_at is None and pol.health.down:
            down_at = (now, len(sent))
    assert down_at is not None and down_at[1] < 30
    probes = sent[down_at[1]:]
    assert len(probes) <= 6 and failed_at_once > 150
    assert all(b - a >= 0.99 for a, b in zip(probes, probes[1:], strict=False)), probes
    probe_time = down_at[0] + 1 + 2 + 4 + PROBE_MAX + 8
    ex = Exchange(pol, QUESTION, False, False, probe_time + 0.5)
    att = attempts(take(ex, ex.start(probe_time)))[0]
    take(ex, ex.received(att, ok(att), probe_time + 0.01))
    assert not pol.health.down


def test_every_upstream_down_fails_at_once_unless_earlier_attempts_may_answer() -> None:
    pol = policy(A, B)
    for addr in (A, B):
        pol.health.no_reply(pol.health.server(addr), None, 0.0)
        for _ in range(DOWN_AFTER):
            pol.health.no_reply(pol.health.server(addr), None, 0.0)
    for addr in (A, B):
        pol.health.down[addr].probe_at = 100.0
    ex = Exchange(pol, QUESTION, False, False, 3.0)
    assert done(take(ex, ex.start(0.5))) is None
    pol.health.down[A].probe_at = 0.0                 # A's probe is due: this one probes
    ex = Exchange(pol, QUESTION, False, False, 3.0)
    acts = take(ex, ex.start(0.5))
    assert attempts(acts)[0].addr == A
    acts = take(ex, ex.timer(1.5))                    # no one left to ask: wait for A
    assert kinds(acts) == ["Timer"] and (timer(acts).at, timer(acts).regular) == (3.0, False)
    assert done(take(ex, ex.timer(3.0))) is None


def test_a_callers_own_packet_goes_out_as_it_is() -> None:
    """NS delegation: the caller's packet (its ID, case, RD=0) is sent unchanged, a reply
    in any case is taken, near misses go to TCP at once (no fresh UDP socket: the ID is the
    caller's), and a FORMERR is returned as it is."""
    pol = policy(nearmiss_max=1)
    pol.fresh_udp = pol.edns_fallback = False
    query = dns.message.make_query("Other.Example.test", "A", use_edns=0)
    query.flags = 0
    packet = query.to_wire()
    question = qn("other.example.test")
    ex = Exchange(pol, question, False, False, 1.0, packet)
    att = attempts(take(ex, ex.start(0.0)))[0]
    assert att.packet == packet and att.qid == query.id
    reply = answer(packet, "Other.Example.test. 300 IN A 192.0.2.3")
    assert done(take(ex, ex.received(att, reply, 0.01))) == reply
    ex = Exchange(pol, question, False, False, 1.0, packet)
    att = attempts(take(ex, ex.start(0.0)))[0]
    take(ex, ex.received(att, wrong_id(att), 0.01))
    assert kinds(take(ex, ex.received(att, wrong_id(att), 0.02))) == ["Close", "Timer", "Tcp"]
    ex = Exchange(pol, question, False, False, 1.0, packet)
    att = attempts(take(ex, ex.start(0.0)))[0]
    formerr = answer(packet, rcode=1)
    assert done(take(ex, ex.received(att, formerr, 0.01))) == formerr


def test_ids_are_random() -> None:
    """RFC 5452 §9.1 from the system CSPRNG: 2000 IDs, hardly a repeat (birthday: about 30
    of 65536), no run of neighbours (a counter, or an ID plus one)."""
    entropy = Entropy()
    ids = [entropy.qid() for _ in range(2000)]
    assert len(set(ids)) >= 1900
    assert sum(abs(a - b) == 1 for a, b in zip(ids, ids[1:], strict=False)) < 5


def test_case_comes_from_the_injected_source() -> None:
    one, two = Entropy(random.Random(3)), Entropy(random.Random(3))
    spelled = [one.case(QUESTION) for _ in range(20)]
    assert spelled == [two.case(QUESTION) for _ in range(20)]
    assert len(set(spelled)) >= 15 and all(s.lower() == QUESTION for s in spelled)
    assert all(s[-4:] == QUESTION[-4:] for s in spelled)


def test_formerr_over_tcp_is_asked_again_without_opt_and_timed() -> None:
    """TC=1, then FORMERR to our OPT over TCP: asked once more without OPT over UDP, with a
    timer again (nothing timed the exchange during the TCP retry)."""
    ex = Exchange(policy(timeout=0.2), QUESTION, False, False, 1.0)
    att = attempts(take(ex, ex.start(0.0)))[0]
    tcp = take(ex, ex.received(att, ok(att, tc=True), 0.05))[-1]
    assert isinstance(tcp, Tcp) and not ex.armed
    acts = take(ex, ex.tcp_done(tcp, ok(att, rcode=1), "", 0.1))
    assert kinds(acts) == ["Attempt", "Timer"] and attempts(acts)[0].packet[11] == 0
    assert abs(timer(acts).at - 0.3) < 1e-9
