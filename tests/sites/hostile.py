"""Small hostile websites for tests/hostile/: pages, a recipe and manifests to attack with.

Everything stays on the loopback network: the recipe's site runs on 127.0.0.1, and
127.0.0.2 (`OTHER_HOST`, which Linux also answers locally) plays another machine of the
user's network, or another site, that a hostile page points faceset to. A test asserts
on both servers' request logs, so "never requested" is checked, not assumed.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core import manifest as mf
from tasks.core.recipe import Recipe, parse_recipe

from .server import FixtureServer, Route
from .staff import jpeg

OTHER_HOST = "127.0.0.2"
FAST = {"delay": 0, "concurrency": 4, "timeout": 5, "retries": 0, "autothrottle": False}
ALLOW_ALL = Route(b"User-agent: *\nAllow: /\n", "text/plain")


def profile(name: str, image: str, script: str = "") -> Route:
    """An item page: a name, a label and one image (and a script, for rendered pages)."""
    body = (f"<!doctype html><html><body><h1>{html.escape(name)}</h1><img src=\"{html.escape(image)}\">"
            f'<p class="label">cs</p>{script}</body></html>')
    return Route(body.encode())


def index(links: list[str]) -> Route:
    """A start page linking to `links` (followed by the recipe's one `follow` step)."""
    anchors = "".join(f'<a href="{html.escape(link)}">{html.escape(link)}</a>' for link in links)
    return Route(f"<html><body>{anchors}</body></html>".encode())


def image(seed: int) -> Route:
    return Route(jpeg(seed), "image/jpeg")


def serve(routes: dict[str, Route], host: str = "127.0.0.1") -> FixtureServer:
    """A started server with `routes` (a robots.txt allowing all unless given)."""
    return FixtureServer({"/robots.txt": ALLOW_ALL, **routes}, host).start()


def recipe(start_urls: list[str], *, follow: bool = True, render: bool = False, **crawl: Any) -> Recipe:
    """One source starting at `start_urls`, following every link once (`follow`), reading
    `h1` as name and `p.label` as label, with quick `crawl:` settings and `crawl` on top."""
    source: dict[str, Any] = {"name": "hostile", "start_urls": start_urls, "render": render,
                              "item": {"image": "img::attr(src)", "fields": {"name": "h1::text", "label": "p.label::text"}}}
    if follow:
        source["follow"] = [{"links": "a"}]
    spec = {"name": "hostile", "contact": "hostile-tests@example.org", "crawl": {**FAST, **crawl},
            "sources": [source], "target": "label"}
    return parse_recipe(spec, Path("hostile.yaml"))


def manifest(recipe: Recipe, page_url: str, image_urls: list[str]) -> pd.DataFrame:
    """Kept rows of one page, one per image URL: what the fetch stage receives."""
    rows = mf.empty(recipe.field_names)
    for url in image_urls:
        rows.loc[len(rows), ["item_id", "source", "page_url", "image_url", "status"]] = [
            mf.item_id(page_url, url), "hostile", page_url, url, mf.KEPT]
    return rows
