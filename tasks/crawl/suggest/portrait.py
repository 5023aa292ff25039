"""The portrait of a page: the image that holds one face of a useful size, not a logo or an icon.

Images are read as the crawl reads them (spiders/extract.py: `srcset`'s largest
candidate, lazy-loading attributes, `<picture>` through its `<img>`). An image found on
every sample page is the site's (a logo, an icon) and is not even downloaded; the others
go through the faces stage's own detector (tasks/vision: decode, YuNet) and the portrait
is the one with exactly one face at least `min_face_px` wide. The detector arrives as a
function (`FaceCount`, bytes in, Faces out; flows/commands/recipe.py makes it from
tasks/vision) so that the crawl stage's code, and its cache key, never include it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin

from parsel import Selector

from spiders.extract import image_urls, url_from_element
from tasks.core.recipe import FacesConfig, FieldSpec
from tasks.crawl.suggest.fetcher import Fetcher, Skipped
from tasks.crawl.suggest.selectors import first_fitting

CHECKED_PER_PAGE = 6  # images looked at per page at most


@dataclass
class Faces:
    """What the detector saw in one image: how many faces, the widest one's side, or why none."""

    count: int
    largest: int = 0
    why: str = ""

    def portrait(self, config: FacesConfig) -> bool:
        return self.count == 1 and self.largest >= config.min_face_px


FaceCount = Callable[[bytes], Faces]  # an image's bytes -> the faces the faces stage's detector finds


def image_elements(scope: Selector) -> list[Selector]:
    """<img> and <picture> elements in page order, an <img> inside a <picture> read through the picture."""
    return [m for m in scope.css("picture, img")
            if not (m.root.tag == "img" and m.root.getparent() is not None and m.root.getparent().tag == "picture")]


def element_url(element: Selector, base_url: str) -> str:
    value = url_from_element(element)
    return urljoin(base_url, value) if value and not value.startswith("data:") else ""


class FaceCounter:
    """Faces per image URL, each image downloaded and detected once."""

    def __init__(self, fetcher: Fetcher, count: FaceCount, config: FacesConfig, keep: bool = False) -> None:
        self.fetcher, self.count, self.config = fetcher, count, config
        self.seen: dict[str, Faces] = {}
        self.kept: dict[str, bytes] = {}  # the images' bytes, when asked to keep them (preview's thumbnails)
        self.keep = keep

    def __call__(self, url: str) -> Faces:
        if url not in self.seen:
            self.seen[url] = self._count(url)
        return self.seen[url]

    def _count(self, url: str) -> Faces:
        try:
            data = self.fetcher.image(url)
        except Skipped as exc:
            return Faces(0, why=str(exc))
        if self.keep:
            self.kept[url] = data
        return self.count(data)


def site_images(scopes: list[tuple[Selector, str]]) -> set[str]:
    """Image URLs found in more than one sample scope: the site's logos and icons."""
    counts = Counter(url for scope, base in scopes for url in {element_url(e, base) for e in image_elements(scope)})
    return {url for url, n in counts.items() if n > 1 and len(scopes) > 1}


def portrait_of(scope: Selector, base_url: str, shared: set[str], faces: FaceCounter) -> Selector | None:
    """The element of the scope's portrait, or None."""
    best, best_px = None, 0
    checked = 0
    for element in image_elements(scope):
        url = element_url(element, base_url)
        if not url or url in shared or url.lower().split("?")[0].endswith(".svg"):
            continue
        checked += 1
        found = faces(url)
        if found.portrait(faces.config) and found.largest > best_px:
            best, best_px = element, found.largest
        if checked >= CHECKED_PER_PAGE:
            break
    return best


def portrait_selector(samples: list[tuple[Selector, str, Selector]]) -> str | None:
    """A selector giving exactly the portrait's URL on every sample (scope, base URL, portrait element)."""
    wanted = [(scope, base, element_url(portrait, base)) for scope, base, portrait in samples]

    def fits(css: str) -> bool:
        return all(image_urls(scope, FieldSpec(css=css), base) == [url] for scope, base, url in wanted)

    return first_fitting([portrait.root for _, _, portrait in samples], fits)
