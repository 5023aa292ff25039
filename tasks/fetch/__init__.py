"""Fetch: download the images of kept rows into content-addressed storage, with a reason for each failure.

Only the stage's contract is exposed here; its code is in the modules beside this file.
"""

from tasks.fetch.stage import run

__all__ = ["run"]
