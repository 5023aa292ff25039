"""Download limits applied as the bytes arrive, each failing with its reason.

`crawl.max_total_bytes` bounds what one build takes from the network: its crawl and its
image download together, resumes included (the figure is kept in a file between processes:
spiders/budget.py).

`ByteLimits` (an extension) counts every byte received, from Scrapy's `bytes_received`
signal, on top of what the budget file says, and stops the download that would pass the
budget; `BudgetedDownloadHandler` (Scrapy's HTTP/1.1 handler) then declines each request
at the moment it would be sent, so requests queued earlier are never sent. Pages served
from the HTTP cache cost nothing; rendered pages are charged their HTML
(spiders/rendering.py calls `charge`). The file is written ahead of the count (a
reservation of `step` bytes), so a process killed at any moment leaves a figure that is
never below what it received.

`ByteLimits` also applies the size cap (DOWNLOAD_MAXSIZE) to responses that announce
no Content-Length: Scrapy cancels those without a reason (`DownloadCancelledError`);
stopped here, the failure says `image too large` (spiders/failures.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from weakref import WeakKeyDictionary

from scrapy import Request, signals
from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.exceptions import StopDownload
from scrapy.http import Response

from spiders.budget import open_budget, record_spent
from spiders.failures import BudgetSpent, Declined

RECEIVED = "faceset/bytes_received"


def budget_spent(limit: int) -> str:
    return f"limit: the download budget of {limit} bytes is spent (crawl.max_total_bytes)"


# ---------------------------------------------------------------- in the Scrapy process


class ByteLimits:
    """Count received bytes against the build's budget; stop a download past it or past its size cap."""

    def __init__(self, crawler) -> None:
        self.stats = crawler.stats
        self.max_total = crawler.settings.getint("FACESET_MAX_TOTAL_BYTES")
        self.max_size = crawler.settings.getint("DOWNLOAD_MAXSIZE")
        file = crawler.settings.get("FACESET_BUDGET_FILE")
        self.file = Path(file) if file else None
        self.before = open_budget(self.file) if self.file else 0  # spent by earlier processes of this build
        self.reserved = self.before
        self.step = min(1 << 20, max(4096, self.max_total // 100))
        self.received: WeakKeyDictionary[Request, int] = WeakKeyDictionary()
        self._lock = threading.Lock()
        crawler.faceset_limits = self  # for the render middleware, which downloads past Scrapy's handlers
        crawler.signals.connect(self.bytes_received, signal=signals.bytes_received)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler) -> "ByteLimits":
        return cls(crawler)

    @property
    def total(self) -> int:
        """Bytes this build has spent, this process's included."""
        return self.before + (self.stats.get_value(RECEIVED) or 0)

    def exhausted(self) -> bool:
        return self.total >= self.max_total

    def charge(self, size: int) -> None:
        """Count `size` bytes; the reservation in the budget file stays ahead of the count.

        Locked: downloads are charged on Scrapy's thread, rendered pages on the browsers' threads."""
        with self._lock:
            self.stats.inc_value(RECEIVED, size)
            if self.file is not None and self.total > self.reserved:
                self.reserved = self.total + self.step
                record_spent(self.file, self.reserved, durable=False)

    def bytes_received(self, data: bytes, request: Request, spider=None) -> None:
        self.charge(len(data))
        received = self.received.get(request, 0) + len(data)
        self.received[request] = received
        if self.total > self.max_total:
            raise BudgetSpent(budget_spent(self.max_total))
        limit = request.meta.get("download_maxsize", self.max_size)
        if limit and received > limit:
            raise StopDownload(fail=True)

    def spider_closed(self, spider=None, reason: str = "") -> None:
        """Leave the exact figure (the reservation is only for a process killed before this)."""
        if self.file is not None:
            record_spent(self.file, self.total)


class BudgetedDownloadHandler(HTTP11DownloadHandler):
    """HTTP/1.1 downloads, declined once the byte budget is spent."""

    async def download_request(self, request: Request) -> Response:
        limits: ByteLimits = self._crawler.faceset_limits
        if limits.exhausted():
            raise Declined(budget_spent(limits.max_total))
        return await super().download_request(request)
