"""A generated image-search website: result pages per query, as search engines make them.

Each result is a thumbnail inside a link `/imgres?imgurl=<percent-encoded original>`,
so the original image's URL has to be pulled out of the link. Every query has three
kinds of result page:

- `/search/<q>/<n>.html`: static pages of `per_page` results with a "next" link;
- `/scroll/<q>.html`: a page whose script shows `batch` results and appends the next
  batch a moment after the visitor scrolls to the bottom (infinite scroll);
- `/more/<q>.html`: a page with a "more results" button that appends a batch per click
  and disappears when there is nothing left.

Each result also links ("Visit") to the page the image came from, `/visit/<i>.html`,
which shows the original with a caption.

The images are the caller's bytes (synthetic or from ../shared/corpus), served at
`/orig/<i>.jpg`, with `/thumb/<i>.jpg` thumbnails. `expected(query)` gives the
original URLs in rank order.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

from .server import Route

RESULT = ('<div class="result"><a class="hit" href="/imgres?imgurl={encoded}&amp;imgrefurl=%2Fsource&amp;h=480">'
          '<img class="thumb" src="/thumb/{index}.jpg" alt="{alt}"></a><span class="title">{alt}</span>'
          '<a class="visit" href="/visit/{index}.html">Visit</a></div>')
STYLE = "<style>.result{height:260px;margin:8px;border:1px solid #ccc}</style>"

# The results are built by script from the JSON in the page; `more()` appends the next batch.
SCRIPT = """<script>
const results = %(results)s; let shown = 0;
function more() {
  const list = document.getElementById('results');
  for (const r of results.slice(shown, shown + %(batch)d)) {
    const div = document.createElement('div'); div.className = 'result';
    const a = document.createElement('a'); a.className = 'hit';
    a.href = '/imgres?imgurl=' + encodeURIComponent(r.url) + '&h=480';
    const img = document.createElement('img'); img.className = 'thumb'; img.src = r.thumb; img.alt = r.alt;
    const visit = document.createElement('a'); visit.className = 'visit'; visit.href = r.visit;
    a.appendChild(img); div.appendChild(a); div.appendChild(visit); list.appendChild(div);
  }
  shown += %(batch)d;
  const button = document.getElementById('more');
  if (button && shown >= results.length) button.remove();
}
%(trigger)s
window.addEventListener('load', more);
</script>"""
ON_SCROLL = """let waiting = false;
window.addEventListener('scroll', () => {
  if (waiting || shown >= results.length) return;
  if (window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 50) {
    waiting = true; setTimeout(() => { more(); waiting = false; }, %(delay)d);
  }
});"""
ON_CLICK = """document.addEventListener('click', (event) => {
  if (event.target.id === 'more') setTimeout(more, %(delay)d);
});"""


@dataclass
class SearchSite:
    base: str
    routes: dict[str, Route]
    queries: dict[str, list[int]]  # query -> image indexes in rank order

    def original(self, index: int) -> str:
        return f"{self.base}/orig/{index}.jpg"

    def expected(self, query: str) -> list[str]:
        return [self.original(i) for i in self.queries[query]]


def _page(title: str, body: str) -> bytes:
    return f"<!doctype html><html><head><title>{html.escape(title)}</title>{STYLE}</head><body>{body}</body></html>".encode()


def build(base: str, images: list[bytes], queries: dict[str, list[int]], *, per_page: int = 4, batch: int = 4,
          delay_ms: int = 150) -> SearchSite:
    """The routes of a search site at `base` serving `images`, with `queries` mapping each query to
    the indexes of its results in rank order."""
    site = SearchSite(base, {}, queries)
    for index, data in enumerate(images):
        site.routes[f"/orig/{index}.jpg"] = Route(data, "image/jpeg")
        site.routes[f"/thumb/{index}.jpg"] = Route(data, "image/jpeg")
        site.routes[f"/visit/{index}.html"] = Route(_page(f"page {index}", f'<img class="full" src="/orig/{index}.jpg">'
                                                          f'<p class="caption">caption {index}</p>'))
    for query, hits in queries.items():
        slug = quote_plus(query)
        pages = [hits[i:i + per_page] for i in range(0, len(hits), per_page)] or [[]]
        for number, page in enumerate(pages, start=1):
            results = "".join(RESULT.format(encoded=quote(site.original(i), safe=""), index=i, alt=f"{query} {i}")
                              for i in page)
            after = f'<a class="next" href="/search/{slug}/{number + 1}.html">Next</a>' if number < len(pages) else ""
            site.routes[f"/search/{slug}/{number}.html"] = Route(_page(query, f'<div id="results">{results}</div>{after}'))
        data = json.dumps([{"url": site.original(i), "thumb": f"/thumb/{i}.jpg", "alt": f"{query} {i}",
                            "visit": f"/visit/{i}.html"} for i in hits])
        for kind, trigger, button in (("scroll", ON_SCROLL, ""), ("more", ON_CLICK, '<button id="more">More results</button>')):
            script = SCRIPT % {"results": data, "batch": batch, "trigger": trigger % {"delay": delay_ms}}
            site.routes[f"/{kind}/{slug}.html"] = Route(_page(query, f'<div id="results"></div>{button}{script}'))
    return site


def recipe_dict(site: SearchSite, kind: str = "search", **source) -> dict:
    """A recipe reading `kind` result pages (search, scroll or more) of `site` for all its queries."""
    start = {"search": "/search/{query}/1.html", "scroll": "/scroll/{query}.html", "more": "/more/{query}.html"}[kind]
    return {
        "name": f"search-{kind}",
        "contact": "crawl-tests@example.org",
        "crawl": {"delay": 0, "concurrency": 4, "timeout": 10, "retries": 0, "autothrottle": False},
        "sources": [{
            "name": kind,
            "start_urls": [site.base + start],
            "queries": list(site.queries),
            "item": {"image": {"css": "a.hit::attr(href)", "regex": r"imgurl=([^&]+)"}, "each": "div.result"},
            **({"next_page": "a.next"} if kind == "search" else {"render": True, "wait_for": "div.result"}),
            **source,
        }],
        "target": "query",
    }
