"""A DHT :class:`~pkdns.dht.testnet.Testnet` on its own event loop in a daemon thread.

For tests that block (``dig``, a subprocess daemon, a dnsmasq in front) while the DHT nodes
must keep answering: the test thread submits coroutines to the testnet's loop with
:meth:`ThreadedTestnet.run`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pkdns.dht.testnet import Testnet

T = TypeVar("T")


class ThreadedTestnet:
    """``nodes`` testnet nodes on a private loop in a daemon thread; :meth:`close` stops both."""

    def __init__(self, nodes: int = 6, request_timeout: float = 1.0,
                 start_timeout: float = 15.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        try:
            self.net: Testnet = self.run(Testnet.start(nodes, request_timeout=request_timeout),
                                         start_timeout)
        except BaseException:
            self._stop_loop()
            raise

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the testnet's loop and wait (at most ``timeout`` s) for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.run(self.net.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@contextmanager
def threaded_testnet(nodes: int = 6, request_timeout: float = 1.0,
                     start_timeout: float = 15.0) -> Iterator[ThreadedTestnet]:
    """A :class:`ThreadedTestnet` for the ``with`` block (a fixture's body)."""
    net = ThreadedTestnet(nodes, request_timeout, start_timeout)
    try:
        yield net
    finally:
        net.close()
