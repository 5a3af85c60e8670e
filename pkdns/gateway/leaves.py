"""Per-name TLS server contexts with leaf certificates from the local CA (cached, short-lived).

Minting is cheap (one ECDSA signature: the leaf key is made once per process and never
written to disk), but a browser opens several connections per page, so each name's context
is kept until half its certificate's life has passed, and at most ``max_names`` of them (the
least recently used goes first). ``now`` is a parameter: the caller owns the clock.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import ssl
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from pkdns.gateway import ca

ALPN = ["http/1.1"]     # the relay is byte-transparent: both sides must speak the same HTTP


class LeafContexts:
    """``context(name, now)`` -> an ``ssl.SSLContext`` presenting a leaf for ``name``."""

    def __init__(self, local: ca.LocalCa, max_names: int = 1024) -> None:
        from cryptography.hazmat.primitives import serialization

        self.local, self.max_names = local, max_names
        self.leaf_key = ca.new_key()
        self._key_pem: bytes = self.leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        self._cache: OrderedDict[str, tuple[ssl.SSLContext, datetime.datetime]] = OrderedDict()
        self.names: dict[ssl.SSLContext, str] = {}
        self.minted = 0

    def context(self, name: str, now: datetime.datetime) -> ssl.SSLContext:
        """The context for ``name`` (lowercase ``.key`` name); minted when absent or old.

        Raises:
            ValueError: ``name`` is not a ``.key`` name (from :func:`ca.mint_leaf`).
        """
        hit = self._cache.get(name)
        if hit is not None and now < hit[1]:
            self._cache.move_to_end(name)
            return hit[0]
        ctx = self._mint(name, now)
        if hit is not None:
            self.names.pop(hit[0], None)
        self._cache[name] = (ctx, now + ca.LEAF_LIFE / 2)
        self._cache.move_to_end(name)
        self.names[ctx] = name
        while len(self._cache) > self.max_names:
            _, (old, _) = self._cache.popitem(last=False)
            self.names.pop(old, None)
        return ctx

    def _mint(self, name: str, now: datetime.datetime) -> ssl.SSLContext:
        from cryptography.hazmat.primitives import serialization

        leaf = ca.mint_leaf(self.local, name, self.leaf_key, now)
        chain: bytes = leaf.public_bytes(serialization.Encoding.PEM)
        ctx = server_context()
        with _memory_file(chain) as cert_path, _memory_file(self._key_pem) as key_path:
            ctx.load_cert_chain(cert_path, key_path)
        self.minted += 1
        return ctx


def server_context() -> ssl.SSLContext:
    """TLS 1.2+ server context offering HTTP/1.1 only (see :data:`ALPN`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    return ctx


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` for OpenSSL's file-only loaders; in memory (memfd) where possible,
    so no private key ever touches a disk."""
    memfd: Any = getattr(os, "memfd_create", None)
    if memfd is not None:
        fd = memfd("pkdns-leaf", 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="pkdns-leaf-") as tmp:   # pragma: no cover
        path = os.path.join(tmp, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path


__all__ = ["ALPN", "LeafContexts", "server_context"]
