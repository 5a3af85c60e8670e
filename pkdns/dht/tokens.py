"""Write tokens (BEP 5 ``token``, reused by BEP 44 ``put``): rotating and bound to the IP.

A token is ``sha1(secret || ip)[:8]``. The secret rotates every 5 minutes and the previous
one stays valid, so a token lives 5–10 minutes (libtorrent and mainline do the same). A token
issued to IP X is useless from IP Y (the ``put`` gets error 203). Pure: the caller passes ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import random

ROTATE_EVERY = 300.0
TOKEN_BYTES = 8


class TokenManager:
    """Issues and checks tokens; ``rng`` supplies the secrets (seeded in tests)."""

    def __init__(self, rng: random.Random, now: float) -> None:
        self._rng = rng
        self._current = self._secret()
        self._previous = self._secret()
        self._rotated_at = now

    def _secret(self) -> bytes:
        return self._rng.getrandbits(128).to_bytes(16, "big")

    def _rotate(self, now: float) -> None:
        elapsed = now - self._rotated_at
        if elapsed < ROTATE_EVERY:
            return
        if elapsed >= 2 * ROTATE_EVERY:
            self._previous = self._secret()  # both expired: nothing issued before is valid
        else:
            self._previous = self._current
        self._current = self._secret()
        self._rotated_at = now

    @staticmethod
    def _token(secret: bytes, ip: str) -> bytes:
        return hashlib.sha1(secret + ip.encode()).digest()[:TOKEN_BYTES]

    def issue(self, ip: str, now: float) -> bytes:
        self._rotate(now)
        return self._token(self._current, ip)

    def check(self, token: bytes, ip: str, now: float) -> bool:
        self._rotate(now)
        return any(hmac.compare_digest(token, self._token(s, ip))
                   for s in (self._current, self._previous))
