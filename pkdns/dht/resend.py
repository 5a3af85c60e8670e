"""When an unanswered DHT query is sent again (pure): the schedule and the loss estimate behind it.

A lost query or a lost answer is recovered by sending the same datagram again (same tid, so a
late answer to any copy counts). On a lossy link that is what makes lookups work at all
(kernel lab, 30-50 % loss: one round trip in two to four comes back). But a copy to a node
that is gone is wasted, and on Mainline most silent nodes are gone -- 30-40 % of listed nodes
never answer -- while loss is a few percent: there, copies to nodes never heard from cost
~45 % more datagrams per lookup and bought nothing (the simulator's "mainline, resends": 95
messages per lookup against the 80 of issue 12's budget, 63 without copies). So:

- a node that answered us before (the shared :class:`~pkdns.dht.rtt.RttEstimator` knows its
  round trip) is probably alive, its silence probably loss: its queries are always resent;
- a node never heard from gets copies only while the link is lossy: while the share of first
  copies to *known* nodes left unanswered within the gap is at least :data:`LOSSY` (a moving
  average, so a cold process, which rarely asks a node twice, starts at :data:`PRIOR_LOSS`
  and resends). Slow answers count as lost here (an answer after a copy went out may be the
  copy's), so Mainline's heavy tail and churn read as ~0.2 without any loss at all.

The gap before the first copy is RETRANSMIT or 4 x the smoothed round trip of answers that
surely came to a first copy (Karn's rule, RFC 6298 §3), so slow answers are not taken for
losses.
"""

from __future__ import annotations

from pkdns.dht.join import resend_offsets

RETRANSMIT = 0.25
"""A query unanswered this long is sent again (then every gap within the request timeout),
or 4 x the smoothed round trip when that is longer: on the internet (150 ms) that is 0.6 s;
on a LAN or loopback lab a lost datagram costs a quarter second, not half a second."""
LOSSY = 0.35
"""Share of first copies to known nodes left unanswered from which nodes never heard from
get copies too: about 20 % loss each way. The simulator's Mainline (5 % each way, heavy-tailed
round trips, churn) reads 0.21, 30 % loss 0.55, 50 % loss 0.75; at 0.2 Mainline's lookups
still copied to unknown nodes (88 messages per lookup, 66 at 0.35, same success)."""
PRIOR_LOSS = 0.5
"""The loss assumed before any known node was asked (resend: the safe side for a join)."""
LOSS_GAIN = 1 / 16


class Resends:
    """The resend schedule of one node's queries; feed it every first-copy outcome."""

    def __init__(self, retransmit: float = RETRANSMIT, timeout: float = 2.0) -> None:
        self.retransmit, self.timeout = retransmit, timeout
        self.srtt = retransmit / 4
        """Smoothed round trip of answers to first copies (gain 1/8, RFC 6298 §2)."""
        self.loss = PRIOR_LOSS
        """Moving share of first copies to known nodes not answered within the gap."""

    def gap(self) -> float:
        """Seconds before the first copy (and between copies)."""
        return max(self.retransmit, 4 * self.srtt)

    def offsets(self, known: bool) -> list[float]:
        """When copies follow the first send (seconds after it) for a node that answered
        before (``known``) or not; empty: the query goes out once."""
        if self.retransmit <= 0 or not (known or self.loss >= LOSSY):
            return []
        return resend_offsets(self.timeout, self.gap(), self.timeout)[1:]

    def answered(self, known: bool, elapsed: float, gap: float) -> None:
        """The answer came ``elapsed`` seconds after the first send (whose gap was ``gap``)."""
        first_copy = elapsed < gap
        if first_copy:  # Karn: an answer after a copy went out may be the copy's
            self.srtt += (elapsed - self.srtt) / 8
        if known:
            self.loss += (float(not first_copy) - self.loss) * LOSS_GAIN

    def unanswered(self, known: bool) -> None:
        """No answer at all before the request timeout."""
        if known:
            self.loss += (1.0 - self.loss) * LOSS_GAIN


__all__ = ["LOSSY", "RETRANSMIT", "Resends"]
