"""Second phase of a BEP 44 put (pure): send ``put`` to the closest nodes that gave a token.

The first phase is a :class:`pkdns.dht.getlookup.GetMutableLookup` (it collects the write tokens,
BEP 5/44: a put must present the token of the node it stores on, and what each node holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pkdns.dht.item import MutableItem
from pkdns.dht.krpc import Address, ErrorMessage


@dataclass(slots=True)
class PutResult:
    """How a put went: ``stored`` nodes accepted it; ``error`` is the most common KRPC error
    when none did (``None`` if nobody answered at all)."""

    stored: int = 0
    error: tuple[int, str] | None = None
    asked: int = 0
    timed_out: int = 0
    errors: dict[tuple[int, str], int] = field(default_factory=dict)
    converged: bool = False
    """The token lookup heard the k closest nodes it learnt of, so the put went to the
    closest. False: it stored on whoever answered in time, maybe far from the key, where a
    lookup that hears the closest ones never asks (and, rightly, proves absence)."""


class PutMutable:
    """Second phase of a BEP 44 put: send ``put`` to the closest nodes that gave a token."""

    def __init__(self, item: MutableItem, targets: list[tuple[Address, bytes]],
                 held: dict[Address, MutableItem], now: float, timeout: float,
                 converged: bool = False) -> None:
        self.item = item
        self.deadline = now + timeout
        self._pending = {addr: token for addr, token in targets}
        self._unsent = list(targets)
        self._held = held
        self.result = PutResult(asked=len(targets), converged=converged)

    def next_requests(self, now: float) -> list[tuple[Address, bytes]]:
        out, self._unsent = self._unsent, []
        return out

    def done(self, now: float) -> bool:
        return not self._pending or now >= self.deadline

    def on_response(self, addr: Address, now: float) -> None:
        if self._pending.pop(addr, None) is not None:
            self.result.stored += 1

    def on_error(self, addr: Address, err: ErrorMessage, now: float) -> None:
        if self._pending.pop(addr, None) is None:
            return
        if err.code == 302 and self._held.get(addr) == self.item:
            self.result.stored += 1  # bittorrent-dht refuses an identical re-put with 302
            return
        key = (err.code, err.message)
        self.result.errors[key] = self.result.errors.get(key, 0) + 1

    def on_timeout(self, addr: Address, now: float) -> None:
        if self._pending.pop(addr, None) is not None:
            self.result.timed_out += 1

    def finish(self) -> PutResult:
        self.result.timed_out += len(self._pending)
        self._pending.clear()
        if self.result.stored == 0 and self.result.errors:
            self.result.error = max(self.result.errors.items(), key=lambda kv: kv[1])[0]
        return self.result
