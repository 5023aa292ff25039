"""Downloader middleware holding every request to the URL policy, with the reason when it says no.

It comes first in the chain, so it sees every request Scrapy sends: the spider's pages,
image downloads, robots.txt files, each redirect (RedirectMiddleware sends the new URL
down the whole chain again, robots.txt included) and each browser navigation
(spiders/rendering.py hands it back as a redirect). The policy is tasks/core/urls.py;
a page must also stay on its source's hosts. A declined request never reaches the
network, and its reason (`refused: ...`) goes to the request's errback: the crawl
report's errors, or the image's manifest row.

Host names are resolved with the reactor's caching resolver, the one the connection
uses next, so the address checked is the address connected to.

URLs on the takedown list (tasks/core/takedown.py: a page or image URL entry, and the image
URLs entries learned) are declined first, as `TakenDown`, whose errbacks count them
without writing the URL anywhere: a taken-down person's page is never fetched again.
"""

from __future__ import annotations

from scrapy import Request
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer, error

from spiders.failures import Declined, TakenDown
from spiders.settings import settings_recipe
from tasks.core.reasons import TAKEDOWN
from tasks.core.takedown import normalize_url, refused_urls
from tasks.core.urls import check_addresses, check_url, host_of, ip_literal, source_hosts, url_policy


def takedown_urls(settings) -> frozenset[str]:
    """The normalized URLs this build must not request (FACESET_TAKEDOWNS: the list's data root and the dataset)."""
    where = settings.get("FACESET_TAKEDOWNS")
    return refused_urls(where["data_root"], where["dataset"]) if where else frozenset()


def taken_down(url: str, urls: frozenset[str]) -> bool:
    return bool(urls) and normalize_url(url) in urls


class UrlGuard:
    """Decline requests the URL policy forbids, with the reason."""

    def __init__(self, crawler) -> None:
        recipe = settings_recipe(crawler.settings)
        self.crawler = crawler
        self.policy = url_policy(recipe)
        self.hosts = {source.name: source_hosts(source) for source in recipe.sources}
        self.taken_down = takedown_urls(crawler.settings)

    @classmethod
    def from_crawler(cls, crawler) -> "UrlGuard":
        return cls(crawler)

    async def process_request(self, request: Request, spider=None) -> None:
        if taken_down(request.url, self.taken_down):
            self.crawler.stats.inc_value("faceset/takedown_refused")
            raise TakenDown(TAKEDOWN)
        reason = self.refusal(request) or await self.address_refusal(request)
        if reason:
            self.crawler.stats.inc_value("faceset/refused")
            raise Declined(reason)

    def refusal(self, request: Request) -> str | None:
        """What the URL alone forbids: its scheme, leaving the source's hosts, an IP literal's address."""
        source = request.meta.get("source")
        reason = check_url(request.url, self.policy, self.hosts[source] if source in self.hosts else None)
        if reason and request.meta.get("redirect_urls"):
            reason += f", reached by a redirect from {request.meta['redirect_urls'][0]}"
        return reason

    async def address_refusal(self, request: Request) -> str | None:
        """What the host name's address forbids (a name resolving to a private address)."""
        host = host_of(request.url)
        if ip_literal(host) is not None:
            return None  # judged by `refusal`
        from twisted.internet import reactor  # the one Scrapy installed, so imported late

        try:
            address = await maybe_deferred_to_future(reactor.resolve(host))
        except (error.DNSLookupError, error.TimeoutError, defer.TimeoutError):
            return None  # the download itself fails, with "host not found"
        return check_addresses(host, [address], self.policy)
