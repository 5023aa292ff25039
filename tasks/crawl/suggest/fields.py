"""Candidate fields of an item: its name, pronouns, birth date, department, and labelled values.

Each field is found on every sample (a profile page, or a card on a team page), given a
selector that selects one element per sample, and read through spiders/parsers.py's
`parse_field`, so the values shown in the recipe's comments are exactly what the crawl
will store. Labels in `dt`/`dd` pairs and table rows become XPath selectors by their
label text, which stays right when the order of the rows changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from parsel import Selector

from spiders.parsers import FEMALE, MALE, clean_text, parse_field, read_birthdate
from tasks.core.recipe import FieldSpec
from tasks.crawl.suggest.selectors import first_fitting

_DEPARTMENT = re.compile(r"\b(Department|School|Faculty|Division|Institute) of ([A-Z][^.,;:()]{1,60})")
_BIRTH_LABEL = re.compile(r"\b(born|birth|dob|date of birth|geboren|né|née)\b", re.IGNORECASE)
_AGE_LABEL = re.compile(r"^\s*age\s*$", re.IGNORECASE)
_GROUP_LABEL = re.compile(r"\b(department|dept|team|group|faculty|division|unit|school|section|role)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z]+")
_NAME_WORDS = re.compile(r"^[^\d@]{3,80}$")
TEXT_TAGS = "p, div, span, dd, td, li, section"
MAX_LABELS = 8


@dataclass
class Suggested:
    """One field: its spec (as the recipe writes it), the values read on the samples, a note."""

    name: str
    spec: dict
    values: list[str] = field(default_factory=list)
    note: str = ""

    def field_spec(self) -> FieldSpec:
        return FieldSpec(**self.spec)


def _text(element) -> str:
    return clean_text(["".join(element.itertext())])


def _own_text(element) -> str:
    """The element's text without that of its block children (a <div> holding paragraphs)."""
    return clean_text([element.text or ""] + [(c.tail or "") for c in element])


def values(scopes: list[Selector], spec: dict, today: date) -> list[str]:
    """What `parse_field` gives on each sample, as the crawl reads it."""
    parsed = FieldSpec(**spec)
    out = []
    for scope in scopes:
        found = scope.css(parsed.css) if parsed.css else scope.xpath(parsed.xpath or "")
        parts = [m.root if isinstance(m.root, str) else m.xpath("string()").get() or "" for m in found]
        out.append(parse_field(parts, parsed, today).value)
    return out


def _one_each(scopes: list[Selector], examples: list, check) -> str | None:
    """A selector matching exactly one element per sample, and one whose text passes `check`."""
    def fits(css: str) -> bool:
        for scope in scopes:
            found = scope.css(css)
            if len(found) != 1 or not check(found[0].root):
                return False
        return True

    return first_fitting(examples, fits)


def _pronouns(element) -> bool:
    words = _WORD.findall(_own_text(element).casefold())
    return sum(w in FEMALE or w in MALE for w in words) >= 1


def _leaf_examples(scope: Selector, check) -> list:
    return [m.root for m in scope.css(TEXT_TAGS) if check(m.root)]


def _name(scopes: list[Selector], today: date) -> Suggested | None:
    """The heading that differs from sample to sample (the site's title is the same on each)."""
    for tags in ("h1", "h2", "h3", "h4, strong, b, .name"):
        examples = [m.root for scope in scopes for m in scope.css(tags)
                    if _NAME_WORDS.match(_text(m.root))]
        css = _one_each(scopes, examples, lambda e: bool(_NAME_WORDS.match(_text(e))))
        if css:
            spec = {"css": css}
            read = values(scopes, spec, today)
            if len(set(read)) == len(read) or len(scopes) == 1:
                return Suggested("name", spec, read, "the person's name (check it is not the page's title)")
    return None


def _labelled(scopes: list[Selector], today: date) -> list[Suggested]:
    """Values labelled in dt/dd pairs and two-cell table rows, found on most samples."""
    labels: dict[str, str] = {}
    for scope in scopes:
        for dt in scope.css("dt"):
            labels.setdefault(clean_text([dt.xpath("string()").get() or ""]).rstrip(":"), "dt")
        for row in scope.css("tr"):
            cells = row.xpath("./th|./td")
            if len(cells) == 2:
                labels.setdefault(clean_text([cells[0].xpath("string()").get() or ""]).rstrip(":"), "tr")
    found = []
    for label, kind in list(labels.items())[:MAX_LABELS * 2]:
        if not label or len(label) > 40 or "'" in label:
            continue
        if kind == "dt":
            xpath = f".//dt[normalize-space(translate(., ':', ''))='{label}']/following-sibling::dd[1]"
        else:
            xpath = f".//tr[*[1][normalize-space(translate(., ':', ''))='{label}']]/*[2]"
        present = sum(bool(scope.xpath(xpath)) for scope in scopes)
        if present * 2 <= len(scopes):
            continue
        spec: dict = {"xpath": xpath}
        note = f"labelled '{label}' on the page"
        if _BIRTH_LABEL.search(label):
            spec["parse"], note = "birthdate", f"age in years at crawl time, from '{label}'"
        elif _AGE_LABEL.match(label):
            spec["parse"] = "age"
        name = re.sub(r"[^a-z0-9]+", "_", label.casefold()).strip("_") or "field"
        if spec.get("parse") in ("birthdate", "age"):
            name = "age"
        found.append(Suggested(name, spec, values(scopes, spec, today), note))
        if len(found) >= MAX_LABELS:
            break
    return found


def _pronoun_field(scopes: list[Selector], today: date) -> Suggested | None:
    examples = [e for scope in scopes for e in _leaf_examples(scope, _pronouns)]
    css = _one_each(scopes, examples, lambda e: True)
    if css is None:
        return None
    spec = {"css": css, "parse": "pronoun"}
    read = values(scopes, spec, today)
    if sum(bool(v) for v in read) * 2 <= len(read):
        return None
    return Suggested("gender", spec, read, "female | male, from the pronouns in the text (a tie stays empty)")


def _department(scopes: list[Selector], today: date) -> Suggested | None:
    def check(e) -> bool:
        return bool(_DEPARTMENT.search(_own_text(e)))

    examples = [e for scope in scopes for e in _leaf_examples(scope, check)]
    css = _one_each(scopes, examples, check)
    if css is None:
        return None
    word = _DEPARTMENT.search(_own_text(examples[0])).group(1)  # type: ignore[union-attr]
    spec = {"css": css, "regex": rf"{word} of ([^.,;:()]+)"}
    return Suggested("department", spec, values(scopes, spec, today), f"the text after '{word} of'")


def _born_text(scopes: list[Selector], today: date) -> Suggested | None:
    def check(e) -> bool:
        text = _own_text(e)
        return bool(_BIRTH_LABEL.search(text)) and read_birthdate(text) is not None

    examples = [e for scope in scopes for e in _leaf_examples(scope, check)]
    css = _one_each(scopes, examples, check)
    if css is None:
        return None
    spec = {"css": css, "parse": "birthdate"}
    return Suggested("age", spec, values(scopes, spec, today), "age in years at crawl time, from the birth date")


def suggest_fields(scopes: list[Selector], today: date) -> list[Suggested]:
    """Every field found on the samples, the name first; one field per name."""
    found: dict[str, Suggested] = {}
    for candidate in [_name(scopes, today), *_labelled(scopes, today), _department(scopes, today),
                      _pronoun_field(scopes, today), _born_text(scopes, today)]:
        if candidate is None or candidate.name in found:
            continue
        if _GROUP_LABEL.search(candidate.name) and "department" not in found and candidate.name != "department":
            candidate.note += "; a group such as a department or team: a likely target"
        found[candidate.name] = candidate
    return list(found.values())
