"""The per-image skeleton every per-image stage runs on (tasks/core/parallel.py)."""

from __future__ import annotations

import os
import sys
import threading
import types

import pandas as pd
import pytest
from builders import run_script

from tasks.core import parallel
from tasks.core.parallel import Batching, PerImageRun, run_per_image, serial_mapper


def frame() -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"i{n}" for n in range(7)],
                         "status": ["kept", "failed", "kept", "kept", "kept", "failed", "kept"],
                         "value": pd.Series([None] * 7, dtype="string")},
                        index=[10, 3, 7, 1, 9, 0, 4])


def mark(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.copy()
    out["value"] = "seen " + out["item_id"]
    out["status"] = "changed"  # not in `columns`: must not reach the manifest
    return out


def kept(rows: pd.DataFrame) -> pd.Series:
    return rows["status"] == "kept"


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, fn, items):
        self.batches.extend(list(batch["item_id"]) for batch in items)
        return serial_mapper(fn, items)


def test_selected_rows_are_mapped_in_batches_and_merged_back_in_order() -> None:
    mapper, reports = Recorder(), []
    out = run_per_image(frame(), kept, mark, lambda done, figures: reports.append((done, figures)),
                        columns=["value"], batching=Batching(2, 2), mapper=mapper)
    assert mapper.batches == [["i0", "i2"], ["i3", "i4"], ["i6"]]
    assert list(out.index) == [10, 3, 7, 1, 9, 0, 4] and list(out["item_id"]) == list(frame()["item_id"])
    assert out["value"].tolist() == ["seen i0", pd.NA, "seen i2", "seen i3", "seen i4", pd.NA, "seen i6"]
    assert out["status"].tolist() == frame()["status"].tolist()
    (reported, figures), = reports
    assert reported is out and isinstance(figures, PerImageRun) and figures.processed == 5


def test_rows_picked_here_skip_the_mapper_and_decide_sees_the_merged_table() -> None:
    mapper = Recorder()

    def decide(table: pd.DataFrame) -> pd.DataFrame:
        assert table["value"].notna().sum() == 5
        return table.assign(decided=True)

    out = run_per_image(frame(), kept, mark, lambda *_: None, columns=["value"], batching=Batching(8, 8),
                        mapper=mapper, here=lambda rows: rows["item_id"].isin(["i2", "i6"]), decide=decide)
    assert mapper.batches == [["i0", "i3", "i4"]]
    assert out["value"].notna().sum() == 5 and out["decided"].all()


def test_a_repeated_index_is_renumbered_and_nothing_selected_maps_nothing() -> None:
    repeated = frame().set_axis([0, 0, 1, 1, 2, 2, 3])
    out = run_per_image(repeated, kept, mark, lambda *_: None, columns=["value"], batching=Batching(1, 1),
                        mapper=serial_mapper)
    assert list(out.index) == list(range(7)) and out["value"].notna().sum() == 5
    mapper = Recorder()
    untouched = run_per_image(frame(), lambda rows: rows["status"] == "none", mark, lambda *_: None,
                              columns=["value"], batching=Batching(1, 1), mapper=mapper)
    assert mapper.batches == [] and untouched.equals(frame())


def test_select_may_mark_the_rows_it_leaves_out() -> None:
    def select(table: pd.DataFrame) -> pd.Series:
        chosen = kept(table)
        table.loc[table["item_id"] == "i6", "value"] = "over budget"
        chosen[table["item_id"] == "i6"] = False
        return chosen

    out = run_per_image(frame(), select, mark, lambda *_: None, columns=["value"], batching=Batching(4, 4),
                        mapper=serial_mapper).set_index("item_id")
    assert out.loc["i6", "value"] == "over budget" and out.loc["i4", "value"] == "seen i4"


@pytest.mark.parametrize(("rows", "workers", "expected"), [(2000, 4, 64), (1000, 4, 63), (40, 4, 3), (0, 4, 1), (10, 1, 3)])
def test_batch_size_aims_at_a_few_batches_per_worker(rows, workers, expected, monkeypatch) -> None:
    monkeypatch.setenv("FACESET_WORKERS", str(workers))
    assert Batching(least=1, most=64, per_worker=4).size(rows) == expected


# ---------------------------------------------------------------- worker processes


def threads_in_worker(_: int) -> tuple[int, str | None]:
    import cv2

    return cv2.getNumThreads(), os.environ.get("OMP_NUM_THREADS")


def test_pool_workers_get_one_compute_thread_each() -> None:
    assert parallel.process_mapper(2)(threads_in_worker, [0, 1]) == [(1, "1"), (1, "1")]


def test_workers_are_forked_only_from_a_process_without_threads_or_thread_pools(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    release = threading.Event()
    helper = threading.Thread(target=release.wait)
    helper.start()
    try:
        assert not parallel.can_fork()  # a thread may hold a lock the child would inherit locked
    finally:
        release.set()
        helper.join()
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    assert not parallel.can_fork()


def test_a_plain_script_forks_its_workers_and_they_start_at_once() -> None:
    """What the benchmark measures: forked workers start in milliseconds, with the script's modules."""
    script = (
        "import time, cv2\n"
        "cv2.setNumThreads(1)\n"
        "from tasks.core import parallel\n"
        "assert parallel.can_fork()\n"
        "started = time.perf_counter()\n"
        "print(parallel.process_mapper(2)(abs, [-1, -2]), round(time.perf_counter() - started, 3))\n"
    )
    out = run_script(script)
    assert out.returncode == 0, out.stderr
    result, seconds = out.stdout.rsplit(" ", 1)
    assert result == "[1, 2]" and float(seconds) < 1.0  # a spawned pair re-imports for over a second
