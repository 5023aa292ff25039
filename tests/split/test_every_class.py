"""Every class in every split wherever its groups allow (issue 18, defect 12), and a warning
naming each class that is not: a split without a class makes ImageFolder number the classes
of that split differently, so its labels are silently wrong."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
from builders import split_recipe

from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.split import run
from tasks.split.assign import group_ids

FIELDS = ["name", "label", "gender", "age", "team"]


@pytest.fixture()
def paths(tmp_path) -> DatasetPaths:
    return DatasetPaths.create(tmp_path / "classes")


def directory(sizes: dict[str, int], photos: int = 1) -> pd.DataFrame:
    """A small directory: `sizes[label]` people per class, `photos` kept photos each (one person group)."""
    rows = []
    for label, people in sizes.items():
        for p in range(people):
            for k in range(photos):
                rows.append({"item_id": f"{label}-{p:02d}-{k}", "source": "north", "page_url": f"http://x/{label}/{p}",
                             "image_url": f"http://x/{label}/{p}/{k}.jpg", "name": f"{label} person {p}",
                             "label": label, "gender": ("female", "male")[p % 2], "age": str(30 + p),
                             "person_group": f"{label}-{p}", "status": "kept"})
    return mf.conform(pd.DataFrame(rows), FIELDS)


@pytest.mark.parametrize("seed", range(12))
def test_forty_people_in_four_groups_every_class_in_every_split(seed, paths):
    manifest = directory({"cs": 16, "econ": 12, "hist": 7, "law": 5})
    out = run(manifest, split_recipe(stratify=["label", "gender"], seed=seed), paths)
    table = pd.crosstab(out["label"], out["split"])
    assert (table[["train", "val", "test"]] > 0).all(axis=None), table
    report = json.loads(paths.report_json("split").read_text())
    assert not [w for w in report["warnings"] if w.startswith("class ")]
    assert abs(report["variants"]["original"]["share"]["train"] - 0.7) <= 0.1


def test_a_class_with_too_few_groups_is_in_train_first_and_named(paths, caplog):
    manifest = directory({"cs": 20, "econ": 20, "one": 1, "two": 2}, photos=2)
    with caplog.at_level(logging.WARNING, logger="tasks.split.stage"):
        out = run(manifest, split_recipe(), paths)
    splits = out.groupby("label")["split"].agg(lambda s: sorted(set(s)))
    assert splits["one"] == ["train"]  # one person: both photos in one split, the one a model learns from
    assert splits["two"] == ["train", "val"]
    assert splits["cs"] == splits["econ"] == ["test", "train", "val"]
    warnings = json.loads(paths.report_json("split").read_text())["warnings"]
    named = sorted(w.split("'")[1] for w in warnings if w.startswith("class "))
    assert named == ["one", "two"]
    assert "class 'one' has no images in val, test: 2 images in 1 group" in caplog.text
    assert "class 'two' has no images in test: 4 images in 2 groups" in caplog.text


def test_covering_classes_never_splits_a_group(paths):
    manifest = directory({"cs": 12, "econ": 3, "hist": 3}, photos=2)
    # one person listed in two departments: a group holding two classes
    manifest.loc[manifest["item_id"] == "econ-00-0", "person_group"] = "hist-0"
    out = run(manifest, split_recipe(), paths)
    kept = out[out["split"].notna()]
    spans = kept.groupby(group_ids(kept))["split"].nunique()
    assert (spans == 1).all()
    assert (pd.crosstab(out["label"], out["split"])["test"] > 0).sum() >= 2


def test_a_test_image_of_the_previous_build_never_moves_into_train(paths):
    recipe = split_recipe(seed=3)
    first = run(directory({"cs": 20, "econ": 20}), recipe, paths)
    held_out = set(first.loc[first["split"] != "train", "item_id"])
    grown = directory({"cs": 20, "econ": 20, "new": 4})
    second = run(grown, recipe, paths).set_index("item_id")
    assert not (second.loc[sorted(held_out), "split"] == "train").any()
    assert set(second.loc[second["label"] == "new", "split"]) == {"train", "val", "test"}


def test_variants_cover_every_class_too(paths):
    manifest = directory({"cs": 12, "econ": 8, "hist": 6})
    recipe = split_recipe(stratify=["label", "gender"], variants=[{"kind": "balanced"}])
    out = run(manifest, recipe, paths)
    table = pd.crosstab(out["label"], out["split_balanced"])
    assert (table[["train", "val", "test"]] > 0).all(axis=None), table
