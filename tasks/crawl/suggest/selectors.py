"""CSS selectors a person can read, generalised from examples and verified on every sample page.

A suggested selector should survive the site's next edit: classes over positions
(`a.profile-link`, `.card img`), the examples' common ancestor over a path from the
root. Candidates for each example element are listed from the most general to the most
specific; the first candidate that selects exactly what is wanted on every sample page
wins. Class names that look generated (`css-1x2y3z`, long hashes) are not used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from parsel import Selector

_STABLE_CLASS = re.compile(r"^[A-Za-z][A-Za-z_-]{1,30}[0-9]?$")
ANCESTORS = 5  # levels climbed for a classed ancestor


def stable_classes(element) -> list[str]:
    """The element's class names that look written by a person."""
    return [c for c in (element.get("class") or "").split() if _STABLE_CLASS.match(c)]


def _stable_id(element) -> str | None:
    value = element.get("id") or ""
    return value if _STABLE_CLASS.match(value) else None


def _own(element) -> list[str]:
    """Selectors naming the element by itself: tag.class for each class, then the tag."""
    tag = element.tag
    return [f"{tag}.{c}" for c in stable_classes(element)] + [tag]


def candidates(element) -> list[str]:
    """Selectors for `element` (an lxml element), the most general first."""
    own = _own(element)
    found = [s for s in own if "." in s]
    parent = element.getparent()
    climbed = 0
    while parent is not None and climbed < ANCESTORS and parent.tag not in ("html",):
        if (ident := _stable_id(parent)) is not None:
            found += [f"#{ident} {s}" for s in own]
        for cls in stable_classes(parent):
            found += [f".{cls} {s}" for s in own]
        parent = parent.getparent()
        climbed += 1
    found.append(own[-1])
    found.append(structural(element))
    return list(dict.fromkeys(found))


def structural(element) -> str:
    """A path of `tag:nth-of-type(k)` steps up to the nearest ancestor with a class or id (or body)."""
    steps: list[str] = []
    node = element
    while node is not None and node.tag not in ("body", "html"):
        parent = node.getparent()
        if parent is None:
            break
        same = [c for c in parent if c.tag == node.tag]
        steps.append(node.tag if len(same) == 1 else f"{node.tag}:nth-of-type({same.index(node) + 1})")
        if node is not element and (stable_classes(node) or _stable_id(node)):
            anchor = f"#{_stable_id(node)}" if _stable_id(node) else f"{node.tag}.{stable_classes(node)[0]}"
            steps[-1] = anchor
            break
        node = parent
    return " > ".join(reversed(steps)) or element.tag


def first_fitting(examples: Iterable, fits: Callable[[str], bool]) -> str | None:
    """The first candidate of the example elements (in their order) for which `fits` holds."""
    tried: set[str] = set()
    for element in examples:
        for css in candidates(element):
            if css in tried:
                continue
            tried.add(css)
            try:
                if fits(css):
                    return css
            except Exception:  # noqa: BLE001 - a candidate cssselect cannot translate is just not taken
                continue
    return None


def select_count(page: Selector, css: str) -> int:
    return len(page.css(css))
