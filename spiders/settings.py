"""Scrapy settings from a recipe's `crawl:` section: politeness and bounds by default.

Every crawl obeys robots.txt, identifies itself as faceset with the recipe's contact,
keeps `delay` and `concurrency` per domain, adapts with AutoThrottle, backs off on
429/503 (Retry-After honoured), follows a bounded number of redirects, gives every
request a deadline and caps response size (pages at `max_page_bytes`, images at
`max_image_bytes`, counted after decompression, which Scrapy's
HttpCompressionMiddleware enforces against DOWNLOAD_MAXSIZE). Every request passes the
URL policy first (spiders/guard.py), Scrapy's handlers for other schemes than http and
https are switched off, and downloads stop at `max_total_bytes` (spiders/limits.py).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from scrapy.settings import BaseSettings

from tasks.core.recipe import CrawlSettings, Recipe

# Statuses that are retried with backoff and therefore never cached for resume.
RETRY_HTTP_CODES = [408, 429, 500, 502, 503, 504, 522, 524]
CACHE_POLICIES = {
    "replay": "scrapy.extensions.httpcache.DummyPolicy",
    "revalidate": "scrapy.extensions.httpcache.RFC2616Policy",
}


def faceset_version() -> str:
    try:
        return metadata.version("faceset")
    except metadata.PackageNotFoundError:
        return "0"


def user_agent(recipe: Recipe) -> str:
    """faceset's User-Agent: names the tool and who to contact (or the recipe's override)."""
    if recipe.crawl.user_agent:
        return recipe.crawl.user_agent
    return f"faceset/{faceset_version()} (research dataset crawler; contact: {recipe.contact})"


def settings_recipe(settings: BaseSettings) -> Recipe:
    """The recipe a crawl or fetch process runs (its settings carry it for the middlewares)."""
    return Recipe.model_validate(settings.get("FACESET_RECIPE"))


def polite_settings(recipe: Recipe, log_file: str, max_bytes: int) -> dict[str, Any]:
    """Settings shared by page crawls and image downloads; `max_bytes` caps one response."""
    crawl: CrawlSettings = recipe.crawl
    return {
        "FACESET_RECIPE": recipe.model_dump(mode="json"),
        "USER_AGENT": user_agent(recipe),
        "ROBOTSTXT_OBEY": crawl.obey_robots,
        "ROBOTSTXT_USER_AGENT": "faceset",
        "DOWNLOAD_DELAY": crawl.delay,
        "CONCURRENT_REQUESTS_PER_DOMAIN": crawl.concurrency,
        "CONCURRENT_REQUESTS": max(16, crawl.concurrency * 4),
        "AUTOTHROTTLE_ENABLED": crawl.autothrottle,
        "AUTOTHROTTLE_START_DELAY": crawl.delay,
        "AUTOTHROTTLE_MAX_DELAY": max(60.0, crawl.delay * 10),
        "AUTOTHROTTLE_TARGET_CONCURRENCY": float(crawl.concurrency),
        "DOWNLOAD_TIMEOUT": crawl.timeout,
        "DOWNLOAD_MAXSIZE": max_bytes,
        "DOWNLOAD_WARNSIZE": min(max_bytes, 32 * 1024 * 1024),
        "DOWNLOAD_HANDLERS": {"http": "spiders.limits.BudgetedDownloadHandler",
                              "https": "spiders.limits.BudgetedDownloadHandler",
                              "file": None, "data": None, "ftp": None, "s3": None},
        "FACESET_MAX_TOTAL_BYTES": crawl.max_total_bytes,
        "EXTENSIONS": {"spiders.limits.ByteLimits": 0},
        "RETRY_ENABLED": crawl.retries > 0,
        "RETRY_TIMES": crawl.retries,
        "RETRY_HTTP_CODES": RETRY_HTTP_CODES,
        "FACESET_BACKOFF": crawl.backoff,
        "FACESET_MAX_RETRY_AFTER": crawl.max_retry_after,
        "REDIRECT_ENABLED": crawl.max_redirects > 0,
        "REDIRECT_MAX_TIMES": crawl.max_redirects,
        "DOWNLOADER": "spiders.politeness.PoliteDownloader",
        # Scrapy starts CONCURRENT_ITEMS tasks per response (100 by default); a page yields
        # a few links or items, and those idle tasks were a third of the crawl's CPU time.
        "CONCURRENT_ITEMS": 16,
        "REMOTE_CONTROL_ENABLED": False,  # no listening port on the crawling machine
        "DEPTH_LIMIT": 0,  # the spider bounds depth per source itself (pagination is not depth)
        "DOWNLOADER_MIDDLEWARES": {
            "spiders.guard.UrlGuard": 50,
            "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
            "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
            "spiders.politeness.RobotsTxtForAll": 100,
            "spiders.politeness.BackoffRetryMiddleware": 550,
        },
        "TELNETCONSOLE_ENABLED": False,
        "LOG_FILE": log_file,
        "LOG_LEVEL": "INFO",
        "LOG_FILE_APPEND": True,
    }


def crawl_settings(recipe: Recipe, job: dict[str, Any]) -> dict[str, Any]:
    """Page crawl: JOBDIR for Ctrl-C resume; an HTTP cache that replays this crawl's pages
    after any other stop ("replay") or revalidates earlier builds' pages ("revalidate")."""
    settings = polite_settings(recipe, job["log_file"], recipe.crawl.max_page_bytes)
    if any(s.render or any(f.render for f in s.follow) for s in recipe.sources):
        settings["DOWNLOADER_MIDDLEWARES"]["spiders.rendering.SeleniumRenderMiddleware"] = 950
        settings["FACESET_RENDER_WORKERS"] = recipe.crawl.render_workers
    settings.update(
        {
            "JOBDIR": job["jobdir"],
            "HTTPCACHE_ENABLED": True,
            "HTTPCACHE_DIR": job["cache_dir"],
            "HTTPCACHE_STORAGE": "scrapy.extensions.httpcache.DbmCacheStorage",  # one file, not six per page
            "HTTPCACHE_EXPIRATION_SECS": job["cache_expiration_secs"],
            "HTTPCACHE_POLICY": CACHE_POLICIES[job["cache_policy"]],
            "HTTPCACHE_ALWAYS_STORE": True,  # pages without validators too: a killed crawl replays them
            "HTTPCACHE_IGNORE_HTTP_CODES": RETRY_HTTP_CODES,
            "ITEM_PIPELINES": {"spiders.pipelines.JsonLinesWriter": 900},
            "FACESET_ITEMS_FILE": job["items_file"],
        }
    )
    return settings


def fetch_settings(recipe: Recipe, job: dict[str, Any]) -> dict[str, Any]:
    """Image download through the media pipeline into the dataset's content-addressed store."""
    settings = polite_settings(recipe, job["log_file"], recipe.crawl.max_image_bytes)
    settings.update(
        {
            "ITEM_PIPELINES": {
                "spiders.pipelines.ContentAddressedImages": 1,
                "spiders.pipelines.JsonLinesWriter": 900,
            },
            "FILES_STORE": job["root"],
            "MEDIA_ALLOW_REDIRECTS": True,
            "FACESET_ITEMS_FILE": job["items_file"],
        }
    )
    return settings
