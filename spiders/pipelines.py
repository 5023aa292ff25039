"""Item pipelines: image download into content-addressed storage, and the items file.

`ContentAddressedImages` is Scrapy's FilesPipeline with the storage decided by the
bytes: the file is `images/<sha[:2]>/<sha256>.<ext>` with the extension sniffed from the
content, the original bytes kept as they came. Every image ends with a result, never a
silently dropped item: either stored (`downloaded`, or `unchanged` after a 304 answer to
a conditional request) or a reason (`download failed: 404`, `timeout`, `not an image`,
`image too large`, `blocked by robots.txt`).

`JsonLinesWriter` appends each item to a JSON Lines file as soon as it is complete, so
an interrupted crawl or fetch keeps what it already did.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from scrapy import Request
from scrapy.http import Response
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.files import FilesPipeline
from scrapy.pipelines.media import FileException

from spiders.failures import TOO_LARGE, describe
from spiders.sniff import image_type
from tasks.core.paths import DatasetPaths


class JsonLinesWriter:
    """Append every item to FACESET_ITEMS_FILE, one JSON object per line, flushed at once."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.handle = None

    @classmethod
    def from_crawler(cls, crawler) -> "JsonLinesWriter":
        return cls(crawler.settings.get("FACESET_ITEMS_FILE"))

    def open_spider(self, spider=None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("a", encoding="utf-8")

    def close_spider(self, spider=None) -> None:
        if self.handle is not None:
            self.handle.close()

    def process_item(self, item: dict[str, Any], spider=None) -> dict[str, Any]:
        self.handle.write(json.dumps(dict(item), ensure_ascii=False) + "\n")
        self.handle.flush()
        return item


def store_bytes(paths: DatasetPaths, data: bytes, ext: str) -> tuple[str, Path]:
    """Write `data` at its content address (atomically, once) and return (sha256, path)."""
    digest = hashlib.sha256(data).hexdigest()
    target = paths.image_file(digest, ext)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".dl.", dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    return digest, target


class ContentAddressedImages(FilesPipeline):
    """FilesPipeline storing each image at its sha256, type sniffed from the bytes."""

    def __init__(self, store_uri, download_func=None, *, crawler) -> None:
        super().__init__(store_uri, crawler=crawler)
        self.paths = DatasetPaths(Path(store_uri))
        self.max_bytes = crawler.settings.getint("DOWNLOAD_MAXSIZE")

    def get_media_requests(self, item: dict[str, Any], info) -> list[Request]:
        headers = {}
        if item.get("etag"):
            headers["If-None-Match"] = item["etag"]
        if item.get("last_modified"):
            headers["If-Modified-Since"] = item["last_modified"]
        return [Request(item["image_url"], headers=headers, callback=NO_CALLBACK)]

    def media_to_download(self, request, info, *, item=None):
        return None  # the fetch task already chose what to download

    async def media_downloaded(self, response: Response, request: Request, info, *, item=None) -> dict[str, Any]:
        headers = {
            "etag": (response.headers.get(b"ETag") or b"").decode("latin-1"),
            "last_modified": (response.headers.get(b"Last-Modified") or b"").decode("latin-1"),
        }
        if response.status == 304 and item and item.get("sha256"):
            self.inc_stats("unchanged")
            return {"url": request.url, "path": item["image_path"], "checksum": item["sha256"], "status": "unchanged", **headers}
        if response.status != 200:
            raise FileException(f"download failed: {response.status}")
        body = response.body
        if len(body) > self.max_bytes:
            raise FileException(TOO_LARGE)
        ext = image_type(body)
        if ext is None:
            raise FileException("not an image" if body else "download failed: empty response")
        digest, target = store_bytes(self.paths, body, ext)
        self.inc_stats("downloaded")
        return {
            "url": request.url,
            "path": target.relative_to(self.paths.root).as_posix(),
            "checksum": digest,
            "status": "downloaded",
            "final_url": response.url,
            "bytes": len(body),
            **headers,
        }

    def media_failed(self, failure, request, info):
        if isinstance(failure.value, FileException) and str(failure.value):
            raise failure.value
        raise FileException(describe(failure.value))

    def item_completed(self, results, item, info) -> dict[str, Any]:
        ok, result = results[0] if results else (False, None)
        if ok:
            item["result"] = dict(result)
        else:
            reason = str(result.value) if result is not None and str(result.value) else "download failed"
            item["result"] = {"status": "failed", "reason": reason}
        return item
