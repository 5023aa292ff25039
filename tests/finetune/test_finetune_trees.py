"""Reading a train/val/test tree of real UTKFace faces (built by tests/builders.py) with its metadata."""

from __future__ import annotations

from builders import utkface_tree


def test_tree_reader_joins_metadata_and_orders_classes(utkface_dir, tmp_path):
    from tasks.finetune import data

    utkface_tree(utkface_dir, tmp_path / "tree", {"train": 3, "val": 2, "test": 1})
    frame, classes = data.read_tree(tmp_path / "tree")
    assert classes == ["female", "male"]
    assert frame.groupby("split").size().to_dict() == {"test": 2, "train": 6, "val": 4}
    assert frame["race"].notna().all() and frame["age"].notna().all()
    assert (frame["target"] == frame["class"].map({"female": 0, "male": 1})).all()
    columns = data.attribute_columns(frame)
    assert "age" in columns and "item_id" not in columns and "label" not in columns
    # a built dataset is found through its splits/ folder
    (tmp_path / "built").mkdir()
    (tmp_path / "tree").rename(tmp_path / "built" / "splits")
    assert data.locate_splits(tmp_path / "built") == tmp_path / "built" / "splits"
