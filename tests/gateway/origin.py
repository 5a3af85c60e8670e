"""A small HTTPS origin for gateway tests: counts connections and the requests it receives."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Origin:
    cert: Path
    key: Path
    body: bytes = b"<!doctype html><title>origin page</title><h1>hello from the origin</h1>"
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0
    log: bool = False       # print "request <request line>" (standalone mode)

    async def start(self, host: str = "127.0.0.1") -> Origin:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        self.server = await asyncio.start_server(self._client, host, 0, ssl=ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                if self.log:
                    print("request", head.split(b"\r\n")[0].decode(errors="replace"), flush=True)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                             + str(len(self.body)).encode() + b"\r\n\r\n" + self.body)
                await writer.drain()
                if b"connection: close" in head.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _serve(args: argparse.Namespace) -> None:
    origin = Origin(Path(args.cert), Path(args.key),
                    body=ORIGIN_PAGE.replace("TOKEN", args.token).encode())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(origin.cert, origin.key)

    origin.log = not args.quiet
    server = await asyncio.start_server(origin._client, args.host, args.port, ssl=ctx, backlog=1024)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await asyncio.wait_for(stop.wait(), args.time_limit)


ORIGIN_PAGE = ("<!doctype html><html><head><title>origin TOKEN</title></head>"
               "<body><h1 id=\"origin\">served by the origin TOKEN</h1></body></html>")


def main() -> None:
    """``python -m tests.gateway.origin --cert C --key K [--host H] [--port P] [--token T]``:
    prints ``port N`` once it listens, then ``request <request line>`` per request."""
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default="")
    p.add_argument("--time-limit", type=float, default=600.0)
    p.add_argument("--quiet", action="store_true", help="no line per request (benchmarks)")
    args = p.parse_args()
    with contextlib.suppress(TimeoutError):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
