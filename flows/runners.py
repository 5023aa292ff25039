"""Where per-image batches run: in this process, in a local process pool, or as Prefect tasks on Dask.

Stages only see a *mapper* (`tasks/core/parallel.py`). The flow builds mappers from the
executors here, which hand back each batch's result as soon as it finishes (not in one
block at the end), so the row cache can save finished work while the rest still runs:
that is what makes a build killed halfway through `faces` resume at the half.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from tasks.core import parallel


class Executor(Protocol):
    """Runs `fn` over `items`, yielding (position, result) in the order they finish."""

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """In this process, one batch after another (tests, tiny builds, rate-limited paid APIs)."""

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for position, item in enumerate(items):
            yield position, fn(item)

    def close(self) -> None:
        return None


class ProcessExecutor:
    """A process pool kept open for a whole stage (`tasks.core.parallel.worker_pool`: one compute
    thread per worker, spawned whenever forking is unsafe, ending with the build)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or parallel.default_workers()
        self.pool: ProcessPoolExecutor | None = None

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        if self.workers <= 1 or len(items) <= 1:
            yield from SerialExecutor().imap_unordered(fn, items)
            return
        if self.pool is None:
            self.pool = parallel.worker_pool(self.workers)
        pending = {self.pool.submit(fn, item): position for position, item in enumerate(items)}
        while pending:
            done, _ = wait_futures(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


def _run_batch(fn: Callable[[Any], Any], batch: Any, label: str) -> Any:
    """One batch of a per-image stage as a Prefect task on the flow's task runner (Dask)."""
    return fn(batch)


# Decorated under another name, so that pickling (to Dask workers) finds `_run_batch` by reference.
run_batch = task(cache_policy=NO_CACHE, persist_result=False, task_run_name="{label}")(_run_batch)


class PrefectExecutor:
    """Each batch a Prefect task run (`<dataset>/<stage>/batch-N`), on the flow's task runner."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.submitted = 0

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        futures = {}
        for position, item in enumerate(items):
            future = run_batch.submit(fn, item, label=f"{self.label}/batch-{self.submitted}")
            self.submitted += 1
            futures[future] = position
        for future in as_completed(list(futures)):
            yield futures[future], future.result()

    def close(self) -> None:
        return None


def mapper_of(executor: Executor) -> parallel.Mapper:
    """A plain mapper (results in input order) over an executor."""

    def mapper(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        results: dict[int, Any] = dict(executor.imap_unordered(fn, items))
        return [results[position] for position in range(len(items))]

    return mapper


def task_runner(runner: str, dask_address: str | None):
    """The flow's task runner: Prefect's thread pool, or Dask (a local cluster or a given scheduler)."""
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": parallel.default_workers(), "threads_per_worker": 1,
                                              "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner()
