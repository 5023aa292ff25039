"""The manifest: one row per image candidate, the table every stage reads and extends.

Stages add columns and change `status`/`reason`, and never drop a row: an image that
fails keeps its row with a status and a reason a person understands (docs/recipe-reference.md).
Writes are atomic, so a crash never leaves a half-written manifest behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from tasks.core.atomic import write_parquet
from tasks.core.text import write_spreadsheet_csv

KEPT, QUARANTINED, DUPLICATE, EXCLUDED, FAILED = "kept", "quarantined", "duplicate", "excluded", "failed"
STATUSES: tuple[str, ...] = (KEPT, QUARANTINED, DUPLICATE, EXCLUDED, FAILED)

# Columns every manifest has, in order, with their pandas dtype. Recipe fields
# (name, label, gender, age, ...) come after `crawled_at`; stages may add more.
CORE_COLUMNS: dict[str, str] = {
    "item_id": "string",
    "source": "string",
    "page_url": "string",
    "image_url": "string",
    "crawled_at": "string",
    "sha256": "string",
    "image_path": "string",
    "status": "string",
    "reason": "string",
    "face_path": "string",
    "face_box": "string",
    "face_score": "Float64",
    "phash": "string",
    "dup_group": "string",
    "person_group": "string",
    "autotag_gender": "string",
    "autotag_gender_confidence": "Float64",
    "autotag_age": "Float64",
    "crosscheck": "string",
    "crosscheck_reason": "string",
    "split": "string",
}


# Where an image was found: its result page (1 = the first) and its rank, 1-based, in page
# order within its query (or its source, or its urls: list); the crawl stage writes them.
PAGE, RANK = "page", "rank"
# A `folder:` source's row: the file's path inside the folder, and its size and time, so
# that a file changed under the same name is copied again.
LOCAL_FILE, LOCAL_VERSION = "local_file", "local_version"


class ManifestError(RuntimeError):
    """The manifest broke an invariant (a lost row, a bad status): a bug, reported plainly."""


def item_id(page_url: str, image_url: str) -> str:
    """Stable id: the same page and image URL give the same id across rebuilds."""
    return hashlib.sha256(f"{page_url}\n{image_url}".encode()).hexdigest()[:16]


def face_item_id(parent_id: str, face_index: int) -> str:
    """Stable id of one face of an image (`faces: {each: true}`): its image's id and its number there."""
    return hashlib.sha256(f"{parent_id}\nface {int(face_index)}".encode()).hexdigest()[:16]


def empty(fields: Iterable[str] = ()) -> pd.DataFrame:
    """A manifest with no rows and every core column (plus the recipe's fields)."""
    return conform(pd.DataFrame(), fields)


def conform(frame: pd.DataFrame, fields: Iterable[str] = ()) -> pd.DataFrame:
    """Add missing core and field columns, fix their dtypes, put core columns first."""
    frame = frame.copy()
    wanted = dict(CORE_COLUMNS)
    insert_at = list(wanted).index("crawled_at") + 1
    names = list(wanted)
    for field in fields:
        if field not in wanted:
            names.insert(insert_at, field)
            insert_at += 1
            wanted[field] = "string"
    for name in names:
        if name not in frame.columns:
            frame[name] = pd.Series(pd.NA, index=frame.index, dtype=wanted[name])
        elif name in CORE_COLUMNS:
            frame[name] = frame[name].astype(wanted[name])
    extra = [c for c in frame.columns if c not in names]
    return frame[names + extra]


def with_columns(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Add the missing `columns` (as NA) and give every one its dtype, in place.

    Stages call it on their own columns so that empty batches, cached rows and fresh
    rows concatenate without pandas guessing dtypes.
    """
    for column, dtype in columns.items():
        if column not in frame:
            frame[column] = pd.Series(pd.NA, index=frame.index, dtype=dtype)
        else:
            frame[column] = frame[column].astype(dtype)
    return frame


def check_invariants(before: pd.DataFrame, after: pd.DataFrame, stage: str) -> None:
    """Raise if a stage lost rows, duplicated ids or wrote an unknown status."""
    lost = set(before["item_id"]) - set(after["item_id"])
    if lost:
        raise ManifestError(f"stage {stage!r} dropped {len(lost)} manifest rows (e.g. {sorted(lost)[:3]}); stages must never drop rows")
    if after["item_id"].duplicated().any():
        dup = after.loc[after["item_id"].duplicated(), "item_id"].iloc[0]
        raise ManifestError(f"stage {stage!r} left item_id {dup} twice in the manifest")
    bad = set(after["status"].dropna()) - set(STATUSES)
    if bad:
        raise ManifestError(f"stage {stage!r} wrote unknown status {sorted(bad)}; allowed: {STATUSES}")
    if after["status"].isna().any():
        raise ManifestError(f"stage {stage!r} left rows with no status")


def set_status(frame: pd.DataFrame, mask: pd.Series, status: str, reason: str | pd.Series) -> None:
    """Mark rows (in place) with a status and the reason behind it."""
    if status not in STATUSES:
        raise ManifestError(f"unknown status {status!r}")
    frame.loc[mask, "status"] = status
    frame.loc[mask, "reason"] = reason if isinstance(reason, str) else reason[mask]


def write(frame: pd.DataFrame, path: str | Path, csv: bool = True) -> Path:
    """Write the manifest as Parquet (raw values) and CSV beside it (for people: safe to open
    in a spreadsheet, see tasks.core.text), each file atomically."""
    path = Path(path)
    write_parquet(path, frame)
    if csv:
        write_spreadsheet_csv(path.with_suffix(".csv"), frame)
    return path


def read(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by `write` (Parquet keeps the dtypes)."""
    return pd.read_parquet(Path(path)).reset_index(drop=True)


def content_hash(frame: pd.DataFrame) -> str:
    """A hash of the manifest's content, independent of row order (for cache keys)."""
    ordered = frame.sort_values("item_id", kind="stable").reset_index(drop=True) if len(frame) else frame
    hashed = pd.util.hash_pandas_object(ordered.astype("string"), index=False)
    digest = hashlib.sha256(hashed.to_numpy().tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()


def kept(frame: pd.DataFrame) -> pd.Series:
    """Mask of rows still in the running (status `kept`)."""
    return frame["status"] == KEPT
