"""Where a page sits in its crawl: its query, its result page number and its order key.

A search source is crawled once per query, and each query is a scope of its own: the
same detail page reached from two queries gives two rows, `max_items` counts per
query, and `rank` numbers each query's images 1, 2, 3... in page order.

Scrapy answers pages concurrently, so the rank cannot be the order items arrive in.
Each request instead carries an *order key*, a tuple that sorts pages as a person reads
them: the start URL's index, then for a followed link its position on the page, and
for a 'next page' link a step past every item of the page before. An item's key is its
page's key plus its position on the page; the crawl stage sorts by it and numbers.
"""

from __future__ import annotations

from typing import Any

from tasks.core.recipe import LoadMore, Source

NEXT = 1_000_000  # sorts a next page after every item and link of the page before it


def start_places(source: Source) -> list[tuple[str, dict[str, Any]]]:
    """(start URL, meta) for each start URL of `source`, once per query."""
    places = []
    for index, (query, url) in enumerate(source.expanded_urls()):
        places.append((url, {"query": query, "page": 1, "order": [index % len(source.start_urls)]}))
    return places


def link_place(meta: dict[str, Any], position: int) -> dict[str, Any]:
    """The place of the `position`-th link followed from the page of `meta` (same result page)."""
    return {"query": meta.get("query"), "page": meta.get("page", 1), "order": [*meta.get("order", []), position]}


def next_place(meta: dict[str, Any]) -> dict[str, Any]:
    """The place of the 'next page' of the page of `meta`."""
    return {"query": meta.get("query"), "page": meta.get("page", 1) + 1, "order": [*meta.get("order", []), NEXT]}


def scope_of(source: str, meta: dict[str, Any]) -> tuple[str, str | None]:
    """The scope `max_items` and `rank` count in: the source, and the query when there is one."""
    return source, meta.get("query")


def load_more(step: LoadMore) -> dict[str, Any]:
    """The request meta telling the renderer to scroll or click for more results."""
    if not step.loads_more():
        return {}
    return {"scroll": step.scroll, "click": step.click, "max_clicks": step.max_clicks}


def rank_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """How an item record sorts within its scope (records of older crawls have no order: last)."""
    order = record.get("order")
    return (0, tuple(order)) if isinstance(order, list) else (1, ())
