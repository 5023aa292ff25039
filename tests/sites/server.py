"""A threaded HTTP server on 127.0.0.1 (or another loopback address) serving a dict of routes,
logging every request.

Tests assert on the request log (e.g. that no URL under a robots.txt-disallowed folder
was ever requested, or that a resumed crawl fetched no page twice).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (killed crawls, timeouts) are expected here, not errors."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    before: list["Route"] = field(default_factory=list)  # served once each, in order, before this one
    length: bool = True  # send Content-Length; without it the body ends when the connection closes


class FixtureServer:
    """Serve `routes` (path -> Route) on `host` until `stop()`; unknown paths answer 404."""

    def __init__(self, routes: dict[str, Route], host: str = "127.0.0.1") -> None:
        self.routes = routes
        self.log: list[tuple[str, str, float]] = []  # (path, User-Agent, time)
        self._lock = threading.Lock()
        self.active = 0  # requests being answered now
        self.max_active = 0  # the most ever answered at once (per-domain concurrency)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with server._lock:
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                    server.log.append((self.path, self.headers.get("User-Agent", ""), time.monotonic()))
                    route = server.routes.get(self.path.split("?")[0]) or Route(b"<h1>not found</h1>", status=404)
                    if route.before:
                        route = route.before.pop(0)
                try:
                    self._answer(route)
                finally:
                    with server._lock:
                        server.active -= 1

            def _answer(self, route: Route) -> None:
                if route.delay:
                    time.sleep(route.delay)
                etag = route.headers.get("ETag")
                if etag and self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    self.send_response(route.status)
                    self.send_header("Content-Type", route.content_type)
                    if route.length:
                        self.send_header("Content-Length", str(len(route.body)))
                    else:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    for name, value in route.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args) -> None:
                pass

        self.httpd = _QuietServer((host, 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def start(self) -> "FixtureServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self) -> list[str]:
        with self._lock:
            return [p for p, _, _ in self.log]

    def counts(self) -> Counter[str]:
        return Counter(self.paths())

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()
