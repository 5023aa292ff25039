"""Downloader middleware holding every request to the URL policy and the download limits.

It comes first in the chain, so it sees every request Scrapy sends: the spider's pages,
image downloads, robots.txt files, each redirect (RedirectMiddleware sends the new URL
down the whole chain again, robots.txt included) and each browser navigation
(spiders/rendering.py hands it back as a redirect). The policy is tasks/core/urls.py;
a page must also stay on its source's hosts. A declined request never reaches the
network, and its reason (`refused: ...`, `limit: ...`) goes to the request's errback:
the crawl report's errors, or the image's manifest row.

Host names are resolved with the reactor's caching resolver, the one the connection
uses next, so the address checked is the address connected to.

It also enforces two limits: `crawl.max_total_bytes` over the process's downloads, and
the size cap of a response that gives no Content-Length (Scrapy cancels those without a
reason; stopping them here lets the failure say `image too large`).
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from scrapy import Request, signals
from scrapy.exceptions import StopDownload
from scrapy.http import Response
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer, error

from spiders.failures import Declined
from spiders.settings import settings_recipe
from tasks.core.urls import check_addresses, check_url, host_of, ip_literal, source_hosts, url_policy


class UrlGuard:
    """Decline requests the URL policy or the limits forbid, with the reason."""

    def __init__(self, crawler) -> None:
        recipe = settings_recipe(crawler.settings)
        self.crawler = crawler
        self.policy = url_policy(recipe)
        self.hosts = {source.name: source_hosts(source) for source in recipe.sources}
        self.max_total = recipe.crawl.max_total_bytes
        self.max_size = crawler.settings.getint("DOWNLOAD_MAXSIZE")
        self.downloaded = 0  # response bytes from the network (not the cache) so far
        self.received: WeakKeyDictionary[Request, int] = WeakKeyDictionary()
        crawler.signals.connect(self.bytes_received, signal=signals.bytes_received)

    @classmethod
    def from_crawler(cls, crawler) -> "UrlGuard":
        return cls(crawler)

    async def process_request(self, request: Request, spider=None) -> None:
        reason = self.refusal(request) or await self.address_refusal(request)
        if reason:
            self.crawler.stats.inc_value("faceset/declined")
            raise Declined(reason)

    def refusal(self, request: Request) -> str | None:
        """What the URL alone forbids (scheme, the source's hosts, IP literals), or the byte budget."""
        source = request.meta.get("source")
        reason = check_url(request.url, self.policy, self.hosts[source] if source in self.hosts else None)
        if reason and request.meta.get("redirect_urls"):
            reason += f", reached by a redirect from {request.meta['redirect_urls'][0]}"
        if reason is None and self.downloaded >= self.max_total:
            reason = f"limit: the download budget of {self.max_total} bytes is spent (crawl.max_total_bytes)"
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

    def process_response(self, request: Request, response: Response, spider=None) -> Response:
        if "cached" not in response.flags:
            self.downloaded += len(response.body)
        return response

    def bytes_received(self, data: bytes, request: Request, spider=None) -> None:
        """Stop a download past its size cap as it arrives (the cap Scrapy applies, with a reason)."""
        received = self.received.get(request, 0) + len(data)
        self.received[request] = received
        limit = request.meta.get("download_maxsize", self.max_size)
        if limit and received > limit:
            raise StopDownload(fail=True)
