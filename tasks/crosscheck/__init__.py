"""Cross-check: an autotagger's opinion on every kept face, set against the crawled labels.

Only the stage's contract is exposed here; its code is in the modules beside this file.
"""

from tasks.crosscheck.stage import run, process_batch, summarize

__all__ = ["run", "process_batch", "summarize"]
