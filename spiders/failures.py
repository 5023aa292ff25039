"""Why a request failed, in the words the manifest's `reason` column uses.

Scrapy reports failures as exception types and log messages; a researcher reading the
manifest needs `download failed: 404`, `timeout`, `image too large` or `blocked by
robots.txt`. One function translates, for pages (crawl report) and images (manifest).
"""

from __future__ import annotations

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    IgnoreRequest,
)
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet import error as twisted_error

ROBOTS = "blocked by robots.txt"
TOO_LARGE = "image too large"
TIMEOUT = "timeout"


def describe(exc: BaseException) -> str:
    """A short reason for a failed request."""
    message = str(exc)
    if isinstance(exc, HttpError):
        return f"download failed: {exc.response.status}"
    if "robots.txt" in message:
        return ROBOTS
    if "max size" in message or "DOWNLOAD_MAXSIZE" in message:
        return TOO_LARGE
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
