"""A few pages and images, fetched as politely as the crawl fetches: for `recipe new` and `preview`.

Suggesting a recipe reads a handful of pages chosen one after another (the start page,
then samples of the links found there), so it fetches in process rather than through a
Scrapy run. It keeps the crawl's manners all the same: the faceset User-Agent with the
contact, robots.txt obeyed (read with Protego, as Scrapy reads it), a delay between
requests, the URL policy of tasks.core.urls at every hop (http(s) only, the source's
hosts, checked addresses, connected to the very address checked), a page and an image
budget, and Chromium through spiders/browser.py when a page is built by JavaScript.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from protego import Protego

from spiders.browser import Browser, host_resolver_rules, open_page, page_state, start_browser
from tasks.core.errors import FacesetError
from tasks.core.urls import UrlPolicy, check_url, checked_connector

MAX_REDIRECTS = 5
MAX_PAGE_BYTES = 5_000_000
MAX_IMAGE_BYTES = 10_000_000
SETTLE = 0.4  # seconds a rendered page's element count must stay unchanged to count as built
SETTLE_MAX = 5.0
_COUNT = "return document.getElementsByTagName('*').length;"


class Skipped(Exception):
    """A URL not fetched (policy, robots.txt, budget, HTTP error); the message says why."""


@dataclass
class Budget:
    """What a suggestion may fetch in all: a handful of pages, a few dozen images."""

    pages: int = 15
    images: int = 40
    fetched_pages: list[str] = field(default_factory=list)
    fetched_images: int = 0
    skipped: list[str] = field(default_factory=list)  # sentences: robots.txt, refusals, errors


def _connection(policy: UrlPolicy, scheme: str, host: str, port: int | None, timeout: float) -> http.client.HTTPConnection:
    """An HTTP(S) connection that connects only to an address the policy accepts (and to that address)."""
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=timeout)
    conn._create_connection = checked_connector(policy, Skipped)  # http.client's hook for opening its socket
    return conn


class Fetcher:
    """Pages and images of one site within a budget, robots.txt obeyed, with the crawl's User-Agent."""

    def __init__(self, user_agent: str, policy: UrlPolicy, hosts: frozenset[str], *, delay: float = 0.5,
                 timeout: float = 15.0, budget: Budget | None = None) -> None:
        self.user_agent, self.policy, self.hosts = user_agent, policy, hosts
        self.delay, self.timeout = delay, timeout
        self.budget = budget or Budget()
        self._robots: dict[str, Protego | None] = {}
        self._last = 0.0
        self._browser: Browser | None = None
        self._cache: dict[tuple[str, bool], tuple[str, str]] = {}

    # ------------------------------------------------------------ HTTP

    def _wait(self) -> None:
        pause = self._last + self.delay - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._last = time.monotonic()

    def _get(self, url: str, limit: int, robots: bool = True) -> tuple[str, bytes, str]:
        """(final URL, body, content type), every redirect hop checked (URL policy, and robots.txt
        unless this is robots.txt itself); Skipped on any refusal."""
        for hop in range(MAX_REDIRECTS + 1):
            why = check_url(url, self.policy, self.hosts)
            if why:
                raise Skipped(f"{url}: {why}")
            if hop and robots:
                self._checked(url)
            parts = urlsplit(url)
            self._wait()
            conn = _connection(self.policy, parts.scheme, parts.hostname or "", parts.port, self.timeout)
            try:
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                conn.request("GET", path, headers={"User-Agent": self.user_agent, "Accept-Encoding": "identity"})
                response = conn.getresponse()
                if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                    url = urljoin(url, response.getheader("Location") or "")
                    continue
                if response.status >= 400:
                    raise Skipped(f"{url}: HTTP {response.status}")
                body = response.read(limit + 1)
                if len(body) > limit:
                    raise Skipped(f"{url}: larger than {limit} bytes")
                return url, body, response.getheader("Content-Type") or ""
            except (OSError, http.client.HTTPException) as exc:
                raise Skipped(f"{url}: {exc}") from exc
            finally:
                conn.close()
        raise Skipped(f"{url}: more than {MAX_REDIRECTS} redirects")

    def allowed(self, url: str) -> bool:
        """Whether robots.txt of the URL's site lets faceset fetch it (as the crawl's middleware asks)."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            try:
                _, body, _ = self._get(origin + "/robots.txt", 500_000, robots=False)
                self._robots[origin] = Protego.parse(body.decode("utf-8", "replace"))
            except Skipped:
                self._robots[origin] = None  # no robots.txt: everything is allowed
        robots = self._robots[origin]
        return robots is None or robots.can_fetch(url, "faceset")

    def _checked(self, url: str) -> None:
        if not self.allowed(url):
            self.budget.skipped.append(f"{url}: blocked by robots.txt")
            raise Skipped(f"{url}: blocked by robots.txt")

    # ------------------------------------------------------------ pages and images

    def page(self, url: str, render: bool = False) -> tuple[str, str]:
        """(final URL, HTML) of a page, rendered in headless Chromium when `render`."""
        if (url, render) in self._cache:
            return self._cache[(url, render)]
        if url not in self.budget.fetched_pages:  # a page read raw and rendered counts once
            if len(self.budget.fetched_pages) >= self.budget.pages:
                raise Skipped(f"{url}: the page budget ({self.budget.pages} pages) is spent")
            self._checked(url)
            self.budget.fetched_pages.append(url)
        if render:
            found = self._render(url)
        else:
            final, body, content_type = self._get(url, MAX_PAGE_BYTES)
            charset = content_type.partition("charset=")[2].split(";")[0].strip() or "utf-8"
            try:
                found = (final, body.decode(charset, "replace"))
            except LookupError:
                found = (final, body.decode("utf-8", "replace"))
        self._cache[(url, render)] = found
        return found

    def _render(self, url: str) -> tuple[str, str]:
        if self._browser is None:
            self._browser = start_browser(self.user_agent, self.timeout, host_resolver_rules(self.hosts, self.policy))
        self._wait()
        try:
            open_page(self._browser, url, None, self.timeout)
        except Exception as exc:  # noqa: BLE001 - any browser failure: this page is not read
            raise Skipped(f"{url}: the browser could not load it ({exc})") from exc
        driver, last, since, start = self._browser.driver, -1, time.monotonic(), time.monotonic()
        while time.monotonic() - start < SETTLE_MAX:  # scripts build the page after load: wait until it stops growing
            count = driver.execute_script(_COUNT)
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= SETTLE:
                break
            time.sleep(0.1)
        final, html = page_state(self._browser)
        why = check_url(final, self.policy, self.hosts)
        if why:
            raise Skipped(f"{url}: the page went to {final}: {why}")
        return final, html

    def image(self, url: str) -> bytes:
        """An image's bytes (within the image budget)."""
        if self.budget.fetched_images >= self.budget.images:
            raise Skipped(f"{url}: the image budget ({self.budget.images} images) is spent")
        self._checked(url)
        self.budget.fetched_images += 1
        return self._get(url, MAX_IMAGE_BYTES)[1]

    def close(self) -> None:
        if self._browser is not None:
            self._browser.quit()
            self._browser = None

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def browser_missing() -> FacesetError | None:
    """Why pages cannot be rendered here (None when Chromium is installed)."""
    from spiders.browser import require_browser

    try:
        require_browser()
    except FacesetError as exc:
        return exc
    return None
