"""A tiny web server for the browser tests: ``http`` on [::]:80 and ``https`` on [::]:443.

Run inside the test's network namespace (``ip netns exec``) as a separate process::

    python -m tests.e2e.pagesrv --token T --cert C --key K

Both listeners are dual-stack (the demo key publishes 127.0.0.1 and ::1). Every page is
``<title>pkdns e2e T SCHEME</title>``, so the title tells the test that the page loaded and
over which scheme. Prints ``ready`` once both listen; stops on SIGTERM or after --time-limit.
"""

from __future__ import annotations

import argparse
import signal
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class DualStack(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def handler(token: str, scheme: str) -> type[BaseHTTPRequestHandler]:
    body = (f"<!doctype html><html><head><title>pkdns e2e {token} {scheme}</title></head>"
            f"<body><p>served over {scheme} for {{host}}</p></body></html>")

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = body.replace("{host}", self.headers.get("Host", "?")).encode()
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args: Any) -> None:
            print(f"{scheme} {self.headers.get('Host', '?')} {fmt % args}", flush=True)

    return Page


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--token", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--time-limit", type=float, default=300.0)
    args = p.parse_args()
    plain = DualStack(("::", 80), handler(args.token, "http"))
    tls = DualStack(("::", 443), handler(args.token, "https"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)
    for server in (plain, tls):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("ready", flush=True)
    done.wait(args.time_limit)
    for server in (plain, tls):
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
