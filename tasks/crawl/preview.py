"""`faceset preview RECIPE`: what a recipe reads on a few pages per source, as one HTML page.

A recipe author needs to see each selector at work before a whole build: per follow step
how many links matched on each page read (with samples), per item page the image found
(shown, with the faces the faces stage's detector sees in it) and every field's raw
text, regex result, mapped and parsed value (the steps of spiders/parsers.py's
`parse_field`), and where something matched nothing, the crawl diagnosis's sentence
(spiders/diagnosis.py, fed by the same tallies the spider keeps). Pages are fetched like
`recipe new` fetches them (tasks/crawl/suggest/fetcher.py: robots.txt, User-Agent, URL
policy, a budget); images are shown as small thumbnails inside the page and not stored.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from PIL import Image

from spiders.diagnosis import Tally, check_rendered, messages, step_key
from spiders.extract import image_urls, read_items, select, texts
from spiders.parsers import apply_map, apply_regex, clean_text, parse_field
from spiders.settings import user_agent
from tasks.core.atomic import write_text
from tasks.core.recipe import FacesConfig, FieldSpec, Recipe, Source
from tasks.core.templates import render
from tasks.core.urls import source_hosts, url_policy
from tasks.crawl.suggest.fetcher import Budget, Fetcher, Skipped
from tasks.crawl.suggest.links import Page, urls_of
from tasks.crawl.suggest.portrait import FaceCount, FaceCounter

THUMB = 160


class _Stats:
    """The part of Scrapy's stats collector that the diagnosis tally uses."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get_value(self, key: str) -> Any:
        return self.values.get(key)

    def set_value(self, key: str, value: Any) -> None:
        self.values[key] = value


@dataclass
class StepRead:
    step: int
    selector: str
    pages: list[dict[str, Any]] = field(default_factory=list)  # url, count, next count, samples


@dataclass
class ItemRead:
    url: str
    image_url: str
    thumbnail: str  # a data: URI, "" when the image could not be read
    faces: int
    why: str
    fields: list[dict[str, str]]


@dataclass
class SourceRead:
    name: str
    steps: list[StepRead] = field(default_factory=list)
    items: list[ItemRead] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _thumbnail(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMB, THUMB))
            out = io.BytesIO()
            image.save(out, "JPEG", quality=80)
    except (OSError, ValueError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def field_steps(scope, spec: FieldSpec, today: date) -> dict[str, str]:
    """A field's raw text, its regex result, mapped value and parsed value (what `parse_field` stores)."""
    found = [spec.value] if spec.value is not None else texts(select(scope, spec))
    raw = clean_text(found)
    after_regex = apply_regex(raw, spec.regex) if spec.regex and raw else raw
    mapped = (apply_map(after_regex, spec.map) or "") if spec.map is not None and after_regex else after_regex
    return {"raw": raw, "regex": after_regex if spec.regex else "", "mapped": mapped if spec.map is not None else "",
            "value": parse_field(found, spec, today).value, "matches": str(len(found))}


class Previewer:
    def __init__(self, recipe: Recipe, pages: int, faces: FaceCount, today: date) -> None:
        self.recipe, self.pages, self.today, self.faces = recipe, pages, today, faces
        self.tally = Tally(_Stats())

    def source(self, source: Source) -> SourceRead:
        read = SourceRead(source.name)
        budget = Budget(pages=self.pages * (len(source.follow) + 1) + 1, images=self.pages * 2)
        with Fetcher(user_agent(self.recipe), url_policy(self.recipe), source_hosts(source),
                     delay=self.recipe.crawl.delay, timeout=self.recipe.crawl.timeout, budget=budget) as fetcher:
            faces = FaceCounter(fetcher, self.faces, self.recipe.faces or FacesConfig(), keep=True)
            urls = [url for _, url in source.expanded_urls()][: self.pages]  # search sources: their queries put in
            for number, follow in enumerate(source.follow):
                render = source.render if follow.render is None else follow.render
                step = StepRead(number + 1, follow.links or follow.links_xpath or "")
                found: dict[str, None] = {}
                for page in self._pages(fetcher, urls, render, read):
                    links = page.sel.css(follow.links) if follow.links else page.sel.xpath(follow.links_xpath or "")
                    hrefs = urls_of(page, follow.links or "a", fetcher.hosts) if follow.links else []
                    self.tally.selector(source.name, step_key(number), "links", step.selector, page.url, len(links),
                                        rendered=render)
                    nexts = len(select(page.sel, follow.next_page)) if follow.next_page else None
                    if follow.next_page:
                        self.tally.selector(source.name, step_key(number), "next_page", follow.next_page, page.url,
                                            nexts or 0, rendered=render)
                    step.pages.append({"url": page.url, "count": len(links), "next": nexts, "samples": hrefs[:3]})
                    for href in hrefs:
                        found.setdefault(href)
                read.steps.append(step)
                urls = list(found)[: self.pages]
            for page in self._pages(fetcher, urls, source.render, read):
                read.items.extend(self._items(source, page, faces))
            read.skipped.extend(budget.skipped)
        return read

    def _pages(self, fetcher: Fetcher, urls: list[str], render: bool, read: SourceRead) -> list[Page]:
        out = []
        for url in urls:
            try:
                out.append(Page(*fetcher.page(url, render=render), rendered=render))
            except Skipped as exc:
                read.skipped.append(str(exc))
        return out

    def _items(self, source: Source, page: Page, faces: FaceCounter) -> list[ItemRead]:
        spec = source.item
        if spec is None:
            return []
        read_items(page.sel, spec, page.url, self.today, observer=self.tally.page(source, page.url, page.rendered))
        out = []
        for scope in (page.sel.css(spec.each) if spec.each else [page.sel])[: self.pages * 4]:
            urls = image_urls(scope, spec.image, page.url)
            fields = [{"name": name, **field_steps(scope, field_spec, self.today)} for name, field_spec in spec.fields.items()]
            image_url, thumbnail, count, why = (urls[0] if urls else ""), "", 0, "the image selector matched nothing"
            if urls:
                found = faces(urls[0])
                count, why = found.count, found.why
                if urls[0] in faces.kept:
                    thumbnail = _thumbnail(faces.kept[urls[0]])
            out.append(ItemRead(page.url, image_url, thumbnail, count, why, fields))
        return out


def preview(recipe: Recipe, out: Path, faces: FaceCount, pages: int = 3, today: date | None = None) -> list[SourceRead]:
    """Read a few pages of every web source of `recipe` and write `out` (preview.html); `faces`
    counts the faces in an image (flows/commands/recipe.py's `face_count`)."""
    previewer = Previewer(recipe, pages, faces, today or date.today())
    sources = [previewer.source(s) for s in recipe.sources if s.start_urls and s.item is not None]
    check_rendered(recipe, previewer.tally.data)  # "add render: true" when the rendered page has the matches
    reasons = messages(recipe, previewer.tally.data)
    write_text(out, str(render("tasks.crawl", "preview.html.j2", recipe=recipe, sources=sources, reasons=reasons)))
    return sources
