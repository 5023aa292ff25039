"""Attack: a shared manifest's image URLs lead `faceset hydrate` to the user's own network,
to another protocol through a redirect, or to a server that sends slowly or too little.

hydrate used to request any host (private and link-local addresses included), follow
redirects to `ftp:`, wait for a server sending one byte every second and a half as long
as it kept sending, and call a cut-short body a hash mismatch. Now the URL policy
(tasks.core.urls) is applied to the URL, to its resolved addresses and to every redirect
hop; a download has a deadline; a short body is an incomplete download. Servers run on
127.0.0.1 (the recipe-less "public" side here, allowed with --allow-private-hosts) and on
127.0.0.2, which plays a machine of the user's network; each asserts on its request log.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sites.hostile import OTHER_HOST, image, serve
from sites.server import Route
from sites.shares import share_row, write_share
from sites.staff import jpeg

from tasks.export.hydrate import hydrate

LOCAL = ("127.0.0.1",)


def _rebuild(tmp_path, rows, allow=LOCAL, timeout: float = 10.0) -> dict:
    return hydrate(write_share(tmp_path / "share", rows), tmp_path / "out", delay=0, timeout=timeout,
                   allow_private_hosts=allow)


def test_private_addresses_are_refused_unless_the_user_allows_them(tmp_path):
    private = serve({"/a.jpg": image(1)}, host=OTHER_HOST)
    port = private.httpd.server_address[1]
    rows = [share_row("literal", private.url("/a.jpg"), jpeg(1)),
            share_row("by-name", f"http://localhost:{port}/a.jpg", jpeg(1))]  # a name resolving to loopback
    try:
        report = _rebuild(tmp_path, rows, allow=())
        assert private.paths() == []  # never requested
        assert report["refused"] == 2 and report["ok"] == 0
        assert report["problems"]["literal"]["why"] == (f"refused: loopback address {OTHER_HOST} "
                                                        "(faceset hydrate --allow-private-hosts can allow it)")
        assert report["problems"]["by-name"]["why"].startswith("refused: loopback address 127.0.0.1")
        again = hydrate(tmp_path / "share" / "manifest_share.csv", tmp_path / "out", delay=0,
                        allow_private_hosts=(OTHER_HOST,))
    finally:
        private.stop()
    assert again["ok"] == 1 and private.paths() == ["/a.jpg"]  # allowed by address, not "localhost"


def test_redirects_to_other_schemes_or_refused_addresses_are_not_followed(tmp_path):
    private = serve({"/secret.jpg": image(2)}, host=OTHER_HOST)
    site = serve({"/ok.jpg": Route(status=302, headers={"Location": "/img/ok.jpg"}), "/img/ok.jpg": image(1)})
    port = site.httpd.server_address[1]
    site.routes["/ftp.jpg"] = Route(status=302, headers={"Location": f"ftp://127.0.0.1:{port}/ftp.jpg"})
    site.routes["/inside.jpg"] = Route(status=301, headers={"Location": private.url("/secret.jpg")})
    site.routes["/hop.jpg"] = Route(status=307, headers={"Location": "/inside.jpg"})  # the second hop is refused
    rows = [share_row("ok", site.url("/ok.jpg"), jpeg(1)), share_row("ftp", site.url("/ftp.jpg"), jpeg(2)),
            share_row("inside", site.url("/inside.jpg"), jpeg(2)), share_row("hop", site.url("/hop.jpg"), jpeg(2))]
    try:
        report = _rebuild(tmp_path, rows)
    finally:
        site.stop()
        private.stop()
    assert private.paths() == []
    assert report["ok"] == 1 and report["refused"] == 3
    problems = report["problems"]
    assert problems["ftp"]["why"].startswith("refused: ftp: URL (faceset requests http: and https: URLs only); "
                                             f"the server redirected {site.url('/ftp.jpg')} to ftp://")
    assert problems["inside"]["why"].startswith(f"refused: loopback address {OTHER_HOST}")
    assert problems["hop"]["why"] == problems["inside"]["why"]
    assert site.counts()["/ftp.jpg"] == 1 and "/inside.jpg" in site.paths()


class _Drip(BaseHTTPRequestHandler):
    """Announces `size` bytes and sends one every `pause` seconds (or stops early when `cut`)."""

    size, pause, cut = 40, 0.25, False
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = jpeg(3)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut:
            self.wfile.write(body[: len(body) // 3])
            self.close_connection = True
            return
        for byte in body[: self.size]:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(self.pause)

    def log_message(self, *args) -> None:
        pass


def _drip_server(**settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Drip", (_Drip,), settings))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_a_slow_server_is_given_up_at_the_deadline(tmp_path):
    server, base = _drip_server()  # 40 bytes at 4 a second: 10 s in all
    try:
        started = time.monotonic()
        report = _rebuild(tmp_path, [share_row("slow", f"{base}/slow.jpg", jpeg(3))], timeout=1.5)
        took = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert took < 3.5, took
    assert report["failed"] == 1 and report["problems"]["slow"]["why"] == "download failed: not complete after 1.5 s"


def test_a_short_body_is_an_incomplete_download_not_a_changed_image(tmp_path):
    server, base = _drip_server(cut=True)
    try:
        report = _rebuild(tmp_path, [share_row("short", f"{base}/short.jpg", jpeg(3))])
    finally:
        server.shutdown()
        server.server_close()
    assert report["hash_mismatch"] == 0 and report["failed"] == 1
    assert report["problems"]["short"]["why"] == f"download incomplete: {len(jpeg(3)) // 3} of {len(jpeg(3))} bytes arrived"
