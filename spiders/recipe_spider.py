"""The one spider every recipe uses: start pages -> follow steps -> items.

A page's *step* says what to do with it: pages at step k < len(follow) are read with
`follow[k]` (its links lead to step k+1; its `next_page` link to another step-k page),
pages at the last step are read with `item:`. A step's `render`/`wait_for` applies to
the pages it reads links from; item pages use the source's. A rendered page without
`wait_for` waits up to SELECTOR_WAIT seconds for the selector it is read with.

Bounds: a step beyond `depth_limit` is not followed, and each source stops scheduling
pages at `page_budget`, so an endless "next month" calendar ends. Links leaving the
source's hosts (start URLs' hosts and `allowed_domains`) are not followed; every request
(redirects included) then passes the URL policy in spiders/guard.py. A page gives at
most `max_items_per_page` items and a source `max_items_per_source` (its crawl stops
there); a limit that drops items is listed in the report's errors with its reason.

Search sources (spiders/scopes.py): each of a source's `queries` is crawled as its own
scope, from its start URLs with the query put in. Every request carries its query,
result page number and an order key, so the crawl stage can rank each query's items in
reading order; a source's `max_items` counts per scope and stops a scope's crawl. The
source's `next_page` leads from one item page to the next; `scroll`/`click` travel in
the request meta to the renderer (spiders/rendering.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import date, datetime, timezone

import scrapy
from parsel import Selector
from scrapy.http import Response
from w3lib.url import canonicalize_url

from spiders import scopes
from spiders.browser import SELECTOR_WAIT, element_of
from spiders.diagnosis import Tally, step_key
from spiders.extract import PageItem, read_items, select
from spiders.failures import ROBOTS, TakenDown, describe
from spiders.guard import taken_down, takedown_urls
from tasks.core.recipe import Recipe, Source
from tasks.core.urls import host_allowed, host_of, source_hosts

MAX_LISTED = 500  # URLs kept per list in the stats (errors, robots-blocked, pages without image)


class RecipeSpider(scrapy.Spider):
    name = "faceset"

    def __init__(self, recipe_json: str, today: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recipe = Recipe.model_validate_json(recipe_json)
        self.today = date.fromisoformat(today)
        self.sources = {s.name: s for s in self.recipe.sources}
        self.hosts = {s.name: source_hosts(s) for s in self.recipe.sources}
        self.scheduled: dict[str, set[str]] = {s.name: set() for s in self.recipe.sources}
        self.items: dict[str, int] = {s.name: 0 for s in self.recipe.sources}  # items given per source
        self.item_limited: set[str] = set()  # sources that reached max_items_per_source
        self.scope_items: Counter[tuple[str, str | None]] = Counter()  # items per source and query, for max_items
        self.taken_down: frozenset[str] = frozenset()  # the takedown list's URLs, read once the crawler is known

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs) -> "RecipeSpider":
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.taken_down = takedown_urls(crawler.settings)
        return spider

    def _refused_takedown(self, url: str) -> bool:
        """A URL on the takedown list: counted, never scheduled, stored or listed."""
        if taken_down(url, self.taken_down):
            self.crawler.stats.inc_value("faceset/takedown_refused")
            return True
        return False

    # ------------------------------------------------------------ requests

    def _listed(self, key: str, value: object) -> None:
        """Append to a list kept in the crawl stats (written to the stats JSON at the end)."""
        values = self.crawler.stats.get_value(key) or []
        if len(values) < MAX_LISTED:
            values.append(value)
        self.crawler.stats.set_value(key, values)

    def _error(self, url: str, reason: str) -> None:
        """A page that failed or was cut short, with its reason, in the report's errors."""
        self.crawler.stats.inc_value("faceset/page_errors")
        self._listed("faceset/errors", {"url": url, "reason": reason})

    def _page_request(self, source: Source, url: str, step: int, place: dict | None = None) -> scrapy.Request | None:
        """A request for a page of `source` at `step` and `place` (spiders/scopes.py), or None
        when a bound says no."""
        stats = self.crawler.stats
        if step > self.recipe.crawl.depth_limit:
            stats.inc_value("faceset/depth_limited")
            return None
        if not host_allowed(host_of(url), self.hosts[source.name]):
            stats.inc_value("faceset/offsite_skipped")
            Tally(stats).offsite(source.name, url)
            return None
        if self._refused_takedown(url):
            return None
        if self.items[source.name] >= self.recipe.crawl.max_items_per_source:
            stats.inc_value(f"faceset/item_limited/{source.name}")
            return None
        place = place or {}
        if source.max_items is not None and self.scope_items[scopes.scope_of(source.name, place)] >= source.max_items:
            return None  # this query (or source) has its max_items already
        key = canonicalize_url(url) if place.get("query") is None else f"{place['query']}\n{canonicalize_url(url)}"
        seen = self.scheduled[source.name]
        if key in seen:
            return None
        if len(seen) >= self.recipe.crawl.page_budget:
            stats.inc_value(f"faceset/budget_exhausted/{source.name}")
            return None
        seen.add(key)
        if step < len(source.follow):
            follow = source.follow[step]
            render = source.render if follow.render is None else follow.render
            wait_for, read_with = follow.wait_for or source.wait_for, follow.links
            more = scopes.load_more(follow)
        else:
            render, wait_for, more = source.render, source.wait_for, scopes.load_more(source)
            read_with = source.item.each or source.item.image.css if source.item else None
        wait = {"wait_for": wait_for}
        if render and not wait_for:  # a script that fetches its content after the page loads would be read empty
            wait = {"wait_for": element_of(read_with), "wait_seconds": SELECTOR_WAIT}
        meta = {"source": source.name, "step": step, "render": render, **wait, **more, **place}
        # one page reached from two queries is read in both scopes, so the dupe filter stays out of it
        return scrapy.Request(url, callback=self.parse_page, errback=self.on_error, meta=meta,
                              dont_filter=bool(source.queries))

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for source in self.recipe.sources:
            for url, place in scopes.start_places(source):  # urls:/folder: sources have none
                request = self._page_request(source, url, 0, place)
                if request is not None:
                    yield request

    # ------------------------------------------------------------ pages

    def parse_page(self, response: Response):
        source = self.sources[response.meta["source"]]
        step = response.meta["step"]
        stats = self.crawler.stats
        stats.inc_value(f"faceset/pages/{source.name}")
        if not hasattr(response, "text"):
            self._error(response.url, "not a web page")
            return
        page = Selector(text=response.text, base_url=response.url)
        if step < len(source.follow):
            yield from self._follow(source, step, page, response)
        else:
            yield from self._items(source, page, response)

    def _follow(self, source: Source, step: int, page: Selector, response: Response):
        follow = source.follow[step]
        links = page.css(follow.links) if follow.links is not None else page.xpath(follow.links_xpath or "")
        tally, rendered = Tally(self.crawler.stats), bool(response.meta.get("render"))
        tally.selector(source.name, step_key(step), "links", follow.links or follow.links_xpath or "", response.url,
                       len(links), rendered=rendered)
        for position, link in enumerate(links):
            href = link.root if isinstance(link.root, str) else (link.attrib.get("href") or "")
            href = href.strip()
            if href and not href.startswith(("javascript:", "mailto:", "#")):
                place = scopes.link_place(response.meta, position)
                if request := self._page_request(source, response.urljoin(href), step + 1, place):
                    yield request
        if follow.next_page:
            pages = select(page, follow.next_page)
            tally.selector(source.name, step_key(step), "next_page", follow.next_page, response.url, len(pages),
                           rendered=rendered)
            for link in pages:
                href = link.root if isinstance(link.root, str) else (link.attrib.get("href") or "")
                place = scopes.next_place(response.meta)
                if href.strip() and (request := self._page_request(source, response.urljoin(href.strip()), step, place)):
                    yield request

    def _items(self, source: Source, page: Selector, response: Response):
        per_page = self.recipe.crawl.max_items_per_page
        observer = Tally(self.crawler.stats).page(source, response.url, bool(response.meta.get("render")))
        found = read_items(page, source.item, response.url, self.today, limit=per_page + 1, observer=observer)
        if not found:
            self.crawler.stats.inc_value("faceset/pages_without_image")
            self._listed("faceset/pages_without_image_urls", response.url)
        if len(found) > per_page:
            self._error(response.url, f"limit: more than {per_page} images on the page, the first {per_page} "
                        "kept (crawl.max_items_per_page)")
        crawled_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        found = [item for item in found[:per_page] if not self._refused_takedown(item.image_url)]
        meta = response.meta
        for position, item in enumerate(self._within_scope_limit(source, meta, found, response.url)):
            yield {
                "source": source.name,
                "query": meta.get("query"),
                "page": meta.get("page", 1),
                "order": [*meta.get("order", []), position],
                "page_url": response.url,
                "image_url": item.image_url,
                "fields": item.fields,
                "unmapped": item.unmapped,
                "crawled_at": crawled_at,
            }
        if source.next_page:  # result pages: the next one is read with item: too
            for link in select(page, source.next_page):
                href = (link.root if isinstance(link.root, str) else (link.attrib.get("href") or "")).strip()
                if href and (request := self._page_request(source, response.urljoin(href), len(source.follow),
                                                           scopes.next_place(meta))):
                    yield request

    def _within_scope_limit(self, source: Source, meta: dict, found: list[PageItem], url: str) -> list[PageItem]:
        """The items that still fit in the source's (or its query's) `max_items`, then in
        `crawl.max_items_per_source`; a scope cut short is counted in the crawl report."""
        if source.max_items is not None:
            scope = scopes.scope_of(source.name, meta)
            room = source.max_items - self.scope_items[scope]
            if len(found) > room:
                self.crawler.stats.inc_value(f"faceset/max_items_dropped/{source.name}", len(found) - room)
                found = found[:max(room, 0)]
            self.scope_items[scope] += len(found)
        return self._within_source_limit(source, found, url)

    def _within_source_limit(self, source: Source, found: list[PageItem], url: str) -> list[PageItem]:
        """The items that still fit in the source's `max_items_per_source`; the first page
        that loses items to it says so in the report's errors."""
        limit = self.recipe.crawl.max_items_per_source
        room = limit - self.items[source.name]
        if len(found) > room:
            self.crawler.stats.inc_value(f"faceset/item_limited/{source.name}")
            if source.name not in self.item_limited:
                self.item_limited.add(source.name)
                self._error(url, f"limit: source {source.name} reached {limit} images; the rest of this page "
                            "and the pages not yet crawled are dropped (crawl.max_items_per_source)")
            found = found[:room]
        self.items[source.name] += len(found)
        return found

    def on_error(self, failure) -> None:
        if isinstance(failure.value, TakenDown):
            return  # counted by the guard; the URL is not written anywhere
        reason = describe(failure.value, "page")
        url = failure.request.url
        if reason == ROBOTS:
            self._listed("faceset/robots_blocked", url)
            if source := failure.request.meta.get("source"):
                Tally(self.crawler.stats).robots(source, url)
        else:
            self._error(url, reason)
