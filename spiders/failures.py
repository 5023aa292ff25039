"""Why a request failed, in the words the manifest's `reason` column uses.

Scrapy reports failures as exception types and log messages; a researcher reading the
manifest needs `download failed: 404`, `timeout`, `image too large` or `blocked by
robots.txt`. One function translates, for pages (crawl report) and images (manifest).
faceset's own refusals (the URL policy, the limits) carry their reason as they are.
"""

from __future__ import annotations

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    IgnoreRequest,
    StopDownload,
)
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet import error as twisted_error

ROBOTS = "blocked by robots.txt"
TIMEOUT = "timeout"


class Declined(IgnoreRequest):
    """A request faceset declined itself (URL policy, limits); the message is the row's reason."""


class TakenDown(Declined):
    """A request for a URL on the takedown list: its reason is `takedown`, and the URL is never logged."""


class BudgetSpent(StopDownload):
    """A download stopped as it arrived because the byte budget ran out; the message is the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(fail=True)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def too_large(what: str) -> str:
    """The reason for a response over its size cap: `image too large`, `page too large`."""
    return f"{what} too large"


TOO_LARGE = too_large("image")


def describe(exc: BaseException, what: str = "image") -> str:
    """A short reason for a failed request of an image or a page (`what`)."""
    message = str(exc)
    if isinstance(exc, (Declined, BudgetSpent)):
        return message
    if isinstance(exc, StopDownload):  # faceset stops a download only at the size cap (spiders/limits.py)
        return too_large(what)
    if isinstance(exc, HttpError):
        return f"download failed: {exc.response.status}"
    if "robots.txt" in message:
        return ROBOTS
    if "max size" in message or "DOWNLOAD_MAXSIZE" in message:
        return too_large(what)
    if isinstance(exc, (DownloadTimeoutError, TimeoutError, twisted_error.TimeoutError)):
        return TIMEOUT
    if type(exc).__name__ == "TimeoutException":  # Selenium's page-load timeout
        return TIMEOUT
    if isinstance(exc, (CannotResolveHostError, twisted_error.DNSLookupError)):
        return "download failed: host not found"
    if isinstance(exc, (DownloadConnectionRefusedError, twisted_error.ConnectionRefusedError)):
        return "download failed: connection refused"
    if isinstance(exc, IgnoreRequest):
        return f"download failed: {message or 'request ignored'}"
    return f"download failed: {message or type(exc).__name__}"
