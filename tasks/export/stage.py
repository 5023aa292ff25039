"""The export stage: image folders every common loader reads unchanged, a shareable
manifest without images, and the dataset card.

Layout under the dataset folder (the `original` variant keeps the documented `splits/`;
other variants get their own tree so that a loader pointed at `splits/` never mixes
them in, as Hugging Face's split detection would with `splits/balanced/train/`):

    splits/<split>/<class>/<item_id>.jpg          torchvision ImageFolder, Keras
    splits/<split>/metadata.jsonl                 Hugging Face `imagefolder` (file_name, label, attributes)
    splits/classes.json                           one class numbering for every split (a folder per class in each)
    variants/<name>/<split>/<class>/<item_id>.jpg  one tree per recipe variant (balanced, biased)
    manifest_share.csv (+ .json)                  URLs, hashes, labels, splits: no images (faceset hydrate)
    DATASET_CARD.md                               card.py

Files are hard links to the crops in `faces/` where the file system allows (no extra
space), copies otherwise. The trees are rebuilt to match the manifest exactly: a file
whose row is no longer kept, or has moved split or class, is removed, so an export is
idempotent and never serves a taken-down image.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core.atomic import atomic_write, write_json, write_jsonl
from tasks.core.binning import is_numeric, target_classes
from tasks.core.manifest import kept
from tasks.core.paths import METADATA, SHARE_CSV, SPLITS, DatasetPaths, tree_folder
from tasks.core.recipe import Recipe
from tasks.core.reports import write_report
from tasks.core.safepaths import folder_name
from tasks.core.text import write_spreadsheet_csv

log = logging.getLogger(__name__)

# Columns of the shareable manifest besides the recipe's target and attributes. Names are
# left out on purpose: the share carries labels, not identities.
SHARE_COLUMNS = ("item_id", "source", "page_url", "image_url", "crawled_at", "sha256", "face_box",
                 "parent_id", "face_index", "dup_group", "person_group")  # parent_id: faces of one photo (each: true)


def trees(recipe: Recipe, paths: DatasetPaths) -> dict[str, Path]:
    """Manifest column -> folder holding that variant's <split>/<class>/ tree."""
    columns = ["split", *(f"split_{variant.name}" for variant in recipe.split.variants)]
    return {column: paths.tree(column) for column in columns}


def class_dirs(values: pd.Series) -> dict[str, str]:
    """Target value -> folder name (labels stay text: '..' or '.NET' are labels like any other);
    distinct values that clean to the same name (or differ only by case, which macOS and
    Windows do not tell apart) get a short hash appended. The export report records the map."""
    distinct = sorted(values.dropna().astype(str).unique())
    names = {v: folder_name(v) for v in distinct}
    clashes = pd.Series(names).str.casefold().duplicated(keep=False)
    for value in clashes[clashes].index:
        names[value] = f"{names[value]}_{hashlib.sha256(value.encode()).hexdigest()[:6]}"
    return names


def source_file(row: Any, paths: DatasetPaths) -> Path | None:
    """The crop (or, with `faces: none`, the whole image) a row exports."""
    for column in ("face_path", "image_path"):
        value = getattr(row, column, None)
        if isinstance(value, str) and value:
            path = Path(value)
            return path if path.is_absolute() else paths.root / path
    return None


def place(source: Path, target: Path) -> str:
    """Hard-link (or copy) `source` to `target` unless it is already there; what was done."""
    if target.exists():
        if os.path.samefile(source, target):
            return "kept"
        if target.stat().st_size == source.stat().st_size and target.read_bytes() == source.read_bytes():
            return "kept"
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return "linked"
    except OSError:  # another file system, or links not allowed (some network shares)
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp), durable=False)
        return "copied"


def attribute_values(frame: pd.DataFrame, attributes: list[str]) -> dict[str, pd.Series]:
    """Each attribute as metadata.jsonl gives it: numbers as numbers (so loaders can bin them),
    everything else as text, missing as null."""
    values = {}
    for attribute in attributes:
        column = frame[attribute].replace("", pd.NA) if attribute in frame.columns else pd.Series(pd.NA, index=frame.index)
        numbers = pd.to_numeric(column, errors="coerce")
        if is_numeric(column, binned=True):
            column = numbers.map(lambda n: None if pd.isna(n) else (int(n) if float(n).is_integer() else float(n)))
        values[attribute] = column.astype(object).where(column.notna(), None)
    return values


def export_tree(frame: pd.DataFrame, column: str, folder: Path, recipe: Recipe, paths: DatasetPaths,
                classes: dict[str, str]) -> tuple[dict[Any, Path], list[Path], dict[str, Any]]:
    """Write one variant's tree; returns the file of each exported row (by index), the
    metadata files, class map and class folders, and the figures."""
    placed: dict[Any, Path] = {}
    metadata: list[Path] = []
    actions: dict[str, int] = {"linked": 0, "copied": 0, "kept": 0}
    missing: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    class_of = target_classes(frame, recipe)
    rows = frame[kept(frame).fillna(False) & frame[column].notna() & class_of.notna()]
    attributes = attribute_values(rows, recipe.attributes)
    for split in SPLITS:
        lines = []
        chosen = rows[rows[column] == split].sort_values("item_id")
        for index, row in zip(chosen.index, chosen.itertuples(index=False)):
            source = source_file(row, paths)
            if source is None or not source.is_file():
                missing.append(str(row.item_id))
                continue
            label = str(class_of[index])
            file_name = f"{classes[label]}/{row.item_id}{source.suffix.lower() or '.jpg'}"
            target = folder / split / file_name
            actions[place(source, target)] += 1
            placed[index] = target
            lines.append({"file_name": file_name, "label": label,
                          **{a: v[index] for a, v in attributes.items()}, "item_id": row.item_id})
            counts.setdefault(split, {}).setdefault(classes[label], 0)
            counts[split][classes[label]] += 1
        if lines:
            write_jsonl(folder / split / METADATA, lines)
            metadata.append(folder / split / METADATA)
    if missing:
        log.warning("export: %d kept images have no file to export (e.g. %s)", len(missing), ", ".join(missing[:3]))
    labels = {label: classes[label] for label in class_of[rows.index].astype(str).unique()}
    metadata += write_class_map(paths.class_map(column), [s for s in SPLITS if (rows[column] == s).any()], labels)
    return placed, metadata, {"folder": folder.relative_to(paths.root).as_posix(), "counts": counts, "files": actions,
                    "missing_files": missing}


def write_class_map(class_map: Path, splits: list[str], labels: dict[str, str]) -> list[Path]:
    """A folder for every class (`labels`: label -> folder) in every split of the tree, empty
    where the split has none of its images, and the class map beside the splits. Loaders that
    number classes by the folders they find (ImageFolder, Keras) then number every split
    alike, and any other loader reads the numbers from the map. Returns what pruning must keep."""
    if not labels:
        return []
    names = sorted(set(labels.values()))  # sorted as ImageFolder and Keras sort folder names
    folders = [class_map.parent / split / name for split in splits for name in names]
    for path in folders:
        path.mkdir(parents=True, exist_ok=True)
    write_json(class_map, {"classes": names, "class_to_idx": {name: i for i, name in enumerate(names)},
                           "labels": {name: label for label, name in sorted(labels.items())}})
    return [class_map, *folders]


def prune(folders: list[Path], wanted: set[Path]) -> int:
    """Remove every file under `folders` that the export did not just write, then empty
    folders it did not ask for: rows no longer kept, moved, or variants no longer in the recipe."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_file() or path.is_symlink():
                if path not in wanted:
                    path.unlink()
                    removed += 1
            elif path.is_dir() and path not in wanted and not any(path.iterdir()):
                path.rmdir()
    return removed


def share_frame(frame: pd.DataFrame, recipe: Recipe, classes: dict[str, str], columns: list[str]) -> pd.DataFrame:
    """The shareable manifest: kept rows that are in any split; no file paths, no names."""
    rows = frame[kept(frame).fillna(False) & frame[columns].notna().any(axis=1)]
    fields = list(dict.fromkeys([recipe.target, *recipe.attributes, *recipe.split.stratify]))
    present = [c for c in (*SHARE_COLUMNS, *fields, *columns) if c in rows.columns]
    share = rows[list(dict.fromkeys(present))].copy()
    label = target_classes(rows, recipe)  # the target (its bin when binned), whatever the recipe calls it
    share["label"] = label
    share["class"] = label.map(lambda v: classes.get(str(v)) if pd.notna(v) else pd.NA).astype("string")
    first = ["item_id", "label", "class"]
    share = share[first + [c for c in share.columns if c not in first]]
    return share.sort_values("item_id").reset_index(drop=True)


def write_share(share: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, columns: list[str]) -> None:
    """manifest_share.csv (safe to open in a spreadsheet: tasks.core.text) and a JSON beside it
    saying how to rebuild the folders."""
    write_spreadsheet_csv(paths.share_csv, share)
    about = {
        "dataset": recipe.name,
        "description": recipe.description,
        "license": recipe.license,
        "contact": recipe.contact,
        "target": recipe.target,
        "attributes": recipe.attributes,
        "split_columns": {c: tree_folder(c) for c in columns},
        "faces": recipe.faces.model_dump(mode="json") if recipe.faces is not None else None,
        "rows": len(share),
        "how_to_rebuild": f"faceset hydrate {SHARE_CSV} OUT_DIR",
    }
    write_json(paths.share_json, about)


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> pd.DataFrame:
    """Write the split trees, metadata.jsonl files, the shareable manifest and the card."""
    from tasks.export import card

    frame = manifest.copy()
    columns = {c: f for c, f in trees(recipe, paths).items() if c in frame.columns}
    classes = class_dirs(target_classes(frame, recipe)[kept(frame).fillna(False)])
    wanted: set[Path] = set()
    figures: dict[str, Any] = {"classes": classes, "trees": {}}
    frame["export_path"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    for column, folder in columns.items():
        placed, metadata, tree = export_tree(frame, column, folder, recipe, paths, classes)
        wanted |= set(placed.values()) | set(metadata)
        figures["trees"][column] = tree
        if column == "split":
            for index, path in placed.items():
                frame.at[index, "export_path"] = path.relative_to(paths.root).as_posix()
    figures["removed_stale_files"] = prune([paths.splits, paths.variants], wanted)
    share = share_frame(frame, recipe, classes, list(columns))
    write_share(share, recipe, paths, list(columns))
    figures["shared_rows"] = len(share)
    write_report(paths, "export", figures)
    card.write(frame, recipe, paths)
    return frame


