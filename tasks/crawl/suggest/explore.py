"""Walk a site from its start page to its portraits, reading a handful of pages.

From a page, each group of repeated links (best first, a few at most) is tried on two or
three of its links spread over the group: when those pages hold a portrait, the group
is the last follow step; when they hold link groups of their own, they are a listing of
listings and the walk goes one level down (three at most). A page whose repeated blocks
each hold a face (a team page of cards) is read with `item.each`. A page is rendered in
Chromium when `--render yes`, or with `auto` when it carries scripts and the rendered
page has more links or images than the raw HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from parsel import Selector

from spiders.extract import image_urls
from tasks.core.recipe import FieldSpec
from tasks.crawl.suggest.fetcher import Fetcher, Skipped
from tasks.crawl.suggest.fields import Suggested, suggest_fields
from tasks.crawl.suggest.links import LinkGroup, Page, link_groups, next_link, urls_of
from tasks.crawl.suggest.portrait import FaceCounter, image_elements, portrait_of, portrait_selector, site_images
from tasks.crawl.suggest.selectors import candidates, first_fitting

MAX_DEPTH = 3
GROUPS_TRIED = 3
SAMPLES = 3
MIN_CARDS = 3


@dataclass
class Step:
    """A follow step: its links selector, its next_page selector, whether its pages need rendering,
    and how many links it matched on each page read."""

    links: str
    next_page: str | None
    render: bool
    counts: list[int] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """A suggested source: steps, the item pages' rendering, the item's each/image/fields."""

    steps: list[Step]
    render_items: bool
    image: str
    each: str | None
    fields: list[Suggested]
    item_urls: list[str]
    notes: list[str] = field(default_factory=list)
    next_page: str | None = None  # the item pages' own next page (a team page of cards over several pages)


def _spread(urls: list[str], n: int) -> list[str]:
    """n URLs spread over the list: first, middle, last."""
    if len(urls) <= n:
        return list(urls)
    return [urls[round(i * (len(urls) - 1) / (n - 1))] for i in range(n)]


class Explorer:
    def __init__(self, fetcher: Fetcher, faces: FaceCounter, render: str, today: date) -> None:
        self.fetcher, self.faces, self.render, self.today = fetcher, faces, render, today
        self.notes: list[str] = []

    def load(self, url: str) -> Page | None:
        """The page raw, or rendered (see the module docstring); None when it cannot be read."""
        try:
            if self.render == "yes":
                return Page(*self.fetcher.page(url, render=True), rendered=True)
            raw = Page(*self.fetcher.page(url))
            if self.render == "no" or "<script" not in raw.html.lower():
                return raw
            rendered = Page(*self.fetcher.page(url, render=True), rendered=True)
        except Skipped as exc:
            self.notes.append(str(exc))
            return None
        if _richer(rendered, raw):
            return rendered
        return raw

    def pages(self, urls: list[str]) -> list[Page]:
        return [p for p in (self.load(u) for u in urls) if p is not None]

    # ------------------------------------------------------------ item pages

    def items(self, pages: list[Page]) -> tuple[str, list[Selector], list[str]] | None:
        """(image selector, sample scopes, their URLs) when most pages hold a portrait."""
        scopes = [(p.sel, p.url) for p in pages]
        shared = site_images(scopes)
        found = [(scope, base, el) for scope, base in scopes if (el := portrait_of(scope, base, shared, self.faces)) is not None]
        if not found or len(found) * 3 < len(pages) * 2:
            return None
        css = portrait_selector(found)
        if css is None:
            return None
        return css, [scope for scope, _, _ in found], [base for _, base, _ in found]

    def cards(self, page: Page) -> tuple[str, str, list[Selector]] | None:
        """(each, image selector, sample blocks) when the page's repeated blocks each hold a face."""
        images = image_elements(page.sel)
        groups: dict[str, list[str]] = {}
        for element in images:
            for css in candidates(element.root):
                if css not in groups:
                    try:
                        groups[css] = image_urls(page.sel, FieldSpec(css=css), page.url)
                    except Exception:  # noqa: BLE001
                        groups[css] = []
        ranked = sorted(((css, urls) for css, urls in groups.items() if len(urls) >= MIN_CARDS), key=lambda g: -len(g[1]))
        for css, urls in ranked[:2]:
            sample = _spread(urls, SAMPLES)
            if sum(self.faces(u).portrait(self.faces.config) for u in sample) * 3 < len(sample) * 2:
                continue
            first = next(e for e in images if e.root in [m.root for m in page.sel.css(css)])
            ancestors, node = [], first.root.getparent()
            while node is not None and node.tag not in ("body", "html") and len(ancestors) < 5:
                ancestors.append(node)
                node = node.getparent()

            def block_fits(each: str) -> bool:
                blocks = page.sel.css(each)
                return len(blocks) == len(urls) and all(len(image_urls(b, FieldSpec(css=css), page.url)) == 1 for b in blocks)

            each = first_fitting(ancestors, block_fits)
            if each is None:
                continue
            blocks = page.sel.css(each)
            inner = first_fitting([first.root], lambda c: all(len(image_urls(b, FieldSpec(css=c), page.url)) == 1
                                                               for b in blocks)) or css
            return each, inner, list(blocks)
        return None

    # ------------------------------------------------------------ the walk

    def walk(self, pages: list[Page], seen_above: set[str], depth: int) -> Plan | None:
        """A plan from these listing pages down to item pages, or None."""
        groups = [g for g in link_groups(pages[0], self.fetcher.hosts, seen_above)
                  if all(urls_of(p, g.css, self.fetcher.hosts) for p in pages)]
        here = {u for p in pages for u in urls_of(p, "a[href]", self.fetcher.hosts)}
        for group in groups[:GROUPS_TRIED]:
            targets = self.pages(_spread(group.urls, SAMPLES))
            if not targets:
                continue
            step = self._step(pages, group)
            found = self.items(targets)
            if found is not None:
                image, scopes, urls = found
                fields = suggest_fields(scopes, self.today)
                return Plan([step], any(t.rendered for t in targets), image, None, fields, urls)
            if depth + 1 < MAX_DEPTH:
                below = self.walk(targets[:2], here | seen_above, depth + 1)
                if below is not None:
                    below.steps.insert(0, step)
                    return below
        card = self.cards(pages[0])
        if card is not None:
            each, image, blocks = card
            return Plan([], pages[0].rendered, image, each, suggest_fields(blocks[:SAMPLES * 2], self.today),
                        [pages[0].url], next_page=next_link(pages[:1]))
        return None

    def _step(self, pages: list[Page], group: LinkGroup) -> Step:
        counts = [len(p.sel.css(group.css)) for p in pages]
        return Step(group.css, next_link(pages), any(p.rendered for p in pages), counts, group.urls[:3])


def _richer(rendered: Page, raw: Page) -> bool:
    """Whether the rendered page shows what the raw HTML lacks: more links or images."""
    def size(page: Page) -> tuple[int, int]:
        return len(page.sel.css("a[href]")), len(page.sel.css("img, picture"))

    (links_r, images_r), (links_h, images_h) = size(rendered), size(raw)
    return links_r >= links_h + 2 or images_r >= images_h + 2


def explore(fetcher: Fetcher, faces: FaceCounter, start_url: str, render: str, today: date) -> tuple[Plan | None, list[str]]:
    """The plan for one start URL (None when none was found) and notes on what could not be read."""
    explorer = Explorer(fetcher, faces, render, today)
    start = explorer.load(start_url)
    if start is None:
        return None, explorer.notes
    plan = explorer.walk([start], set(), 0)
    if plan is None:
        found = explorer.items([start])  # the start page may itself be a profile
        if found is not None:
            image, scopes, urls = found
            plan = Plan([], start.rendered, image, None, suggest_fields(scopes, today), urls)
    if plan is not None:
        plan.notes = explorer.notes
    return plan, explorer.notes

