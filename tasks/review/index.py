"""The manifest held in memory for the review app, re-read when a build replaces it.

A page of 50 faces out of 50,000 must not cost a Parquet read, so the manifest is read
once and each queue's order is computed once per manifest version (`ordered`). Every
request first compares the file's identity (inode, size, modification time) with the
one read: the build writes the manifest atomically (a new file renamed into place), so
a changed identity means a whole new manifest, read then. The file is opened once and
its identity taken from that open handle, so a rename racing the read cannot pair old
figures with new content. A manifest that cannot be read (damaged, or absent for a
moment) leaves the last good one in use, with a warning: a build finishing while the
review is open never breaks the page.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.atomic import DAMAGED
from tasks.core.decisions import manifest_fields
from tasks.core.errors import FacesetError

log = logging.getLogger(__name__)

Signature = tuple[int, int, int]  # inode, size, mtime in ns


def _fields(frame: pd.DataFrame) -> list[str]:
    """The recipe's label fields, in manifest order."""
    fields = manifest_fields(frame)
    return [c for c in frame.columns if c in fields]


@dataclass
class Snapshot:
    """One version of the manifest: its rows, fields and the queue orders computed on it."""

    frame: pd.DataFrame
    signature: Signature
    version: int
    fields: list[str]
    positions: dict[str, int]  # item_id -> row position
    orders: dict[Hashable, object] = field(default_factory=dict)


class ManifestIndex:
    """The manifest at `path`, kept current; thread-safe (the server answers requests in threads)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self.reloads = 0
        self.current()
        if self._snapshot is None:
            raise FacesetError(f"there is no readable manifest at {self.path}",
                               "build the dataset first (faceset build RECIPE), then review its folder")

    def _stat(self) -> Signature | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _read(self) -> tuple[pd.DataFrame, Signature] | None:
        try:
            with open(self.path, "rb") as handle:
                st = os.fstat(handle.fileno())
                frame = pd.read_parquet(handle).reset_index(drop=True)
        except DAMAGED as exc:
            log.warning("cannot read the manifest %s (%s: %s); the review keeps the version it has",
                        self.path, type(exc).__name__, exc)
            return None
        return frame, (st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self) -> Snapshot:
        """The newest readable manifest (read again only when the file changed)."""
        with self._lock:
            signature = self._stat()
            if self._snapshot is None or (signature is not None and signature != self._snapshot.signature):
                read = self._read()
                if read is not None:
                    frame, signature = read
                    ids = frame["item_id"].astype("string").to_numpy(dtype=object)
                    version = self._snapshot.version + 1 if self._snapshot else 1
                    self._snapshot = Snapshot(frame, signature, version, _fields(frame),
                                              dict(zip(ids, range(len(ids)))))
                    self.reloads += 1
            return self._snapshot  # type: ignore[return-value]

    def ordered(self, snapshot: Snapshot, key: Hashable, compute: Callable[[pd.DataFrame], object]) -> object:
        """`compute(frame)` for `key`, once per manifest version (a queue's row order, its groups)."""
        with self._lock:
            if key not in snapshot.orders:
                snapshot.orders[key] = compute(snapshot.frame)
            return snapshot.orders[key]


def take(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """The rows at positions `rows`, in that order."""
    return frame.iloc[np.asarray(rows, dtype=np.int64)]
