"""Download limits applied as the bytes arrive, each failing with its reason.

`crawl.max_total_bytes` bounds what one crawl, or one image download, takes from the
network. `ByteLimits` (an extension) counts every byte received, from Scrapy's
`bytes_received` signal, into the stats, and stops the download that would pass the
budget; `BudgetedDownloadHandler` (Scrapy's HTTP/1.1 handler) then declines each
request at the moment it would be sent, so requests queued earlier are never sent.
Pages served from the HTTP cache cost nothing; rendered pages come through the
browser and are not counted.

`ByteLimits` also applies the size cap (DOWNLOAD_MAXSIZE) to responses that announce
no Content-Length: Scrapy cancels those without a reason (`DownloadCancelledError`);
stopped here, the failure says `image too large` (spiders/failures.py).
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from scrapy import Request, signals
from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.exceptions import StopDownload
from scrapy.http import Response

from spiders.failures import BudgetSpent, Declined

RECEIVED = "faceset/bytes_received"


def budget_spent(limit: int) -> str:
    return f"limit: the download budget of {limit} bytes is spent (crawl.max_total_bytes)"


class ByteLimits:
    """Count received bytes; stop a download past the budget or past its size cap."""

    def __init__(self, crawler) -> None:
        self.stats = crawler.stats
        self.max_total = crawler.settings.getint("FACESET_MAX_TOTAL_BYTES")
        self.max_size = crawler.settings.getint("DOWNLOAD_MAXSIZE")
        self.received: WeakKeyDictionary[Request, int] = WeakKeyDictionary()
        crawler.signals.connect(self.bytes_received, signal=signals.bytes_received)

    @classmethod
    def from_crawler(cls, crawler) -> "ByteLimits":
        return cls(crawler)

    def bytes_received(self, data: bytes, request: Request, spider=None) -> None:
        self.stats.inc_value(RECEIVED, len(data))
        received = self.received.get(request, 0) + len(data)
        self.received[request] = received
        if self.stats.get_value(RECEIVED) > self.max_total:
            raise BudgetSpent(budget_spent(self.max_total))
        limit = request.meta.get("download_maxsize", self.max_size)
        if limit and received > limit:
            raise StopDownload(fail=True)


class BudgetedDownloadHandler(HTTP11DownloadHandler):
    """HTTP/1.1 downloads, declined once the byte budget is spent."""

    async def download_request(self, request: Request) -> Response:
        limit = self._crawler.settings.getint("FACESET_MAX_TOTAL_BYTES")
        if (self._crawler.stats.get_value(RECEIVED) or 0) >= limit:
            raise Declined(budget_spent(limit))
        return await super().download_request(request)
