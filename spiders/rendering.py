"""Downloader middleware that fetches `render: true` pages with headless Chromium.

A request whose meta holds `scroll` or `click` (a search page that loads more results)
is scrolled or clicked until it stops growing before its HTML is taken
(spiders/browser.py `load_more`).

Selenium calls block, so they never run on Scrapy's reactor: each page is rendered in
a small thread pool (`render_workers` threads, one browser per thread, started on first
use), and the reactor keeps downloading other requests meanwhile. The rendered HTML
goes back into Scrapy as an ordinary HtmlResponse, so extraction is the same for static
and rendered pages. Browsers are shut down when the spider closes, for whatever reason,
and at interpreter exit as a last resort.

It sits after robots.txt, the User-Agent and the HTTP cache in the middleware order,
so rendered pages obey robots.txt and are cached for resume like any other page.

A page whose scripts navigate elsewhere (`location.replace`) is answered as the redirect
it is: a 302 to the browser's final URL, which RedirectMiddleware sends down the whole
chain again, so that URL is held to the URL policy and the source's hosts
(spiders/guard.py) and to its host's robots.txt before it is rendered in its turn. The
browser itself reaches only the recipe's hosts and the subdomains of them whose pages it
renders, and it never follows a script's navigation itself (spiders/browser.py), so a page
that robots.txt disallows is never loaded. Rendered HTML over `max_page_bytes` is refused
as `page too large`, and its size is charged to the build's byte budget like a download's.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from concurrent.futures import ThreadPoolExecutor

from scrapy import Request, signals
from scrapy.http import HtmlResponse, Response
from w3lib.url import canonicalize_url

from spiders.browser import Browser, host_resolver_rules, load_more, open_page, page_state, start_browser
from spiders.failures import Declined, too_large
from spiders.limits import budget_spent
from spiders.settings import settings_recipe
from tasks.core.urls import host_allowed, host_of, source_hosts, url_policy


class SeleniumRenderMiddleware:
    """Render requests whose meta has `render: True` (and optionally `wait_for`, waited for up to
    `wait_seconds` or the download timeout)."""

    def __init__(self, crawler) -> None:
        settings = crawler.settings
        self.crawler = crawler
        self.workers = settings.getint("FACESET_RENDER_WORKERS", 2)
        self.timeout = settings.getfloat("DOWNLOAD_TIMEOUT", 30.0)
        self.user_agent = settings.get("USER_AGENT")
        self.max_bytes = settings.getint("DOWNLOAD_MAXSIZE")
        recipe = settings_recipe(settings)
        self.policy = url_policy(recipe)
        self.hosts = frozenset().union(*(source_hosts(source) for source in recipe.sources))
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._browsers: list[Browser] = []
        self._lock = threading.Lock()
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)
        atexit.register(self._quit_all)

    @classmethod
    def from_crawler(cls, crawler) -> "SeleniumRenderMiddleware":
        return cls(crawler)

    def _browser(self, url: str) -> Browser:
        """This worker thread's browser, started on first use. Its browser resolves the recipe's
        hosts and each subdomain of them it has rendered a page of (plain crawling allows those
        too); a page on a new subdomain restarts it with that host pinned as well, checked by
        the URL policy like the others."""
        browser = getattr(self._local, "browser", None)
        pinned = getattr(self._local, "hosts", self.hosts)
        host = host_of(url)
        if browser is not None and (host in pinned or not host_allowed(host, self.hosts)):
            return browser
        if browser is not None:
            with self._lock:
                self._browsers.remove(browser)
            browser.quit()
        hosts = pinned | {host} if host_allowed(host, self.hosts) else pinned
        browser = start_browser(self.user_agent, self.timeout, host_resolver_rules(hosts, self.policy))
        self._local.browser, self._local.hosts = browser, hosts
        with self._lock:
            self._browsers.append(browser)
        self.crawler.stats.inc_value("faceset/browsers_started")
        return browser

    def _render(self, url: str, meta: dict) -> tuple[str, str]:
        """Open the page, make it load more results when the recipe says so (scroll, click), and
        return (final URL, HTML); the scrolls and clicks that brought content are counted."""
        limits = self.crawler.faceset_limits
        if limits.exhausted():  # checked here, in turn: every rendered request is queued at once
            raise Declined(budget_spent(limits.max_total))
        browser = self._browser(url)
        open_page(browser, url, meta.get("wait_for"), meta.get("wait_seconds") or self.timeout)
        if meta.get("scroll") or meta.get("click"):
            scrolled, clicked = load_more(browser, meta.get("scroll") or 0, meta.get("click"),
                                          meta.get("max_clicks") or 0, self.timeout)
            self.crawler.stats.inc_value("faceset/scrolls", scrolled)
            self.crawler.stats.inc_value("faceset/clicks", clicked)
        url, html = page_state(browser)
        # charged here, before this worker takes the next page: its turn's check must see these bytes
        limits.charge(len(html.encode("utf-8")))
        return url, html

    async def process_request(self, request: Request, spider=None):
        if not request.meta.get("render"):
            return None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="faceset-browser")
        limits = self.crawler.faceset_limits  # the build's byte budget (spiders/limits.py)
        loop = asyncio.get_running_loop()
        url, html = await loop.run_in_executor(self._executor, self._render, request.url, request.meta)
        self.crawler.stats.inc_value("faceset/rendered_pages")
        if limits.total > limits.max_total:
            raise Declined(budget_spent(limits.max_total))
        if canonicalize_url(url) != canonicalize_url(request.url):
            self.crawler.stats.inc_value("faceset/browser_navigations")
            return Response(request.url, status=302, headers={"Location": url}, request=request, flags=["rendered"])
        body = html.encode("utf-8")
        if len(body) > self.max_bytes:
            raise Declined(too_large("page"))
        return HtmlResponse(url=request.url, body=body, encoding="utf-8", request=request, flags=["rendered"])

    def _quit_all(self) -> None:
        with self._lock:
            browsers, self._browsers = self._browsers, []
        for browser in browsers:
            try:
                browser.quit()
            except Exception:  # a browser that already died needs no quitting
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def spider_closed(self, spider=None, reason: str = "") -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._quit_all)
