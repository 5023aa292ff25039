"""`--runner dask`: per-image batches as Prefect tasks on a local Dask cluster, same manifest as default."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pandas as pd
import pytest
from fakes import flow_stages as fakes

from tasks.core import manifest as mf

FAKES = "fakes.flow_stages:stages"


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("item_id").reset_index(drop=True).astype("string")


@pytest.mark.slow
def test_dask_runner_gives_the_same_manifest(tmp_path: Path, monkeypatch, prefect_server):
    from distributed import LocalCluster

    from flows.build import build

    monkeypatch.setenv("FACESET_TEST_SITE", str(tmp_path / "site.json"))
    monkeypatch.setenv("FACESET_WORKERS", "1")
    fakes.write_site(tmp_path / "site.json", 24)
    recipe = fakes.write_recipe(tmp_path, "daskset")

    monkeypatch.setenv("FACESET_TEST_LOG", str(tmp_path / "default.log"))
    default = build(recipe, data_root=tmp_path / "default", stages=FAKES)

    # an existing cluster with worker processes, reached by its address (as on a real cluster)
    monkeypatch.setenv("FACESET_TEST_LOG", str(tmp_path / "dask.log"))  # before the workers start
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_dask = build(recipe, data_root=tmp_path / "dask", stages=FAKES, runner="dask",
                        dask_address=cluster.scheduler_address)

    pd.testing.assert_frame_equal(_comparable(mf.read(default / "manifest.parquet")),
                                  _comparable(mf.read(on_dask / "manifest.parquet")))
    calls = collections.Counter(line.split(" ")[0] for line in (tmp_path / "dask.log").read_text().split("\n") if line)
    assert calls["faces-row"] == 24 and calls["crosscheck-row"] == 21

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    async def batch_runs():
        async with get_client() as client:
            runs = await client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="daskset/faces/batch-")))
            return [r for r in runs if r.state and r.state.is_completed()]

    # faces: 24 kept rows in batches of 4 -> 6 batches ran as Prefect task runs on Dask
    assert len(asyncio.run(batch_runs())) == 6
