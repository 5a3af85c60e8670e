"""When an unanswered DHT query is sent again (pure): the schedule and the loss estimate behind it.

A lost query or a lost answer is recovered by sending the same query again (a late answer to
any copy counts). On a lossy link that is what makes lookups work at all
(kernel lab, 30-50 % loss: one round trip in two to four comes back). But a copy to a node
that is gone is wasted, and on Mainline most silent nodes are gone -- 30-40 % of listed nodes
never answer -- while loss is a few percent: there, copies to nodes never heard from cost
~45 % more datagrams per lookup and bought nothing (the simulator's "mainline, resends": 95
messages per lookup against the 80 of issue 12's budget, 63 without copies). So:

- a node that answered us before (the shared :class:`~pkdns.dht.rtt.RttEstimator` knows its
  round trip) is probably alive, its silence probably loss: its queries are always resent;
- a node never heard from gets copies only while the link is lossy: while the share of first
  copies to *known* nodes that went unanswered is at least :data:`LOSSY` (a moving average,
  so a cold process, which rarely asks a node twice, starts at :data:`PRIOR_LOSS` and
  resends).

Every copy carries its own transaction id (:meth:`pkdns.dht.transport.KrpcProtocol.request`),
so an answer names the copy it answers, as QUIC's never-reused packet numbers do (RFC 9002
§5): every answer is an unambiguous round-trip sample, and Karn's rule (RFC 6298 §3), which
would discard the samples of answers that came after a copy went out, is not needed. That
matters for the gap: with Karn's rule a gap shorter than the round trip never learns
otherwise (every answer comes after the copy), so it needed a high floor. The gap before the
first copy is RETRANSMIT until the first sample, then 4 x the median of recent round trips,
never under MIN_GAP: on the internet (150 ms) about 0.6 s, on a LAN or a loopback lab 0.05 s.
The median, not RFC 6298's smoothed mean: Mainline's few round trips over a second pull the
mean up (simulator: 4 x the mean made the gap 0.93 s, so a 2 s request got one copy instead of
two, and at 50 % loss 92 % of lookups found the key instead of 97 %).
"""

from __future__ import annotations

import statistics
from collections import deque

from pkdns.dht.join import resend_offsets

RETRANSMIT = 0.25
"""A query unanswered this long is sent again (then every gap, doubling, within the request
timeout) until a round trip was measured."""
SAMPLES = 64
"""Recent round trips the gap is taken from."""
MIN_GAP = 0.05
"""The floor of the measured gap: a busy event loop or a node's scheduling adds milliseconds
to tens of milliseconds that are not loss. Unbound's floor for its resend timeout is the same
50 ms (``infra-cache-min-rtt``). Only a fast link (a LAN, a loopback lab) meets it: on the
internet 4 x the median round trip is far above it. Kernel lab (loopback, 30 % loss, 50 cold
``pkdns resolve``, one seed): with a 0.25 s floor a lost datagram cost a quarter second and the
median time to the answer was 0.54 s, with 0.1 s 0.36-0.44 s, with this one 0.19 s (full runs:
0.29-0.37 s, libtorrent 0.39-0.62 s)."""
LOSSY = 0.35
"""Share of first copies to known nodes left unanswered from which nodes never heard from
get copies too: about 20 % loss each way. The simulator's Mainline (5 % each way, heavy-tailed
round trips, churn) reads 0.19, 30 % loss 0.58, 50 % loss 0.81; at 0.2 Mainline's lookups
still copied to unknown nodes (88 messages per lookup, 66 at 0.35, same success)."""
PRIOR_LOSS = 0.5
"""The loss assumed before any known node was asked (resend: the safe side for a join)."""
LOSS_GAIN = 1 / 16


class Resends:
    """The resend schedule of one node's queries; feed it every query's outcome."""

    def __init__(self, retransmit: float = RETRANSMIT, timeout: float = 2.0) -> None:
        self.retransmit, self.timeout = retransmit, timeout
        self._samples: deque[float] = deque(maxlen=SAMPLES)
        """Round trips of recent answers, each timed from the copy it answers."""
        self.loss = PRIOR_LOSS
        """Moving share of first copies to known nodes that went unanswered."""

    @property
    def rtt(self) -> float | None:
        """The median of the recent round trips; None before the first answer."""
        return statistics.median(self._samples) if self._samples else None

    def gap(self) -> float:
        """Seconds before the first copy (and between copies, doubling)."""
        rtt = self.rtt
        if rtt is None:
            return self.retransmit
        return max(min(MIN_GAP, self.retransmit), 4 * rtt)

    def offsets(self, known: bool) -> list[float]:
        """When copies follow the first send (seconds after it) for a node that answered
        before (``known``) or not; empty: the query goes out once."""
        if self.retransmit <= 0 or not (known or self.loss >= LOSSY):
            return []
        return resend_offsets(self.timeout, self.gap(), self.timeout)[1:]

    def answered(self, known: bool, rtt: float, first_copy: bool) -> None:
        """An answer came ``rtt`` seconds after the copy it answers went out; that copy was
        the first (``first_copy``) or a resend."""
        if rtt >= 0:
            self._samples.append(rtt)
        if known:
            self.loss += (float(not first_copy) - self.loss) * LOSS_GAIN

    def unanswered(self, known: bool) -> None:
        """No answer at all before the request timeout."""
        if known:
            self.loss += (1.0 - self.loss) * LOSS_GAIN


__all__ = ["LOSSY", "MIN_GAP", "RETRANSMIT", "Resends"]
