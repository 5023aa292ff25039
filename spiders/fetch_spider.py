"""A spider with no pages: it hands the rows to download to the image pipeline.

The fetch task writes the rows (item id, image URL, validators of an earlier download)
to a JSON Lines file; each becomes one item, so downloads go through Scrapy's media
pipeline with all of its politeness (robots.txt, delay, concurrency, retries).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import scrapy


class FetchSpider(scrapy.Spider):
    name = "faceset-fetch"

    def __init__(self, rows_file: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows_file = Path(rows_file)

    async def start(self) -> AsyncIterator[dict[str, Any]]:
        with self.rows_file.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)
