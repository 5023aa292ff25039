"""Politeness that Scrapy 2.19 does not give as is: retries that back off, a per-domain
concurrency limit that holds when the delay is 0, and robots.txt obeyed by every request
that arrives while robots.txt is still being fetched.

A server answering 429 or 503 is asking us to slow down.

Scrapy's RetryMiddleware re-sends at once; this subclass waits first, `backoff`
seconds doubled on each retry, or what the server's `Retry-After` asks (seconds or
an HTTP date), capped by `FACESET_MAX_RETRY_AFTER` so one header cannot stall a build.
The wait is an asyncio sleep on the reactor's loop, so other requests go on meanwhile.
"""

from __future__ import annotations

import asyncio
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone

from time import monotonic

from scrapy import Request
from scrapy.core.downloader import Downloader, Slot
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.http import Response
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import _schedule_coro, maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.defer import Deferred
from scrapy.utils.response import response_status_message


def retry_after_seconds(header: bytes | str | None, now: datetime | None = None) -> float | None:
    """Seconds asked by a Retry-After header ("120" or an HTTP date), None if absent or unreadable."""
    if not header:
        return None
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class BackoffRetryMiddleware(RetryMiddleware):
    """RetryMiddleware with exponential backoff and Retry-After honoured."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.backoff = settings.getfloat("FACESET_BACKOFF", 1.0)
        self.max_retry_after = settings.getfloat("FACESET_MAX_RETRY_AFTER", 120.0)

    def delay_for(self, request: Request, response: Response | None) -> float:
        """How long to wait before retrying `request` (the number of tries so far is in its meta)."""
        tries = request.meta.get("retry_times", 0)
        delay = self.backoff * (2**tries)
        if response is not None:
            asked = retry_after_seconds(response.headers.get(b"Retry-After"))
            if asked is not None:
                delay = max(delay, asked)
        return min(delay, self.max_retry_after)

    async def _wait_then_retry(self, request: Request, reason, response: Response | None):
        retry = self._retry(request, reason)
        if retry is None:
            return None
        delay = self.delay_for(request, response)
        if delay > 0:
            self.crawler.stats.inc_value("faceset/retry_wait_seconds", delay)
            await asyncio.sleep(delay)
        return retry

    async def process_response(self, request: Request, response: Response, spider=None):
        if request.meta.get("dont_retry", False) or response.status not in self.retry_http_codes:
            return response
        retry = await self._wait_then_retry(request, response_status_message(response.status), response)
        return retry or response

    async def process_exception(self, request: Request, exception: Exception, spider=None):
        if not isinstance(exception, self.exceptions_to_retry) or request.meta.get("dont_retry", False):
            return None
        return await self._wait_then_retry(request, exception, None)


class PoliteDownloader(Downloader):
    """Scrapy's Downloader with CONCURRENT_REQUESTS_PER_DOMAIN enforced when DOWNLOAD_DELAY is 0.

    In Scrapy 2.19 a download marks its slot busy only when its coroutine starts running,
    after `_process_queue`'s loop has already checked for free slots, so with no delay
    every queued request of a domain started at once (seen against the fixture site:
    11 parallel requests with concurrency 1). Marking the request as transferring before
    scheduling it keeps the limit; `_download` adds it to the same set again and removes it
    when done, so nothing else changes.
    """

    def _process_queue(self, slot: Slot) -> None:
        if slot.latercall:
            return
        now = monotonic()
        delay = slot.download_delay()
        if delay:
            penalty = delay - now + slot.lastseen
            if penalty > 0:
                slot.latercall = call_later(penalty, self._latercall, slot)
                return
        while slot.queue and slot.free_transfer_slots() > 0:
            slot.lastseen = now
            request, queue_dfd = slot.queue.popleft()
            slot.transferring.add(request)
            _schedule_coro(self._wait_for_download(slot, request, queue_dfd))
            if delay:
                self._process_queue(slot)
                break


class RobotsTxtForAll(RobotsTxtMiddleware):
    """RobotsTxtMiddleware that gives the parsed robots.txt to every request waiting for it.

    Scrapy 2.19 makes every request that arrives while robots.txt downloads await the same
    Deferred; the first awaiter's callback returns None, so the others got no parser and
    were let through. A burst of image downloads requested a disallowed folder that way
    (tests/fetch/test_fetch.py). Each waiter here gets its own Deferred, fed by a callback that
    passes the parser on down the chain.
    """

    async def robot_parser(self, request: Request):
        pending = self._parsers.get(urlparse_cached(request).netloc)
        if isinstance(pending, Deferred):
            waiter: Deferred = Deferred()

            def hand_over(parser):
                waiter.callback(parser)
                return parser

            pending.addCallback(hand_over)
            return await maybe_deferred_to_future(waiter)
        return await super().robot_parser(request)
