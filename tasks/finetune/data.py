"""Reading a train/val(/test)/<class>/ image tree and turning its images into tensors.

The tree is the book's ImageFolder layout, which faceset's export stage writes under
`splits/`. A `metadata.jsonl` beside the images (file_name, label and the recipe's
attributes, one JSON object a line) gives the attributes for the subgroup report. The
class map beside the split folders (`classes.json`, from the export) numbers the classes
the same way in every split, even one that lacks a class.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from tasks.core.errors import FacesetError
from tasks.core.atomic import read_json
from tasks.core.paths import CLASSES, SPLITS
from tasks.vision.backbones import Normalization

# Images per batch when nothing trains (validation, test, feature caches): on the CPU 16
# ran faster than 64, whose activations outgrow malloc's reusable blocks
# (tasks/vision/cpu_memory.py; measured: docs/benchmarks.md, 'finetune').
INFERENCE_BATCH = 16
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
# metadata.jsonl keys that are bookkeeping, not attributes of the person
NOT_ATTRIBUTES = {"file_name", "label", "item_id", "split", "path", "class", "class_index", "sha256",
                  "image_url", "page_url", "source", "face_path", "image_path", "name"}


def locate_splits(directory: Path) -> Path:
    """The folder holding train/ and val/: DIR itself or a built dataset's DIR/splits."""
    directory = Path(directory)
    for candidate in (directory / "splits", directory):
        if (candidate / "train").is_dir() and (candidate / "val").is_dir():
            return candidate
    raise FacesetError(
        f"{directory} has no train/ and val/ folders (nor splits/train and splits/val)",
        "give a folder laid out as train/<class>/*.jpg and val/<class>/*.jpg (test/ optional), "
        "or a dataset built by 'faceset build'",
    )


def _metadata(split_dir: Path) -> pd.DataFrame:
    """All metadata.jsonl rows of a split, with `path` resolved beside the file."""
    rows = []
    for meta in sorted([split_dir / "metadata.jsonl", *split_dir.glob("*/metadata.jsonl")]):
        if not meta.is_file():
            continue
        for line in meta.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if "file_name" in row:
                row["path"] = str((meta.parent / row["file_name"]).resolve())
                rows.append(row)
    return pd.DataFrame(rows)


def read_split(split_dir: Path, split: str) -> pd.DataFrame:
    """One row per image: path, split, class (the folder name) and any metadata columns."""
    rows = [
        {"path": str(p.resolve()), "split": split, "class": class_dir.name}
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
        for p in sorted(class_dir.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    frame = pd.DataFrame(rows, columns=["path", "split", "class"])
    meta = _metadata(split_dir)
    if len(frame) and len(meta):
        meta = meta.drop(columns=[c for c in ("split", "class") if c in meta.columns]).drop_duplicates("path")
        frame = frame.merge(meta, on="path", how="left")
    return frame


def class_names(root: Path, frame: pd.DataFrame) -> list[str]:
    """The class names in index order: the tree's class map (CLASSES, written by the export
    for every split alike) when there is one, else train's folders that hold images, sorted."""
    class_map = read_json(root / CLASSES, "the classes are taken from train's folders")
    if not isinstance(class_map, dict) or not class_map.get("classes"):
        return sorted(frame.loc[frame["split"] == "train", "class"].unique())
    classes = list(class_map["classes"])
    strange = sorted(set(frame["class"]) - set(classes))
    if strange:
        raise FacesetError(f"folders {strange} of {root} are not classes in its {CLASSES}",
                           f"remove those folders, or add them to {root / CLASSES}")
    return classes


def read_tree(directory: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every image of the tree and the class names (indices: `class_names`)."""
    root = locate_splits(directory)
    parts = [read_split(root / split, split) for split in SPLITS if (root / split).is_dir()]
    frame = pd.concat(parts, ignore_index=True)
    classes = class_names(root, frame)
    untrained = sorted(set(frame["class"]) - set(frame.loc[frame["split"] == "train", "class"]))
    if untrained:
        raise FacesetError(
            f"classes {untrained} appear in val/ or test/ but not in train/ of {root}",
            "every class needs training images; move or remove those folders",
        )
    frame["target"] = frame["class"].map({c: i for i, c in enumerate(classes)}).astype(int)
    return frame, classes


def attribute_columns(frame: pd.DataFrame) -> list[str]:
    """metadata columns that describe people (gender, age, race...), for the subgroup report."""
    fixed = {"path", "split", "class", "target"} | NOT_ATTRIBUTES
    return [c for c in frame.columns if c not in fixed and frame[c].notna().any()
            and 1 < frame[c].nunique() <= max(50, len(frame) // 2)]


def eval_transform(size: int, norm: Normalization, crop: float = 0.875) -> transforms.Compose:
    """Validation, test and apply: Resize then CenterCrop, keeping `crop` of the side (the
    book's ImageNet 0.875 by default; on aligned face crops 1.0, the whole crop, does
    better: the border holds hair and chin; docs/benchmarks.md, 'finetune')."""
    return transforms.Compose([
        transforms.Resize(round(size / crop)),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(norm.mean, norm.std),
    ])


def train_transform(size: int, norm: Normalization, min_scale: float,
                    ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> transforms.Compose:
    """Training: RandomResizedCrop and horizontal flip, as in the book."""
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(min_scale, 1.0), ratio=ratio),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(norm.mean, norm.std),
    ])


class ImageTable(Dataset):
    """Images from a list of paths with their class indices (-1 when unknown)."""

    def __init__(self, paths: list[str], targets: list[int], transform: transforms.Compose) -> None:
        self.paths = list(paths)
        self.targets = list(targets)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB")), self.targets[index]


def loader(frame: pd.DataFrame, transform: transforms.Compose, batch_size: int, *, shuffle: bool,
           seed: int = 0) -> DataLoader:
    """A DataLoader over the rows of `frame` (column `target`); seeded when shuffled."""
    table = ImageTable(frame["path"].tolist(), frame["target"].astype(int).tolist(), transform)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(table, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)
