"""The split's saved assignment is state: damaged, it is ignored with a warning and the split goes on."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from builders import split_recipe, synthetic_people

from tasks.core.paths import DatasetPaths
from tasks.split import stage as split


@pytest.mark.parametrize("damaged", ["assignment.parquet", "settings.json"])
def test_a_truncated_saved_assignment_counts_as_none(tmp_path, caplog: pytest.LogCaptureFixture, damaged: str) -> None:
    paths = DatasetPaths.create(tmp_path / "ds")
    recipe = split_recipe()
    frame = synthetic_people(seed=3, people=200)
    fresh = split.run(frame, recipe, paths)["split"]
    state = paths.state_folder("split") / damaged
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])

    with caplog.at_level(logging.WARNING):
        again = split.run(frame, recipe, paths)
    assert any(str(state) in r.getMessage() for r in caplog.records)
    pd.testing.assert_series_equal(again["split"], fresh)  # drawn afresh: the same seed gives the same split
    assert split.previous_assignment(paths, recipe) is not None  # and saved whole again
    assert paths.report_json("split").is_file()

