"""Repeated links that lead to similar pages, and the 'next page' link of a listing.

A directory's profile links share a selector and a URL shape (`/people/<id>.html`);
a menu's links do not, and they appear on the page above too. So links are grouped by
every selector candidate of theirs, groups with the same URLs keep their most general
selector, and groups are ranked by how many links of one URL shape they hold and how
few others.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qsl, urljoin, urlsplit, urlunsplit

from parsel import Selector

from tasks.core.urls import host_allowed, host_of
from tasks.crawl.suggest.selectors import candidates, first_fitting

_NEXT_TEXT = re.compile(r"^\s*(next( page)?|older|more|weiter|suivant|siguiente|[›»>→]+)\s*[›»>→]*\s*$", re.IGNORECASE)


@dataclass
class Page:
    """One page read: its final URL, whether it was rendered, and its parsed HTML."""

    url: str
    html: str
    rendered: bool = False

    def __post_init__(self) -> None:
        self.sel = Selector(text=self.html, base_url=self.url)


@dataclass
class LinkGroup:
    """A selector and the distinct URLs it selects on the page it was found on."""

    css: str
    urls: list[str]
    score: float = 0.0


def link_url(page_url: str, element) -> str | None:
    """The absolute http(s) URL of an <a>'s href, without its fragment (None for script/mail links)."""
    href = (element.get("href") or "").strip()
    if not href or href.startswith(("javascript:", "mailto:", "tel:", "#", "data:")):
        return None
    parts = urlsplit(urljoin(page_url, href))
    if parts.scheme not in ("http", "https"):
        return None
    return urlunsplit(parts._replace(fragment=""))


def urls_of(page: Page, css: str, hosts: frozenset[str]) -> list[str]:
    """Distinct on-site URLs of the links `css` selects on `page`, in page order."""
    found: dict[str, None] = {}
    for match in page.sel.css(css):
        element = match.root
        if getattr(element, "tag", None) != "a":
            continue
        url = link_url(page.url, element)
        if url and host_allowed(host_of(url), hosts):
            found.setdefault(url)
    return list(found)


def is_next(element) -> bool:
    """A pagination link: rel=next, a class saying next, or the text 'next' / '»'."""
    rel = (element.get("rel") or "").lower().split()
    classes = (element.get("class") or "").lower()
    text = " ".join("".join(element.itertext()).split())
    return "next" in rel or "next" in classes or bool(_NEXT_TEXT.match(text))


def shape(url: str) -> tuple:
    """A URL's shape: its path depth, first segment, extension and query keys."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    ext = segments[-1].rpartition(".")[2] if segments and "." in segments[-1] else ""
    return (len(segments), segments[0] if len(segments) > 1 else "", ext, tuple(sorted(k for k, _ in parse_qsl(parts.query))))


def _score(urls: list[str]) -> float:
    """Links of the dominant shape, weighted by the share they are of the group."""
    top = Counter(shape(u) for u in urls).most_common(1)[0][1]
    return top * (top / len(urls)) ** 2


def link_groups(page: Page, hosts: frozenset[str], seen_above: set[str]) -> list[LinkGroup]:
    """Groups of links to other pages, best first (a single link too: a home page's one link to its
    directory); links of the page above (menus) left out."""
    groups: dict[frozenset[str], LinkGroup] = {}
    tried: set[str] = set()
    for match in page.sel.css("a[href]"):
        element = match.root
        if is_next(element) or link_url(page.url, element) is None:
            continue
        for css in candidates(element):
            if css in tried:
                continue
            tried.add(css)
            try:
                urls = [u for u in urls_of(page, css, hosts) if u != page.url]
            except Exception:  # noqa: BLE001 - a selector cssselect cannot translate
                continue
            key = frozenset(urls)
            if not urls or key in groups:
                continue
            if sum(u in seen_above for u in urls) > len(urls) / 2:
                continue  # a menu repeated from the page above
            groups[key] = LinkGroup(css, urls, _score(urls))
    return sorted(groups.values(), key=lambda g: -g.score)


def next_link(pages: list[Page]) -> str | None:
    """A selector for the 'next page' link of listing pages, when they have one."""
    examples = [m.root for page in pages for m in page.sel.css("a[href]") if is_next(m.root)]
    if not examples:
        return None
    rel = "a[rel~=next]" if any("next" in (e.get("rel") or "").lower() for e in examples) else None

    def fits(css: str) -> bool:
        hits = 0
        for page in pages:
            found = page.sel.css(css)
            if len(found) > 1 or any(getattr(m.root, "tag", None) != "a" or not is_next(m.root) for m in found):
                return False
            hits += len(found)
        return hits > 0

    if rel and fits(rel):
        return rel
    return first_fitting(examples, fits)
