"""One class numbering for every split (issue 18, defect 12): a folder for every class in
every split, even empty, and `classes.json` beside the splits of each tree, which faceset's
own fine-tune loader follows. Without them ImageFolder numbers a split that lacks a class
differently from train, and that split's labels are silently wrong."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from builders import build_dataset, dataset_recipe, make_recipe
from torchvision.datasets import ImageFolder

from tasks.core.errors import FacesetError
from tasks.core.paths import CLASSES
from tasks.export import stage as export
from tasks.finetune import data
from tasks.split import stage as split

SPLITS = ("train", "val", "test")


def exported(tmp_path, variants=()):
    """The test dataset with a one-image class 'Archaeology' (sorted first: it shifts every index)."""
    frame, paths = build_dataset(tmp_path / "tiny")
    frame.loc[frame["item_id"] == "item000", "label"] = "Archaeology"
    recipe = dataset_recipe(variants=variants)
    return export.run(split.run(frame, recipe, paths), recipe, paths), recipe, paths


def test_every_split_has_every_class_folder_and_imagefolder_numbers_them_alike(tmp_path):
    out, _, paths = exported(tmp_path, variants=[{"kind": "balanced", "by": ["gender"]}])
    assert set(out.loc[out["label"] == "Archaeology", "split"]) == {"train"}
    for tree in (paths.splits, paths.root / "variants" / "balanced"):
        class_map = json.loads((tree / CLASSES).read_text())
        assert class_map["class_to_idx"] == {name: i for i, name in enumerate(class_map["classes"])}
        for name in SPLITS:
            assert sorted(p.name for p in (tree / name).iterdir() if p.is_dir()) == class_map["classes"]
            assert ImageFolder(str(tree / name), allow_empty=True).class_to_idx == class_map["class_to_idx"]
    class_map = json.loads(paths.class_map("split").read_text())
    assert class_map["classes"] == ["Archaeology", "Computer Science", "R_D_ops", "econ"]
    assert class_map["labels"]["R_D_ops"] == "R&D/ops"  # folder -> the label it holds
    for name in ("val", "test"):
        assert not any((paths.splits / name / "Archaeology").iterdir())


def test_a_rebuild_keeps_empty_class_folders_and_drops_classes_no_longer_there(tmp_path):
    out, recipe, paths = exported(tmp_path)
    export.run(out, recipe, paths)
    assert (paths.splits / "test" / "Archaeology").is_dir()
    gone = out.copy()
    gone.loc[gone["label"] == "Archaeology", ["status", "reason"]] = ["excluded", "takedown"]
    export.run(gone, recipe, paths)
    assert not list(paths.splits.glob("*/Archaeology"))
    assert "Archaeology" not in json.loads(paths.class_map("split").read_text())["classes"]


def test_the_finetune_loader_numbers_classes_from_the_class_map(tmp_path):
    _, _, paths = exported(tmp_path)
    frame, classes = data.read_tree(paths.root)
    assert classes == json.loads(paths.class_map("split").read_text())["classes"]
    assert [classes[target] for target in frame["target"]] == frame["class"].tolist()  # class: the image's folder
    # a folder the map does not know is refused, not numbered silently
    (paths.splits / "test" / "Zoology").mkdir()
    next((paths.splits / "train" / "econ").iterdir()).rename(paths.splits / "test" / "Zoology" / "x.jpg")
    with pytest.raises(FacesetError, match="Zoology"):
        data.read_tree(paths.root)


def test_without_a_class_map_the_loader_takes_train_folders(tmp_path):
    _, _, paths = exported(tmp_path)
    paths.class_map("split").unlink()
    _, classes = data.read_tree(paths.root)
    assert classes == sorted(p.name for p in (paths.splits / "train").iterdir() if p.is_dir())


def test_a_binned_numeric_target_gives_one_class_per_bin_not_one_per_year(tmp_path):
    """`target: age` with `split.bins: {age: [...]}` (issue 19): the split, the folders, the
    class map and the shared manifest all use the bins."""
    frame, paths = build_dataset(tmp_path / "ages")
    recipe = make_recipe("ages", attributes=("gender",), target="age", split={"bins": {"age": [35, 50]}})
    out = export.run(split.run(frame, recipe, paths), recipe, paths)
    class_map = json.loads(paths.class_map("split").read_text())
    assert class_map["classes"] == ["35-50", "50 and over", "under 35"]
    assert class_map["labels"] == {"35-50": "35-50", "50 and over": ">=50", "under 35": "<35"}
    for name in SPLITS:
        assert sorted(p.name for p in (paths.splits / name).iterdir() if p.is_dir()) == class_map["classes"]
    kept = out[out["split"].notna()]
    ages = kept["age"].astype(int)
    expected = ages.map(lambda a: "under 35" if a < 35 else ("35-50" if a < 50 else "50 and over"))
    for (_, row), want in zip(kept.iterrows(), expected):
        assert len(list((paths.splits / row["split"] / want).glob(f"{row['item_id']}.*"))) == 1
    share = pd.read_csv(paths.share_csv)
    assert set(share["label"]) == {"<35", "35-50", ">=50"}
    assert set(share["age"].astype(int)) == set(ages)  # the age itself is kept beside its class
