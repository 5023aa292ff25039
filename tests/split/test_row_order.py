"""The split depends on the rows, never on their order (issue 18, defect 11): a crawl
receives pages in a different order each time, and a rebuild must give the same sets."""

from __future__ import annotations

import pandas as pd
import pytest
from builders import split_recipe, synthetic_people

from tasks.core.paths import DatasetPaths
from tasks.split import run


@pytest.mark.parametrize("shuffle", [1, 2, 3])
def test_shuffled_rows_get_the_same_splits_and_variants(shuffle, tmp_path):
    manifest = synthetic_people(4, people=300)
    recipe = split_recipe(stratify=["label", "gender"], variants=[
        {"kind": "balanced"}, {"kind": "biased", "attribute": "gender", "strength": 0.8}])
    columns = ["split", "split_balanced", "split_biased"]
    reference = run(manifest, recipe, DatasetPaths.create(tmp_path / "in-order")).set_index("item_id")[columns]
    shuffled = manifest.sample(frac=1, random_state=shuffle).reset_index(drop=True)
    out = run(shuffled, recipe, DatasetPaths.create(tmp_path / "shuffled")).set_index("item_id")[columns]
    pd.testing.assert_frame_equal(out.loc[reference.index], reference)
