"""One client query being answered across key zones and ICANN (:class:`Chain`: the reply so
far, the hop budget, the names seen), and the DNS messages the handler makes and reads on the
way (pure): the questions it asks, a delegated server's reply with the suffix put back, and the
next referral in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnslib import QTYPE, DNSRecord

from pkdns.answer.names import normalize
from pkdns.answer.synth import NameServer, present_rr, reply_to


@dataclass(slots=True)
class Chain:
    """One client query being answered: the reply so far, the hop budget, names seen."""

    reply: DNSRecord
    qtype: int
    budget: int
    seen: set[str] = field(default_factory=set)
    guard: bool = False          # filter blocked addresses (rebinding) on this chain

    def spend(self, name: str) -> bool:
        """Take one hop for ``name``; False on a loop or an exhausted budget."""
        key = normalize(name)
        if key in self.seen or self.budget <= 0:
            return False
        self.seen.add(key)
        self.budget -= 1
        return True

    def extend(self, resp: DNSRecord) -> None:
        for rr in resp.rr:
            self.reply.add_answer(rr)

    def finish(self, resp: DNSRecord, *, authoritative: bool) -> DNSRecord:
        self.extend(resp)
        self.reply.auth = list(resp.auth)
        self.reply.ar = list(resp.ar)
        self.reply.header.rcode = resp.header.rcode
        self.reply.header.aa = int(authoritative and bool(self.reply.header.aa))
        return self.reply

    def fail(self, rcode: int) -> DNSRecord:
        self.reply.header.rcode = rcode
        self.reply.header.aa = 0
        return self.reply


def subquery(qname: str, qtype: int) -> DNSRecord:
    """A question of our own (a CNAME target, a name server's address) of any type."""
    query = DNSRecord.question(qname, "A")
    query.q.qtype = qtype
    return query


def present(resp: DNSRecord, suffix: str) -> DNSRecord:
    """The delegated server's reply with the suffix put back in every name."""
    if not suffix:
        return resp
    out = reply_to(resp, aa=bool(resp.header.aa))
    out.header.rcode = resp.header.rcode
    for section, add in ((resp.rr, out.add_answer), (resp.auth, out.add_auth),
                         (resp.ar, out.add_ar)):
        for rr in section:
            if rr.rtype != QTYPE.OPT:
                add(present_rr(rr, suffix, rr.ttl))
    return out


def referral(resp: DNSRecord, suffix: str) -> tuple[NameServer, ...]:
    """NS records in authority with their glue from additional (a referral deeper down)."""
    glue: dict[str, list[str]] = {}
    for rr in resp.ar:
        if rr.rtype in (QTYPE.A, QTYPE.AAAA):
            glue.setdefault(normalize(str(rr.rname)), []).append(str(rr.rdata))
    servers = []
    for rr in resp.auth:
        if rr.rtype == QTYPE.NS:
            target = normalize(str(rr.rdata.label))
            internal = target[: -len(suffix) - 1] if suffix and target.endswith("." + suffix) \
                else target
            servers.append(NameServer(internal, tuple(glue.get(target, ()))))
    return tuple(servers)


__all__ = ["Chain", "present", "referral", "subquery"]
