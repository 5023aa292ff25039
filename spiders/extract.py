"""Read items off a page as a recipe's `item:` describes them.

Kept apart from the spider so that the same code reads static and rendered HTML and
can be tested on a string. Image URLs understand what sites really do: relative
links, `srcset` (the largest candidate wins), lazy-loading attributes (`data-src`...)
with a placeholder in `src`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol
from urllib.parse import unquote, urljoin, urlsplit

from parsel import Selector, SelectorList

from spiders.parsers import FieldValue, apply_regex, parse_field
from tasks.core.recipe import FieldSpec, ItemSpec

# Lazy-loading libraries put the real image in one of these; `src` is often a placeholder.
LAZY_ATTRIBUTES = ("data-src", "data-lazy-src", "data-original", "data-lazy", "data-url")
SRCSET_ATTRIBUTES = ("data-srcset", "srcset")
_SRC_ATTR = re.compile(r"::attr\(\s*src\s*\)\s*$")
_DESCRIPTOR = re.compile(r"^(\d+(?:\.\d+)?)([wx])$")
# A whole URL percent-encoded, as a query parameter holds it: scheme://..., //host/..., /path, or a
# script URL (decoded so that it is recognised and dropped)
_ENCODED_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*%3A%2F%2F|(?:javascript|data|vbscript)%3A|%2F)", re.IGNORECASE)


@dataclass
class PageItem:
    """One image found on a page with the fields read next to it."""

    image_url: str
    fields: dict[str, str]
    unmapped: dict[str, str] = field(default_factory=dict)


def select(scope: Selector, spec: FieldSpec | str) -> SelectorList:
    """Run a CSS (or XPath) selector given as a FieldSpec or a plain CSS string."""
    if isinstance(spec, str):
        return scope.css(spec)
    return scope.css(spec.css) if spec.css is not None else scope.xpath(spec.xpath or "")


def texts(found: SelectorList) -> list[str]:
    """Strings of the matches: attribute/text values as they are, elements as their text content."""
    out: list[str] = []
    for match in found:
        if isinstance(match.root, str):
            out.append(match.root)
        else:
            out.append(match.xpath("string()").get() or "")
    return out


def largest_in_srcset(srcset: str) -> str:
    """The URL of the largest candidate of a `srcset` ("a.jpg 320w, b.jpg 640w" -> b.jpg)."""
    best, best_size = "", -1.0
    for candidate in srcset.split(","):
        parts = candidate.strip().split()
        if not parts:
            continue
        size = 1.0
        if len(parts) > 1 and (m := _DESCRIPTOR.match(parts[-1])):
            size = float(m.group(1))
        if size > best_size:
            best, best_size = parts[0], size
    return best


def _looks_like_srcset(value: str) -> bool:
    return bool(re.search(r"\s\d+(?:\.\d+)?[wx]\s*(,|$)", value))


def _usable(url: str) -> bool:
    return bool(url) and not url.startswith(("data:", "javascript:", "#", "about:"))


def url_from_element(element: Selector) -> str:
    """The real image URL of an <img> (or similar) element: srcset, then lazy attributes, then src.
    A <picture> is read through its <img>, the image every browser can show (a `source::attr(srcset)`
    selector takes a <source>'s largest candidate instead)."""
    if getattr(element.root, "tag", None) == "picture":
        inner = element.css("img")
        return url_from_element(inner[0]) if inner else ""
    attrs = element.attrib
    for name in SRCSET_ATTRIBUTES:
        if _usable(attrs.get(name, "").strip()):
            return largest_in_srcset(attrs[name])
    for name in (*LAZY_ATTRIBUTES, "src", "href", "content"):
        value = attrs.get(name, "").strip()
        if _usable(value):
            return value
    return ""


def decoded_url(value: str) -> str:
    """A URL that was percent-encoded whole (`https%3A%2F%2F...`, as a query parameter holds
    it) decoded once; any other value as it is, so `%20` inside a path stays encoded. What
    it decodes to is judged like any URL: http(s) only here, the URL policy at download."""
    value = value.strip()
    return unquote(value) if _ENCODED_URL.match(value) else value


def image_urls(scope: Selector, spec: FieldSpec, base_url: str) -> list[str]:
    """Every distinct absolute http(s) image URL the image selector finds, in page order,
    after the spec's `regex` (its first group, when it has one) and percent-decoding."""
    raw: list[str] = []
    if spec.css is not None and _SRC_ATTR.search(spec.css):
        # `img::attr(src)`: src is often a placeholder, so read the element as a browser would.
        raw = [url_from_element(m) for m in scope.css(_SRC_ATTR.sub("", spec.css))]
    else:
        for match in select(scope, spec):
            if isinstance(match.root, str):
                value = match.root.strip()
                raw.append(largest_in_srcset(value) if _looks_like_srcset(value) else value)
            else:
                raw.append(url_from_element(match))
    if spec.regex is not None:  # a group picks the image out of a link: /imgres?imgurl=<original>
        raw = [apply_regex(value, spec.regex) for value in raw]
    urls: dict[str, None] = {}  # ordered and linear: a page may hold 50,000 images
    for value in map(decoded_url, raw):
        if not _usable(value):
            continue
        url = urljoin(base_url, value)
        if urlsplit(url).scheme in ("http", "https"):
            urls.setdefault(url)
    return list(urls)


class ReadObserver(Protocol):
    """Told what `read_items` found, selector by selector (spiders/diagnosis.py tallies it)."""

    def blocks(self, count: int) -> None: ...

    def image(self, urls: list[str]) -> None: ...

    def field(self, name: str, spec: FieldSpec, found: list[str], parsed: FieldValue) -> None: ...


def read_items(page: Selector, spec: ItemSpec, base_url: str, today: date, limit: int | None = None,
               observer: ReadObserver | None = None) -> list[PageItem]:
    """The items on a page: one per image found, in each `each` block (or on the whole page);
    the first `limit` only, so a hostile page of a million blocks is not read to its end."""
    scopes = page.css(spec.each) if spec.each else [page]
    if observer is not None:
        observer.blocks(len(scopes))
    items: list[PageItem] = []
    for scope in scopes:
        fields: dict[str, str] = {}
        unmapped: dict[str, str] = {}
        for name, field_spec in spec.fields.items():
            found = [field_spec.value] if field_spec.value is not None else texts(select(scope, field_spec))
            parsed = parse_field(found, field_spec, today)
            if observer is not None and field_spec.value is None:
                observer.field(name, field_spec, found, parsed)
            fields[name] = parsed.value
            if parsed.unmapped is not None:
                unmapped[name] = parsed.unmapped
        urls = image_urls(scope, spec.image, base_url)
        if observer is not None:
            observer.image(urls)
        for url in urls:
            items.append(PageItem(url, fields, unmapped))
            if len(items) == limit:
                return items
    return items
