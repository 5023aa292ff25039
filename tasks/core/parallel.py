"""Batching per-image work: split the manifest into batches and map a function over them.

Per-image stages never make one Prefect task per image (about 7 ms of overhead each).
They cut the rows into batches and hand them to a *mapper*. A mapper is any callable
`mapper(fn, batches) -> results` (results in the order of `batches`):

- `serial_mapper`: in this process (tests, tiny builds);
- `process_mapper(workers)`: a process pool, the default on one machine;
- the flow may inject its own, e.g. one that submits each batch as a Prefect task to a
  Dask cluster (`flows/build.py`), so stages never import Prefect.

`fn` must be picklable: a module-level function, or `functools.partial` of one.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import pandas as pd

T = TypeVar("T")
R = TypeVar("R")
Mapper = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]


def batches(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    """Consecutive slices of at most `size` rows (an empty frame gives no batches)."""
    size = max(1, int(size))
    return [frame.iloc[start : start + size] for start in range(0, len(frame), size)]


def serial_mapper(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """Run every batch here, one after another."""
    return [fn(item) for item in items]


def default_workers() -> int:
    """Worker processes: FACESET_WORKERS if set, else one per core."""
    return max(1, int(os.environ.get("FACESET_WORKERS", "0")) or os.cpu_count() or 1)


def process_mapper(workers: int | None = None) -> Mapper:
    """A mapper over a process pool. With one worker or one batch it runs in-process.

    Workers are started with 'spawn' so that OpenCV, ONNX Runtime and torch threads in
    the parent never deadlock a forked child.
    """
    count = workers or default_workers()

    def mapper(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if count <= 1 or len(items) <= 1:
            return serial_mapper(fn, items)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(count, len(items)), mp_context=context) as pool:
            return list(pool.map(fn, items))

    return mapper


def map_frame(fn: Callable[[pd.DataFrame], pd.DataFrame], frame: pd.DataFrame, batch_size: int,
              mapper: Mapper | None = None) -> pd.DataFrame:
    """Apply `fn` to `frame` in batches and concatenate the results, keeping the index."""
    parts = batches(frame, batch_size)
    if not parts:
        return frame.copy()
    results = (mapper or process_mapper())(fn, parts)
    return pd.concat(results)
