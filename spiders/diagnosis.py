"""Why a crawl found less than the recipe author expected, per source and step, in sentences.

A recipe fails quietly: a selector that matches nothing gives no links, no image or an
empty field, and "the crawl found no images" does not say which of a dozen selectors is
wrong. So the spider tallies, in Scrapy's stats (`faceset/diagnosis`), how often each
selector matched on the pages it read (with a few URLs where it did not), the links that
left the source's hosts, the pages robots.txt blocked, and for each field the texts its
`regex`, `map` and `parse` could not read. After the crawl, `check_rendered` renders one
or two of the pages where a selector of an unrendered step matched nothing in headless
Chromium (the machinery `render: true` uses) and counts the matches there, and
`messages` turns it all into sentences for the build's error and the crawl report.
"""

from __future__ import annotations

from typing import Any

from parsel import Selector

from spiders.extract import image_urls, select
from spiders.parsers import FieldValue, apply_regex, clean_text
from tasks.core.recipe import FieldSpec, Recipe, Source

STATS_KEY = "faceset/diagnosis"
SAMPLES = 3  # URLs or texts kept per finding
RENDER_PAGES = 2  # pages rendered at most by `check_rendered`, per crawl
ITEM = "item"


def step_key(step: int) -> str:
    return f"follow {step + 1}"


def _add_sample(samples: list[Any], value: Any) -> None:
    if len(samples) < SAMPLES and value not in samples:
        samples.append(value)


class Tally:
    """The spider's side: counts kept in the crawl's stats (one JSON-ready dict)."""

    def __init__(self, stats) -> None:
        self.stats = stats
        self.data: dict[str, Any] = stats.get_value(STATS_KEY) or {"selectors": {}, "offsite": {}, "robots": {}, "fields": {}}
        stats.set_value(STATS_KEY, self.data)

    def selector(self, source: str, where: str, what: str, selector: str, url: str, matches: int, *,
                 rendered: bool, unit: str = "pages") -> None:
        """One read of a selector (a page, or an `each` block) and how many matches it gave."""
        entry = self.data["selectors"].setdefault(source, {}).setdefault(where, {}).setdefault(what, {
            "selector": selector, "unit": unit, "reads": 0, "matched": 0, "matches": 0, "rendered": False,
            "empty_urls": []})
        entry["reads"] += 1
        entry["rendered"] = entry["rendered"] or bool(rendered)
        if matches:
            entry["matched"] += 1
            entry["matches"] += matches
        else:
            _add_sample(entry["empty_urls"], url)

    def offsite(self, source: str, url: str) -> None:
        entry = self.data["offsite"].setdefault(source, {"count": 0, "samples": []})
        entry["count"] += 1
        _add_sample(entry["samples"], url)

    def robots(self, source: str, url: str) -> None:
        entry = self.data["robots"].setdefault(source, {"count": 0, "samples": []})
        entry["count"] += 1
        _add_sample(entry["samples"], url)

    def page(self, source: Source, url: str, rendered: bool) -> "PageObserver":
        return PageObserver(self, source, url, rendered)


class PageObserver:
    """What `spiders.extract.read_items` saw on one item page (its ReadObserver)."""

    def __init__(self, tally: Tally, source: Source, url: str, rendered: bool) -> None:
        self.tally, self.source, self.url, self.rendered = tally, source, url, rendered
        self.unit = "blocks" if source.item.each else "pages"

    def blocks(self, count: int) -> None:
        if self.source.item.each:
            self.tally.selector(self.source.name, ITEM, "each", self.source.item.each, self.url, count,
                                rendered=self.rendered)

    def image(self, urls: list[str]) -> None:
        self.tally.selector(self.source.name, ITEM, "image", _shown(self.source.item.image), self.url, len(urls),
                            rendered=self.rendered, unit=self.unit)

    def field(self, name: str, spec: FieldSpec, found: list[str], parsed: FieldValue) -> None:
        """A field's selector matches, then which of regex -> map -> parse lost its text."""
        text = clean_text(found)
        self.tally.selector(self.source.name, ITEM, f"field {name}", _shown(spec), self.url, len(found),
                            rendered=self.rendered, unit=self.unit)
        if not text:
            return
        entry = self.tally.data["fields"].setdefault(self.source.name, {}).setdefault(name, {
            "read": 0, "regex_missed": 0, "regex_samples": [], "unmapped": {}, "mapped_keys": [],
            "parse_failed": 0, "parse_samples": []})
        entry["read"] += 1
        if spec.regex is not None:
            text = apply_regex(text, spec.regex)
            if not text:
                entry["regex_missed"] += 1
                _add_sample(entry["regex_samples"], clean_text(found)[:120])
                return
        if spec.map is not None:
            if parsed.unmapped is not None:
                unmapped = entry["unmapped"]
                if parsed.unmapped in unmapped or len(unmapped) < 50:
                    unmapped[parsed.unmapped] = unmapped.get(parsed.unmapped, 0) + 1
                return
            key = _map_key(text, spec.map)
            if key is not None and key not in entry["mapped_keys"]:
                entry["mapped_keys"].append(key)
        if spec.parse is not None and not parsed.value:
            entry["parse_failed"] += 1
            _add_sample(entry["parse_samples"], text[:120])


def _map_key(text: str, mapping: dict[str, str]) -> str | None:
    """The `map` key a text was mapped by (compared as apply_map compares)."""
    wanted = " ".join(text.split()).casefold()
    return next((key for key in mapping if " ".join(key.split()).casefold() == wanted), None)


def _shown(spec: FieldSpec) -> str:
    return spec.css if spec.css is not None else (spec.xpath or "")


# ---------------------------------------------------------------- after the crawl: the rendered check


def _count(page: Selector, source: Source, where: str, what: str, url: str) -> int:
    """Matches of one selector of the recipe on a page (the same reading the spider does)."""
    if where != ITEM:
        follow = source.follow[int(where.split()[1]) - 1]
        if what == "next_page":
            return len(select(page, follow.next_page or ""))
        return len(page.css(follow.links) if follow.links is not None else page.xpath(follow.links_xpath or ""))
    if what == "each":
        return len(page.css(source.item.each or ""))
    scopes = page.css(source.item.each) if source.item.each else [page]
    if what == "image":
        return sum(len(image_urls(scope, source.item.image, url)) for scope in scopes)
    spec = source.item.fields[what.removeprefix("field ")]
    return sum(len(select(scope, spec)) for scope in scopes)


def _unpaginated(source: Source, where: str, what: str, entry: dict[str, Any]) -> bool:
    """A next_page selector that matched nothing says something only on the start pages: deeper
    down, each page read may be the only page of its listing (and a resumed crawl tallies only
    the pages it read after the resume)."""
    return what == "next_page" and not (where == step_key(0) and entry["reads"] <= len(source.expanded_urls()))


def _to_check(recipe: Recipe, data: dict[str, Any]) -> list[tuple[Source, str, str, dict[str, Any]]]:
    """Selectors of unrendered steps that matched nothing on every page read, start pages first."""
    found = []
    for source in recipe.sources:
        for where, selectors in data.get("selectors", {}).get(source.name, {}).items():
            for what, entry in selectors.items():
                if (entry["reads"] and not entry["matched"] and not entry["rendered"] and entry["empty_urls"]
                        and not _unpaginated(source, where, what, entry)):
                    found.append((source, where, what, entry))
    return sorted(found, key=lambda f: (f[1] == ITEM, f[1]))


def check_rendered(recipe: Recipe, data: dict[str, Any], pages: int = RENDER_PAGES) -> None:
    """Render a page where a selector matched nothing (at most `pages` pages) and store in
    its entry how many matches the rendered page has (`rendered_matches`).

    Runs after the crawl, outside Scrapy, and only when there is something to check; the
    pages were fetched by the crawl already, so robots.txt allowed them. Without Chromium
    the check is skipped (the messages then say nothing of rendering).
    """
    checks = _to_check(recipe, data)
    if not checks:
        return
    from spiders.browser import SELECTOR_WAIT, element_of, host_resolver_rules, render, require_browser, start_browser
    from spiders.settings import user_agent
    from tasks.core.errors import FacesetError
    from tasks.core.urls import source_hosts, url_policy

    try:
        require_browser()
    except FacesetError:
        return
    hosts = frozenset().union(*(source_hosts(s) for s in recipe.sources))
    try:
        browser = start_browser(user_agent(recipe), recipe.crawl.timeout,
                                host_resolver_rules(hosts, url_policy(recipe)))
    except Exception:  # noqa: BLE001 - a browser that does not start takes only this hint away
        return
    rendered: dict[str, Selector] = {}
    try:
        for source, where, what, entry in checks:
            url = entry["empty_urls"][0]
            if url not in rendered:
                if len(rendered) >= pages:
                    continue
                wait_for = element_of(entry["selector"])
                try:
                    _, html = render(browser, url, wait_for, SELECTOR_WAIT)
                except Exception:  # noqa: BLE001 - a page the browser cannot load: nothing to say about it
                    continue
                rendered[url] = Selector(text=html, base_url=url)
            entry["rendered_matches"] = _count(rendered[url], source, where, what, url)
            entry["rendered_url"] = url
    finally:
        browser.quit()


# ---------------------------------------------------------------- sentences


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _samples(values: list[Any]) -> str:
    return ", ".join(repr(v) if not str(v).startswith("http") else str(v) for v in values)


def _where_read(source: Source, where: str, entry: dict[str, Any]) -> str:
    reads = entry["reads"]
    if where == step_key(0) and reads == 1 and len(source.expanded_urls()) == 1:
        return "on the start page"
    if where == ITEM:
        unit = "`each` block" if entry["unit"] == "blocks" else "item page"
        return f"on {'the ' if reads > 1 else ''}{_plural(reads, unit)} read"
    return f"on {'the ' if reads > 1 else ''}{_plural(reads, 'page')} it read"


def _selector_message(source: Source, where: str, what: str, entry: dict[str, Any]) -> str:
    step = f"follow step {where.split()[1]}" if where != ITEM else "item"
    name = {"links": "links selector", "next_page": "next_page selector", "image": "image selector",
            "each": "each selector"}.get(what, f"selector of {what}")
    text = (f"source {source.name}, {step}: the {name} `{entry['selector']}` matched nothing "
            f"{_where_read(source, where, entry)} (e.g. {entry['empty_urls'][0]})")
    found = entry.get("rendered_matches")
    if found:
        things = ("such link", "such links") if what in ("links", "next_page") else ("match", "matches")
        fix = "add `render: true` to this step" if where != ITEM else "add `render: true` to the source"
        return f"{text}, while the rendered page has {found} {things[found != 1]}: {fix}"
    if found == 0:
        return f"{text}, nor does the page rendered in a browser: check the selector against the page source"
    return f"{text}: check the selector against the page source"


_ORDER = {"links": 0, "next_page": 1, "each": 2, "image": 3}  # then the fields, in recipe order


def messages(recipe: Recipe, data: dict[str, Any]) -> list[str]:
    """Sentences a recipe author can act on, in recipe order (sources, steps, item)."""
    out: list[str] = []
    for source in recipe.sources:
        selectors = data.get("selectors", {}).get(source.name, {})
        for where in [step_key(i) for i in range(len(source.follow))] + [ITEM]:
            for what, entry in sorted(selectors.get(where, {}).items(), key=lambda kv: _ORDER.get(kv[0], len(_ORDER))):
                if entry["reads"] and not entry["matched"]:
                    if _unpaginated(source, where, what, entry):
                        continue
                    out.append(_selector_message(source, where, what, entry))
        if offsite := data.get("offsite", {}).get(source.name):
            count = offsite["count"]
            out.append(f"source {source.name}: {_plural(count, 'link')} led off the source's hosts and "
                       f"{'was' if count == 1 else 'were'} not followed (e.g. {_samples(offsite['samples'])}); "
                       "if they should be, add their hosts to the source's allowed_domains")
        if blocked := data.get("robots", {}).get(source.name):
            out.append(f"source {source.name}: {_plural(blocked['count'], 'page')} blocked by robots.txt "
                       f"(e.g. {_samples(blocked['samples'])}); faceset obeys it: ask the site's owner, or "
                       "start from pages it allows")
        for name, entry in data.get("fields", {}).get(source.name, {}).items():
            out.extend(_field_messages(source, name, entry))
    return out


def _field_messages(source: Source, name: str, entry: dict[str, Any]) -> list[str]:
    spec = source.item.fields[name]
    where = f"source {source.name}, field {name}"
    out = []
    if entry["regex_missed"]:
        how = "never matched" if entry["regex_missed"] == entry["read"] else \
            f"did not match {entry['regex_missed']} of {entry['read']} texts"
        out.append(f"{where}: regex `{spec.regex}` {how} (e.g. {_samples(entry['regex_samples'])}); "
                   "fix the regex or the selector")
    if entry["unmapped"]:
        values = sorted(entry["unmapped"].items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{value!r} ({_plural(n, 'item')})" for value, n in values[:5])
        out.append(f"{where}: `map` has no key for {shown}; these items got no {name}: add the values to map")
    if spec.map is not None and entry["read"] > entry["regex_missed"]:
        unseen = [key for key in spec.map if key not in entry["mapped_keys"]]
        if unseen:
            out.append(f"{where}: `map` keys never seen on the pages read: {_samples(unseen[:8])}; "
                       "check their spelling against the site")
    if entry["parse_failed"]:
        out.append(f"{where}: parse: {spec.parse} read no value from {entry['parse_failed']} of "
                   f"{_plural(entry['read'], 'text')} (e.g. {_samples(entry['parse_samples'])})")
    return out
