"""Crawl: run the recipe's spider in its own process and turn what it found into manifest rows.

Only the stage's contract is exposed here; its code is in the modules beside this file.
"""

from tasks.crawl.stage import run

__all__ = ["run"]
