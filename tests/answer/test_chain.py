"""The query chain's hop budget and loop check, and the pure reading of a delegated server's
reply: the suffix put back in every name, the next referral with its glue."""

from __future__ import annotations

from dnslib import NS, QTYPE, RR, A, DNSRecord

from pkdns.answer.chain import Chain, present, referral, subquery
from pkdns.answer.synth import NameServer, reply_to

Z = "yg4gxe7z1r7mr6orids9fh95y7gxhdsxjqi6nngsxxtakqaxr5no"


def test_a_name_seen_twice_is_a_loop_and_the_budget_runs_out() -> None:
    chain = Chain(reply_to(subquery(Z, QTYPE.A), aa=True), QTYPE.A, budget=2)
    assert chain.spend(f"www.{Z}") and not chain.spend(f"WWW.{Z}.")    # 0x20, trailing dot
    assert chain.spend("example.com") and not chain.spend("other.example")  # budget spent
    assert chain.fail(2).header.rcode == 2 and chain.reply.header.aa == 0


def test_a_referral_comes_back_with_the_suffix_and_its_glue() -> None:
    resp = subquery(f"x.sub.{Z}", QTYPE.A).reply()
    resp.header.aa = 0
    resp.add_auth(RR(f"deep.sub.{Z}", QTYPE.NS, rdata=NS(f"ns1.deep.sub.{Z}"), ttl=300))
    resp.add_auth(RR(f"deep.sub.{Z}", QTYPE.NS, rdata=NS("ns.example.net"), ttl=300))
    resp.add_ar(RR(f"ns1.deep.sub.{Z}", QTYPE.A, rdata=A("192.0.2.53"), ttl=300))
    shown = present(resp, "key")
    assert [str(rr.rname) for rr in shown.auth] == [f"deep.sub.{Z}.key."] * 2
    assert str(shown.ar[0].rname) == f"ns1.deep.sub.{Z}.key."
    assert referral(shown, "key") == (NameServer(f"ns1.deep.sub.{Z}", ("192.0.2.53",)),
                                      NameServer("ns.example.net", ()))
    assert present(resp, "") is resp
    assert referral(DNSRecord(), "key") == ()
