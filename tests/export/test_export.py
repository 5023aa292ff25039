"""Export: split trees read by torchvision's ImageFolder, metadata.jsonl beside them,
idempotent rebuilds, the shareable manifest; synthetic crops made with Pillow."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from builders import build_dataset, dataset_recipe
from torchvision.datasets import ImageFolder

from tasks.export import stage as export
from tasks.split import stage as split
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe
from tasks.report import sections


def export_all(frame: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> pd.DataFrame:
    """Split, then export: what the flow runs."""
    return export.run(split.run(frame, recipe, paths), recipe, paths)


def files_under(folder: Path) -> list[str]:
    """Every file under `folder`, relative, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_imagefolder_reads_every_split_and_metadata_matches(tmp_path):
    frame, paths = build_dataset(tmp_path / "tiny")
    recipe = dataset_recipe()
    out = export_all(frame, recipe, paths)
    kept = out[out["status"] == "kept"]
    classes = sorted(export.class_dirs(kept["label"]).values())
    assert classes == sorted(["Computer Science", "econ", "R_D_ops"])
    for name in ("train", "val", "test"):
        dataset = ImageFolder(str(paths.splits / name))
        expected = kept[kept["split"] == name]
        assert len(dataset) == len(expected)
        assert dataset.classes == sorted(export.class_dirs(expected["label"]).values())
        image, index = dataset[0]
        assert image.size == (32, 32)
        # each file sits in the folder of its row's label, named by item_id
        by_id = {p.split("/")[-1].removesuffix(".jpg"): dataset.classes[i]
                 for p, i in ((s[0].replace("\\", "/"), s[1]) for s in dataset.samples)}
        assert by_id == {r.item_id: export.class_dirs(kept["label"])[r.label] for r in expected.itertuples()}
        lines = [json.loads(line) for line in (paths.splits / name / "metadata.jsonl").read_text().splitlines()]
        assert len(lines) == len(expected)
        for line in lines:
            assert (paths.splits / name / line["file_name"]).is_file()
            row = kept.set_index("item_id").loc[line["item_id"]]
            assert line["label"] == row["label"] and line["gender"] == row["gender"]
            assert line["age"] == int(row["age"])  # numbers stay numbers for the loaders
    # exported files are the crops themselves (hard links here), not re-encoded copies
    one = kept[kept["split"] == "train"].iloc[0]
    assert (paths.root / one["export_path"]).read_bytes() == (paths.root / one["face_path"]).read_bytes()
    assert out.loc[out["status"] != "kept", "export_path"].isna().all()


def test_rebuild_is_idempotent_and_removes_rows_no_longer_kept(tmp_path):
    frame, paths = build_dataset(tmp_path / "tiny")
    recipe = dataset_recipe(variants=[{"kind": "balanced", "by": ["gender"]}])
    out = export_all(frame, recipe, paths)
    before = {p: p.stat().st_ino for p in paths.root.joinpath("splits").rglob("*.jpg")}
    assert files_under(paths.root / "variants" / "balanced")
    again = export_all(frame, recipe, paths)
    assert {p: p.stat().st_ino for p in paths.root.joinpath("splits").rglob("*.jpg")} == before
    assert again["split"].equals(out["split"])
    # a row taken out of the dataset disappears from every tree and metadata file
    gone = out.loc[(out["status"] == "kept") & out["split_balanced"].notna()].iloc[0]
    frame.loc[frame["item_id"] == gone["item_id"], ["status", "reason"]] = ["excluded", "takedown"]
    export_all(frame, dataset_recipe(), paths)  # and the variant is no longer in the recipe
    assert not list(paths.root.rglob(f"splits/**/{gone['item_id']}.jpg"))
    assert not (paths.root / "variants").exists() or not files_under(paths.root / "variants")
    assert all(gone["item_id"] not in p.read_text() for p in paths.splits.rglob("metadata.jsonl"))
    assert len(list(paths.splits.rglob("*.jpg"))) == len(before) - (gone["split"] is not pd.NA)
    summary = json.loads(paths.report_json("export").read_text())
    assert summary["removed_stale_files"] >= 2  # the row's file(s) and the variant tree
    assert f"{summary['removed_stale_files']} files of images no longer in the dataset were removed" in \
        sections.export(summary, paths)


def test_share_manifest_has_urls_hashes_labels_and_splits_but_no_paths_or_names(tmp_path):
    frame, paths = build_dataset(tmp_path / "tiny")
    recipe = dataset_recipe(variants=[{"kind": "biased", "attribute": "gender", "strength": 0.9}])
    out = export_all(frame, recipe, paths)
    share = pd.read_csv(paths.root / "manifest_share.csv", dtype=str)
    expected = out[(out["status"] == "kept")]
    assert sorted(share["item_id"]) == sorted(expected["item_id"])
    for column in ("image_url", "page_url", "sha256", "label", "class", "gender", "age", "split", "split_biased"):
        assert column in share.columns
    assert not {"name", "face_path", "image_path", "export_path"} & set(share.columns)
    assert set(share["class"]) == {"Computer Science", "econ", "R_D_ops"}
    about = json.loads((paths.root / "manifest_share.json").read_text())
    assert about["split_columns"] == {"split": "splits", "split_biased": "variants/biased"}
    assert about["target"] == "label" and about["license"] == "research use only"


@pytest.mark.parametrize("values, expected", [
    (["a/b", "a_b"], 2),  # clean to the same name: both get a hash
    (["Econ", "econ"], 2),  # differ only by case
    ([".", "..", ""], 3),
])
def test_class_folders_are_safe_and_distinct(values, expected):
    names = export.class_dirs(pd.Series(values))
    assert len(set(names.values())) == expected
    for name in names.values():
        assert name not in (".", "..", "") and "/" not in name and "\\" not in name
    assert len({n.casefold() for n in names.values()}) == expected


@pytest.mark.slow
def test_hugging_face_imagefolder_reads_splits_with_labels_and_attributes(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    frame, paths = build_dataset(tmp_path / "tiny")
    recipe = dataset_recipe(variants=[{"kind": "balanced", "by": ["gender"]}])
    out = export_all(frame, recipe, paths)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(paths.splits), cache_dir=str(tmp_path / "hf"))
    kept = out[out["status"] == "kept"]
    # split names as Hugging Face knows them; the variant tree under variants/ is not mixed in
    for split_name, hf_name in (("train", "train"), ("val", "validation"), ("test", "test")):
        part = loaded[hf_name]
        expected = kept[kept["split"] == split_name].set_index("item_id")
        assert sorted(part["item_id"]) == sorted(expected.index)
        for record in part.select(range(min(5, len(part)))):
            row = expected.loc[record["item_id"]]
            assert record["label"] == row["label"] and record["gender"] == row["gender"]
            assert record["age"] == int(row["age"]) and record["image"].size == (32, 32)
