"""Server mode: which nodes that query us are worth a ping, so that only answerers are "good".

BEP 5 calls a node good once it "has responded to one of our queries". A query alone proves
nothing: its source address may be forged, and a sender that never answers would sit in our
routing table as a contact every lookup wastes a request timeout on (64 such senders made cold
lookups 25 times slower). So a querier the table does not know is pinged first and enters only
through its answer (the node adds every node that answers us); a querier the table already
holds has answered us before and is just marked as heard from (:meth:`RoutingTable.touch`).

The pings themselves are bounded, so a flood of forged queries cannot turn us into a ping
reflector or keep us busy: a few at a time, never the same address twice within
:data:`RECHECK_AFTER`, none when the table has no room for the node anyway, and none for a
public address whose id breaks BEP 42 (the id must derive from the IP; local addresses are
exempt, as in libtorrent's ``verify_id``). Pure: the caller sends the ping and reports back.
"""

from __future__ import annotations

from pkdns.dht.ids import is_bep42_valid
from pkdns.dht.krpc import Address
from pkdns.dht.routing import RoutingTable

MAX_PENDING = 8
"""Verification pings in flight at once; the rest of a burst of queriers is not pinged."""
RECHECK_AFTER = 300.0
"""An address pinged (answered or not) is not pinged again for this long because it queried."""
REMEMBER = 4096
"""Addresses remembered for :data:`RECHECK_AFTER` (oldest forgotten first)."""


class QuerierCheck:
    """Decides, per incoming query, whether to ping its sender before it may enter the table."""

    def __init__(self, max_pending: int = MAX_PENDING, recheck_after: float = RECHECK_AFTER,
                 remember: int = REMEMBER) -> None:
        self.max_pending = max_pending
        self.recheck_after = recheck_after
        self.remember = remember
        self._pending: set[Address] = set()
        self._checked: dict[Address, float] = {}
        self.skipped = 0
        """Queriers not pinged because the ping budget was used up."""

    def consider(self, table: RoutingTable, node_id: bytes, addr: Address, now: float) -> bool:
        """A query from ``addr`` (without ``ro=1``) arrived: True means "ping it now" (the
        caller must call :meth:`finished` when the ping is over)."""
        host, port = addr
        if table.touch(node_id, host, port, now):
            return False
        if not table.admits(node_id, host, port, now) or not is_bep42_valid(node_id, host):
            return False
        if addr in self._pending or now - self._checked.get(addr, -self.recheck_after) \
                < self.recheck_after:
            return False
        if len(self._pending) >= self.max_pending:
            self.skipped += 1
            return False
        self._pending.add(addr)
        self._remember(addr, now)
        return True

    def finished(self, addr: Address) -> None:
        """The verification ping of ``addr`` ended (answered, silent or cancelled)."""
        self._pending.discard(addr)

    def _remember(self, addr: Address, now: float) -> None:
        self._checked.pop(addr, None)
        self._checked[addr] = now
        while len(self._checked) > self.remember:
            del self._checked[next(iter(self._checked))]
