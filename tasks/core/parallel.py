"""Batching per-image work: split the manifest into batches and map a function over them.

Per-image stages never make one Prefect task per image (tens of milliseconds of
overhead each; measured: docs/benchmarks.md, 'orchestration').
They cut the rows into batches and hand them to a *mapper*. A mapper is any callable
`mapper(fn, batches) -> results` (results in the order of `batches`):

- `serial_mapper`: in this process (tests, tiny builds);
- `process_mapper(workers)`: a process pool, the default on one machine;
- the flow may inject its own, e.g. one that submits each batch as a Prefect task to a
  Dask cluster (`flows/build.py`), so stages never import Prefect.

`fn` must be picklable: a module-level function, or `functools.partial` of one.

`run_per_image` is the one skeleton of the per-image stages (faces, dedupe, crosscheck):
select rows, cut them into batches, map, merge back, decide over the whole table, report.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd

T = TypeVar("T")
R = TypeVar("R")
Mapper = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]
BatchFn = Callable[[pd.DataFrame], pd.DataFrame]


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


@dataclass(frozen=True)
class Batching:
    """How a stage cuts its rows: about `per_worker` batches for each worker, of `least` to `most` rows.

    Small batches spread the work over the workers; large ones pay a model's loading or
    a process start less often. `Batching(n, n)` is a fixed size.
    """

    least: int
    most: int
    per_worker: int = 1

    def size(self, rows: int) -> int:
        return max(self.least, min(self.most, math.ceil(rows / (self.per_worker * default_workers()))))


@dataclass(frozen=True)
class PerImageRun:
    """What `run_per_image` did, for the stage's report."""

    processed: int  # rows selected and run through the batch function
    map_seconds: float  # selecting, mapping and merging
    decide_seconds: float  # the whole-table step after the map


def _identity(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def run_per_image(manifest: pd.DataFrame, select: Callable[[pd.DataFrame], pd.Series], batch_fn: BatchFn,
                  summarize_fn: Callable[[pd.DataFrame, PerImageRun], object], *, columns: Sequence[str],
                  batching: Batching, mapper: Mapper | None = None,
                  typed: Callable[[pd.DataFrame], pd.DataFrame] = _identity,
                  here: Callable[[pd.DataFrame], np.ndarray | pd.Series] | None = None,
                  decide: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
    """A per-image stage's `run`: every row kept, in its order, with `columns` of the selected rows new.

    1. `typed` gives a copy of the manifest the stage's dtypes (an index that is not
       unique is renumbered, so that merging back is exact);
    2. `select(frame)` is the mask of rows to process; it may also mark rows that it
       leaves out (a budget reached);
    3. the rows `here` picks among them (cheap ones, e.g. cached on disk) go through
       `batch_fn` in this process; the others in batches of `batching` through `mapper`
       (the flow's skips rows it did before). `batch_fn` must pickle;
    4. their `columns` are written back, then `decide` (clusters, flags) sees the whole
       table, and `summarize_fn` reports on it.
    """
    out = typed(manifest.copy() if manifest.index.is_unique else manifest.reset_index(drop=True))
    started = time.perf_counter()
    todo = out[select(out)]
    if len(todo):
        local = np.asarray(here(todo), dtype=bool) if here is not None else np.zeros(len(todo), dtype=bool)
        parts = [batch_fn(todo[local])] if local.any() else []
        if not local.all():
            rest = todo[~local]
            parts.append(map_frame(batch_fn, rest, batching.size(len(rest)), mapper))
        for done in parts:
            for column in columns:
                out.loc[done.index, column] = done[column]
        out = typed(out)
    mapped = time.perf_counter()
    if decide is not None:
        out = decide(out)
    figures = PerImageRun(len(todo), mapped - started, time.perf_counter() - mapped)
    summarize_fn(out, figures)
    return out
