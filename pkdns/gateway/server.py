"""The gateway's listeners (asyncio): TLS on ``gateway.listen``, redirects on ``http_listen``.

One TLS connection from a browser goes:

1. the ACL, on the accepted socket, before any byte is read;
2. the TLS handshake with a leaf minted for the SNI name; for a name that is not
   ``<...>.key`` (or none) the SNI callback fails the handshake with ``unrecognized_name``
   (RFC 6066 §3) before any certificate is sent (asyncio closes the connection without
   flushing that alert, so clients see the connection end);
3. the origin found and its certificate checked against the key's TLSA records (:mod:`.origin`);
4. only then, bytes relayed both ways, unchanged.

When the origin cannot be verified the browser's own request is read and answered with a 502
page naming the reason; the origin never sees a byte. Plain HTTP on ``http_listen`` only
redirects ``.key`` names to ``https://``. The CA is created in the state directory at start if
there is none (so its files belong to the user the daemon runs as).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from pkdns import log
from pkdns.answer.packets import PacketSource
from pkdns.answer.synth import SynthOptions
from pkdns.clock import Clock
from pkdns.config import Config, HostPort, format_hostport
from pkdns.dns.acl import Acl
from pkdns.errors import PkdnsError
from pkdns.gateway import ca, pages
from pkdns.gateway.leaves import LeafContexts, server_context
from pkdns.gateway.origin import Answerer, OriginFinder, Refused
from pkdns.gateway.route import GatewayRoute

_log = log.get("gateway")
_Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
_CHUNK = 65536
_HEAD_TIMEOUT = 10.0


@dataclass(slots=True)
class GatewayStats:
    """Counters for the status page and tests."""

    handshakes: int = 0
    relayed: int = 0
    refused: int = 0
    unknown_sni: int = 0
    redirects: int = 0


class GatewayService:
    """The gateway as a daemon component (``name``, ``start``, ``stop``)."""

    name = "gateway"

    def __init__(self, cfg: Config, source: PacketSource, answerer: Answerer,
                 clock: Clock) -> None:
        g = cfg.gateway
        self.cfg, self.state_dir, self.clock = g, cfg.state_dir, clock
        answer = g.answer or tuple(host for host, _ in g.listen)
        opts = SynthOptions(min_ttl=cfg.pkarr.min_ttl, max_ttl=cfg.pkarr.max_ttl,
                            suffix=cfg.pkarr.tld_suffix)
        self.route = GatewayRoute(answer, opts)
        self.acl = Acl(g.allow)
        self.finder = OriginFinder(source, answerer, g.origin_timeout, g.origin_port)
        self.leaves: LeafContexts | None = None
        self.base = server_context()
        self.servers: list[asyncio.Server] = []
        self.tls_bound: list[HostPort] = []
        self.http_bound: list[HostPort] = []
        self.stats = GatewayStats()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []

    def _now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.clock.wall_us() / 1e6, datetime.UTC)

    async def start(self) -> None:
        local, created = await asyncio.to_thread(ca.init, self.state_dir, self._now(),
                                                 socket.gethostname())
        if created:
            _log.info("gateway_ca_created", cert=str(local.cert_path), key=str(local.key_path))
        self.leaves = LeafContexts(local)
        self.base.sni_callback = self._sni
        for host, port in self.cfg.listen:
            self.tls_bound.append(self._listen_tls(host, port))
        for host, port in self.cfg.http_listen:
            self.http_bound.append(await self._listen(self._http_client, host, port))
        _log.info("gateway_listening", https=[format_hostport(a) for a in self.tls_bound],
                  http=[format_hostport(a) for a in self.http_bound],
                  answer=self.route.v4 + self.route.v6)

    def _listen_tls(self, host: str, port: int) -> HostPort:
        """A listening socket whose accept loop checks the ACL before any TLS byte is read.

        (Starting TLS on an accepted stream instead races the ClientHello: bytes the plain
        stream already buffered are lost to the handshake, which then hangs.)
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family, backlog=1024)
        except OSError as exc:
            raise _listen_error(host, port, exc) from None
        sock.setblocking(False)
        self._sockets.append(sock)
        self._accepting.append(asyncio.get_running_loop().create_task(self._accept(sock)))
        return (host, int(sock.getsockname()[1]))

    async def _listen(self, handler: _Handler, host: str, port: int) -> HostPort:
        try:
            server = await asyncio.start_server(handler, host, port, backlog=1024,
                                                reuse_address=True)
        except OSError as exc:
            raise _listen_error(host, port, exc) from None
        self.servers.append(server)
        sockname = server.sockets[0].getsockname()
        return (host, int(sockname[1]))

    async def stop(self) -> None:
        for accepting in self._accepting:
            accepting.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        for sock in self._sockets:
            sock.close()
        for server in self.servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    # --- TLS ------------------------------------------------------------------------------

    def _sni(self, sslobj: ssl.SSLObject, server_name: str | None,
             ctx: ssl.SSLContext) -> int | None:
        """Swap in the leaf for a ``.key`` name; any other name (or none) is refused."""
        if server_name is None or pages.key_name(server_name) is None or self.leaves is None:
            self.stats.unknown_sni += 1
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        try:
            sslobj.context = self.leaves.context(server_name.lower().rstrip("."), self._now())
        except Exception:
            _log.exception("gateway_mint_failed", sni=server_name)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    def _track(self) -> bool:
        """Register the running connection task; False when over ``max_connections``."""
        task = asyncio.current_task()
        if task is None or len(self._tasks) >= self.cfg.max_connections:
            return False
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(sock)
            except OSError as exc:     # EMFILE and the like: do not spin
                _log.warning("gateway_accept_failed", error=str(exc))
                await asyncio.sleep(0.1)
                continue
            if not self.acl.allowed(str(peer[0])) or len(self._tasks) >= self.cfg.max_connections:
                conn.close()
                continue
            task = loop.create_task(self._tls_client(conn, str(peer[0])))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _tls_client(self, conn: socket.socket, client: str) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, conn, ssl=self.base,
                ssl_handshake_timeout=self.cfg.handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            _log.debug("gateway_handshake_failed", client=client, error=str(exc))
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        with _ends_quietly(writer):
            await self._tls_session(reader, writer, client)

    async def _tls_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           client: str) -> None:
        self.stats.handshakes += 1
        sslobj = writer.get_extra_info("ssl_object")
        host = self.leaves.names.get(sslobj.context) if sslobj and self.leaves else None
        name = pages.key_name(host) if host else None
        try:
            if host is None or name is None:
                raise Refused("the TLS connection named no .key server")
            origin = await self.finder.connect(name, host, client)
        except Refused as exc:
            self.stats.refused += 1
            _log.info("gateway_refused", host=host, client=client, reason=str(exc))
            await _answer_and_close(reader, writer, pages.bad_gateway(host or "?", str(exc)))
            return
        self.stats.relayed += 1
        _log.debug("gateway_relay", host=host, client=client, origin=origin.address)
        await relay(reader, writer, origin.reader, origin.writer, self.cfg.idle_timeout)

    # --- plain HTTP -----------------------------------------------------------------------

    async def _http_client(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        if not self.acl.allowed(str(peer[0])) or not self._track():
            writer.close()
            return
        with _ends_quietly(writer):
            await self._redirect(reader, writer)

    async def _redirect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                        ) -> None:
        head = await _read_head(reader)
        target = pages.request_target(head) if head is not None else None
        if target is not None and pages.key_name(target[0]) is not None:
            self.stats.redirects += 1
            reply = pages.redirect(*target)
        else:
            reply = pages.not_a_key_name()
        await _send_and_close(writer, reply)


def _listen_error(host: str, port: int, exc: OSError) -> PkdnsError:
    hint = ""
    if exc.errno == errno.EACCES:
        hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    elif exc.errno == errno.EADDRINUSE:
        hint = " (a web server there? see gateway.listen / gateway.http_listen)"
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    return PkdnsError(f"gateway: cannot listen on {format_hostport((host, port))}: {why}{hint}")


@contextlib.contextmanager
def _ends_quietly(writer: asyncio.StreamWriter) -> Iterator[None]:
    """A connection task ends without an exception, even when :meth:`stop` cancels it:
    asyncio's stream server would log a cancelled client task as an error (Python 3.11)."""
    try:
        yield
    except asyncio.CancelledError:
        writer.close()
    except Exception:
        _log.exception("gateway_connection_failed")
        writer.close()


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request head (through the blank line), or None: timeout, EOF, too long."""
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
            ConnectionError, ssl.SSLError):
        return None


async def _answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            reply: bytes) -> None:
    """Wait for the client's request (so it reads a response, not a reset), answer, close."""
    await _read_head(reader)
    await _send_and_close(writer, reply)


async def _send_and_close(writer: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
        writer.write(data)
        await asyncio.wait_for(writer.drain(), _HEAD_TIMEOUT)
    writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, idle: float) -> None:
    while True:
        data = await asyncio.wait_for(src.read(_CHUNK), idle)
        if not data:
            return
        dst.write(data)
        await dst.drain()


async def relay(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter,
                idle: float) -> None:
    """Copy bytes both ways until either side closes, fails or is idle ``idle`` seconds
    (TLS has no half-close, so the first end ends both)."""
    tasks = {asyncio.ensure_future(_pipe(a_reader, b_writer, idle)),
             asyncio.ensure_future(_pipe(b_reader, a_writer, idle))}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        a_writer.close()
        b_writer.close()


__all__ = ["GatewayService", "GatewayStats", "relay"]
