"""Small train/val/test trees of real UTKFace faces for the finetune, apply and unlearn tests."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

RACES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}


def utkface_tree(utkface_dir: Path, root: Path, per_class: dict[str, int], *, seed: int = 0,
                 splits: tuple[str, ...] = ("train", "val", "test")) -> Path:
    """`per_class[split]` images of each gender per split, copied, with metadata.jsonl (race, age)."""
    rows = list(csv.DictReader(open(utkface_dir / "labels.csv", encoding="utf-8")))
    random.Random(seed).shuffle(rows)
    by_gender = {g: [r for r in rows if r["gender"] == g] for g in ("0", "1")}
    for split in splits:
        lines = []
        for gender, pool in by_gender.items():
            name = "female" if gender == "1" else "male"
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for row in [pool.pop() for _ in range(per_class[split])]:
                shutil.copyfile(utkface_dir / row["file"], folder / row["file"])
                lines.append(json.dumps({"file_name": f"{name}/{row['file']}", "label": name,
                                         "race": RACES[row["race"]], "age": int(row["age"]), "item_id": row["file"]}))
        (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


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
