"""Dedupe: one copy of each photo (encode, then group), and faces of one person grouped (identity).

Only the stage's contract is exposed here; its code is in the modules beside this file.
"""

from tasks.dedupe.stage import run, process_batch, summarize

__all__ = ["run", "process_batch", "summarize"]
