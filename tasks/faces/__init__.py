"""Faces: decode safely, find the face, verify it, crop it, or set the image aside.

Only the stage's contract is exposed here; its code is in the modules beside this file.
"""

from tasks.faces.stage import run, process_batch, summarize

__all__ = ["run", "process_batch", "summarize"]
