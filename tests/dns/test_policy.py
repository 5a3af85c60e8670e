"""ACL and rate limiter (pure, with explicit ``now``)."""

from __future__ import annotations

from pkdns.config import DEFAULT_ALLOW, DnsConfig
from pkdns.dns.acl import Acl
from pkdns.dns.ratelimit import RateLimiter, Verdict


def test_default_acl_is_local_and_private_only() -> None:
    acl = Acl(DEFAULT_ALLOW)
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.9", "100.64.1.1", "::1",
               "fd00::1", "fe80::1%eth0", "::ffff:192.168.0.1"):
        assert acl.allowed(ip), ip
    for ip in ("8.8.8.8", "1.1.1.1", "2001:db8::1", "::ffff:8.8.8.8", "garbage", ""):
        assert not acl.allowed(ip), ip


def test_custom_acl() -> None:
    acl = Acl(("127.0.0.0/24",))
    assert acl.allowed("127.0.0.9") and not acl.allowed("127.0.1.5")


def test_token_bucket_burst_then_rate() -> None:
    rl = RateLimiter(rate=100, burst=200)
    now = 0.0
    passed = sum(rl.check("127.0.0.10", now) is Verdict.PASS for _ in range(1000))
    assert passed == 200
    now += 1.0
    passed = sum(rl.check("127.0.0.10", now) is Verdict.PASS for _ in range(1000))
    assert passed == 100
    assert rl.check("127.0.0.11", now) is Verdict.PASS          # another client is unaffected


def test_over_limit_alternates_drop_and_slip() -> None:
    rl = RateLimiter(rate=1, burst=1)
    assert rl.check("10.0.0.1", 0.0) is Verdict.PASS
    verdicts = [rl.check("10.0.0.1", 0.0) for _ in range(6)]
    assert verdicts.count(Verdict.SLIP) == 3 and verdicts.count(Verdict.DROP) == 3


def test_ipv6_keyed_on_slash_64() -> None:
    rl = RateLimiter(rate=1, burst=1)
    assert rl.check("2001:db8:1:2::1", 0.0) is Verdict.PASS
    assert rl.check("2001:db8:1:2::ffff", 0.0) is not Verdict.PASS
    assert rl.check("2001:db8:1:3::1", 0.0) is Verdict.PASS


def test_table_is_bounded() -> None:
    rl = RateLimiter(rate=10, burst=10, max_clients=100)
    for i in range(1000):
        rl.check(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(rl._buckets) <= 100


def test_zero_rate_disables() -> None:
    rl = RateLimiter(rate=0, burst=0)
    assert all(rl.check("1.2.3.4", 0.0) is Verdict.PASS for _ in range(10_000))


def test_forwarders_and_loopback_are_many_clients_not_limited() -> None:
    """Every program on the host arrives from 127.0.0.1 and every LAN client behind a router
    from the router's address: limiting them per address throttles everyone at once."""
    rl = RateLimiter(rate=1, burst=1, shared=DnsConfig().forwarders + ("192.168.1.1/32",))
    for ip in ("127.0.0.1", "127.0.0.53", "::1", "192.168.1.1"):
        assert all(rl.check(ip, 0.0) is Verdict.PASS for _ in range(1000))
    assert rl.check("192.168.1.2", 0.0) is Verdict.PASS
    assert rl.check("192.168.1.2", 0.0) is not Verdict.PASS


def test_refill_in_says_when_a_limited_address_has_a_token_again() -> None:
    rl = RateLimiter(rate=10, burst=1)
    assert rl.refill_in("10.0.0.1", 0.0) == 0.0
    rl.check("10.0.0.1", 0.0)
    assert abs(rl.refill_in("10.0.0.1", 0.0) - 0.1) < 1e-9
    assert abs(rl.refill_in("10.0.0.1", 0.05) - 0.05) < 1e-9
    assert rl.refill_in("10.0.0.1", 0.1) == 0.0
