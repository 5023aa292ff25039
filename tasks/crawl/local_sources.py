"""Sources without crawling: a CSV list of image URLs (`urls:`) and a folder of images (`folder:`).

Researchers often have their images already, as a list (img2dataset's input format: a
`url` column, every other column a field) or on disk with a `labels.csv` beside them.
Their rows enter the manifest here, shaped like crawled rows, and go through the same
stages: fetch downloads the URLs under the URL policy, and copies the folder's files.

Nothing of a file is trusted: a URL the policy refuses, a row without one, a label row
naming a file outside the folder (`../x`, `/etc/x`) or absent, and a link leading out of
the folder each give a `failed` row whose reason says so; the other rows go on. Cells
are kept as text; every CSV faceset writes escapes them for spreadsheets.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterator

from tasks.core import manifest as mf
from tasks.core.errors import FacesetError
from tasks.core.recipe import FILE_COLUMN, LABELS_FILE, URL_COLUMN, Recipe, Source
from tasks.core.safepaths import UnsafePath, inside
from tasks.core.urls import check_url, url_policy

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


def _table(path: Path, what: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a UTF-8 CSV file, or a FacesetError naming the file and the line."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                yield reader.line_num, {str(k).strip(): (v or "") for k, v in row.items() if k is not None}
    except FileNotFoundError:
        raise FacesetError(f"{what} {path} does not exist", "fix the path in the recipe (it is relative to the "
                           "recipe file)") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FacesetError(f"{what} {path} cannot be read as a UTF-8 CSV file: {exc}",
                           "save it as CSV (UTF-8) with a header row") from None


def _row(source: Source, origin: str, key: str, fields: dict[str, str], rank: int | None, now: str,
         reason: str | None = None, **columns: Any) -> dict[str, Any]:
    row = {
        "item_id": mf.item_id(f"{origin}:{source.name}", key),
        "source": source.name,
        "crawled_at": now,
        "rank": rank,
        "fields": {name: fields.get(name, "").strip() for name in source.fields},
        **columns,
    }
    if reason is not None:
        row.update(status=mf.FAILED, reason=reason)
    return row


def url_list_rows(source: Source, recipe: Recipe, now: str) -> list[dict[str, Any]]:
    """A row per line of the source's URL list (the first `max_items`), bad lines with reasons."""
    policy = url_policy(recipe)
    path = recipe.local_path(source.urls or "")
    rows: list[dict[str, Any]] = []
    for line, cells in _table(path, "the URL list"):
        if source.max_items is not None and len(rows) >= source.max_items:
            break
        url = cells.get(URL_COLUMN, "").strip()
        reason = f"line {line} of {path.name} has no url" if not url else check_url(url, policy)
        rows.append(_row(source, "urls", url or f"line {line}", cells, len(rows) + 1, now, reason,
                         image_url=url or None))
    return rows


def _images(root: Path) -> Iterator[tuple[str, Path, str | None]]:
    """(relative path, path, refusal) of each image file under `root`, in name order; a link
    leading out of the folder comes with its refusal, and linked folders are not entered."""
    resolved = root.resolve()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (Path(folder) / d).is_symlink())
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            relative = path.relative_to(root).as_posix()
            refusal = None
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(resolved):
                    refusal = f"refused: {relative} is a link leading out of the folder"
                elif not target.is_file():
                    refusal = f"{relative} is a link to no file"
            yield relative, path, refusal


def folder_rows(source: Source, recipe: Recipe, now: str) -> list[dict[str, Any]]:
    """A row per image of the source's folder (the first `max_items`, in name order), labelled
    from its labels.csv; labels of files that are absent or outside the folder get rows with reasons."""
    root = recipe.local_path(source.folder or "")
    if not root.is_dir():
        raise FacesetError(f"the image folder {root} does not exist", "fix folder: in the recipe (it is relative to "
                           "the recipe file)")
    labels: dict[str, dict[str, str]] = {}
    bad: list[dict[str, Any]] = []
    if (root / LABELS_FILE).is_file():
        for line, cells in _table(root / LABELS_FILE, "the labels file"):
            name = cells.get(FILE_COLUMN, "").strip()
            try:
                inside(root, name, "file")
            except UnsafePath as exc:
                bad.append(_row(source, "folder", name or f"line {line}", cells, None, now,
                                f"line {line} of {LABELS_FILE}: {exc.message}"))
                continue
            labels[name] = cells
    images = list(_images(root))
    present = {relative for relative, _, _ in images}
    bad += [_row(source, "folder", name, cells, None, now, f"{LABELS_FILE} names {name}, which is not an image in "
                 "the folder") for name, cells in labels.items() if name not in present]
    good: list[dict[str, Any]] = []
    for relative, path, refusal in images[:source.max_items]:
        if refusal is not None:
            bad.append(_row(source, "folder", relative, labels.get(relative, {}), None, now, refusal,
                            **{mf.LOCAL_FILE: relative}))
            continue
        info = path.stat()
        good.append(_row(source, "folder", relative, labels.get(relative, {}), len(good) + 1, now,
                         **{mf.LOCAL_FILE: relative, mf.LOCAL_VERSION: f"{info.st_size}:{info.st_mtime_ns}"}))
    return good + bad


def local_rows(recipe: Recipe, now: str) -> list[dict[str, Any]]:
    """The rows of every urls:/folder: source of the recipe."""
    rows: list[dict[str, Any]] = []
    for source in recipe.sources:
        if source.urls:
            rows += url_list_rows(source, recipe, now)
        elif source.folder:
            rows += folder_rows(source, recipe, now)
    return rows
