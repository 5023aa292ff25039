"""The validation sample: faces drawn at random for people to label, the same on every start.

Gold labels must come from a random sample, or the figures measured on them describe
the reviewers' choice of faces rather than the dataset. Each kept face with a crop gets
a random key from a seeded hash of its item id, and the sample is the faces with the
smallest keys (per stratum, in proportion to its size, when `--stratify FIELD` is
given). So the draw does not depend on row order, a larger N extends a smaller one,
and the drawn ids are stored in the dataset's state through tasks.core.gold (whose
gold labels are the decisions made on them): a rebuild that adds rows does not change a
sample people have started on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from tasks.core import gold
from tasks.core.binning import UNKNOWN, group_labels
from tasks.core.errors import FacesetError
from tasks.core.manifest import kept
from tasks.core.paths import DatasetPaths
from tasks.core.text import read_spreadsheet_csv

log = logging.getLogger(__name__)
SEED = 17


@dataclass(frozen=True)
class Sample:
    size: int
    stratify: str | None
    item_ids: list[str]
    drawn_at: str


def _keys(item_ids: pd.Series, seed: int) -> np.ndarray:
    """A random-looking number per item id, fixed by (seed, id) alone."""
    return np.array([int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") for i in item_ids],
                    dtype=np.uint64)


def _allocation(sizes: pd.Series, n: int) -> pd.Series:
    """`n` shared among strata in proportion to their sizes (largest remainders), never more than a stratum holds."""
    exact = sizes / sizes.sum() * n
    counts = np.floor(exact).astype(int)
    for stratum in (exact - counts).sort_values(ascending=False, kind="stable").index[: n - int(counts.sum())]:
        counts[stratum] += 1
    return np.minimum(counts, sizes)


def draw(frame: pd.DataFrame, size: int, stratify: str | None = None, seed: int = SEED) -> list[str]:
    """The item ids of `size` kept faces with a crop, in drawing order (stratified when asked)."""
    if stratify is not None and stratify not in frame.columns:
        raise FacesetError(f"--stratify {stratify}: the manifest has no field {stratify!r}",
                           "name one of the recipe's fields, e.g. --stratify label")
    pool = frame[kept(frame).fillna(False) & frame["face_path"].notna()]
    pool = pool.assign(_key=_keys(pool["item_id"].astype("string"), seed)).sort_values("_key", kind="stable")
    if stratify is None:
        return pool["item_id"].astype(str).head(size).tolist()
    strata = group_labels(pool[stratify]).fillna(UNKNOWN)
    counts = _allocation(strata.value_counts(), min(size, len(pool)))
    picked = pool[pool.groupby(strata, sort=False).cumcount() < strata.map(counts).astype(int)]
    return picked["item_id"].astype(str).tolist()  # still in key order: strata interleaved


def load(paths: DatasetPaths) -> Sample | None:
    """The stored sample in drawing order, or None (none drawn, or the file is unreadable)."""
    path = gold.sample_path(paths)
    if not path.is_file():
        return None
    try:
        frame = read_spreadsheet_csv(path)
        ids = frame["item_id"].dropna().astype(str).tolist()
    except (OSError, ValueError, KeyError) as exc:
        log.warning("cannot read the validation sample %s (%s); draw one again with --sample N", path, exc)
        return None
    first = frame.iloc[0] if len(frame) else {}
    size = pd.to_numeric(pd.Series([first.get("size")]), errors="coerce").iloc[0]
    stratify = first.get("stratify")
    return Sample(len(ids) if pd.isna(size) else int(size), None if pd.isna(stratify) else str(stratify), ids,
                  "" if pd.isna(first.get("drawn_at")) else str(first.get("drawn_at")))


def ensure(paths: DatasetPaths, frame: pd.DataFrame, size: int | None, stratify: str | None) -> tuple[Sample | None, str]:
    """The sample to review and a sentence about it: the stored one when it matches what is asked
    (or nothing is asked), else a new draw, stored."""
    stored = load(paths)
    if size is None:
        if stratify is not None:
            raise FacesetError("--stratify needs --sample N", "add --sample N, the number of faces to draw")
        return stored, (f"validation sample: {len(stored.item_ids)} faces drawn {stored.drawn_at}" if stored
                        else "no validation sample (draw one with --sample N)")
    if size < 1:
        raise FacesetError(f"--sample {size}: the sample needs at least one face", "give --sample a positive number")
    if stored and stored.size == size and stored.stratify == stratify:
        return stored, f"validation sample: the {len(stored.item_ids)} faces drawn {stored.drawn_at}"
    ids = draw(frame, size, stratify)
    sample = Sample(size, stratify, ids, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    where = gold.write_sample(paths, ids, size=[size] * len(ids), stratify=[stratify or pd.NA] * len(ids),
                              seed=[SEED] * len(ids), drawn_at=[sample.drawn_at] * len(ids))
    note = f" (only {len(ids)} kept faces with a crop)" if len(ids) < size else ""
    replaced = " replacing the earlier one" if stored else ""
    by = f" stratified by {stratify}" if stratify else ""
    return sample, f"validation sample: {len(ids)} faces drawn{by}{note}{replaced}, kept in {where}"
