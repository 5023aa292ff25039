"""Attack: a rendered page's script navigates elsewhere (`location.replace`), in real Chromium.

The browser went to another host, loaded its page and images without that host's
robots.txt ever being read, and the item found there was kept. Now the browser resolves
only the recipe's hosts, and a navigation comes back to Scrapy as a redirect, so the
final URL is held to the URL policy, the source's hosts and robots.txt like any other.
"""

from __future__ import annotations

import json

import pytest
from sites.hostile import OTHER_HOST, image, profile, recipe, serve
from sites.server import Route

from spiders import browser
from tasks.core import manifest as mf
from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths
from tasks.crawl import stage as crawl


def _navigate(url: str) -> str:
    return f"<script>location.replace({json.dumps(url)})</script>"


@pytest.mark.slow
def test_script_navigation_is_checked_like_a_redirect(tmp_path) -> None:
    try:
        browser.require_browser()
    except FacesetError as exc:
        pytest.skip(str(exc))
    other = serve({"/people/evil.html": profile("Elsewhere Person", "/img/e.jpg"), "/img/e.jpg": image(9)}, OTHER_HOST)
    site = serve({
        "/robots.txt": Route(b"User-agent: *\nDisallow: /private/\n", "text/plain"),
        "/people/a.html": profile("Ada", "/img/a.jpg"),
        "/people/away.html": profile("Away", "/img/a.jpg", _navigate(other.url("/people/evil.html"))),
        "/people/hide.html": profile("Hide", "/img/a.jpg", _navigate("/private/p.html")),
        "/private/p.html": profile("Private Person", "/img/a.jpg"),
        "/people/moved.html": profile("Moved", "/img/a.jpg", _navigate("/people/b.html")),
        "/people/b.html": profile("Bea", "/img/b.jpg"),
    })
    pages = ["/people/a.html", "/people/away.html", "/people/hide.html", "/people/moved.html"]
    try:
        spec = recipe([site.url(p) for p in pages], follow=False, render=True)
        paths = DatasetPaths.create(tmp_path)
        result = crawl.run(mf.empty(spec.field_names), spec, paths, timeout=120)
    finally:
        site.stop()
        other.stop()
    assert other.paths() == []  # the browser never reached the other host, nor did Scrapy
    assert sorted(zip(result["name"], result["page_url"])) == [("Ada", site.url("/people/a.html")),
                                                               ("Bea", site.url("/people/b.html"))]
    report = json.loads(paths.report_json("crawl").read_text())
    assert {"url": other.url("/people/evil.html"),
            "reason": f"refused: {OTHER_HOST} is not a host of this source (start URLs and allowed_domains), "
                      f"reached by a redirect from {site.url('/people/away.html')}"} in report["errors"]
    assert report["robots_blocked"] == [site.url("/private/p.html")]
