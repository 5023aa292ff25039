"""Dedupe, per image: what a crop looks like to the comparison (imagehash's encode phase).

The face crop is looked at by the describer (dlib: face finder, 5 landmarks, ResNet
descriptor, `identity.py`). The pHash is taken of the *aligned* inner face (the
landmarks put eyes and nose in fixed places), so a thumbnail, a slightly different crop
or the face cut out onto another background hash alike, which a pHash of the whole crop
misses. `phash_mirror` is the same hash of the left-right flipped crop. Without a face
(or with `faces: none`) the whole crop is hashed (`hash_kind` image).

Blank and placeholder crops (almost one grey level, or a degenerate hash) are
quarantined as `blank image` here, so they cannot form one giant cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from tasks.core.manifest import FAILED, QUARANTINED, with_columns
from tasks.core.paths import DatasetPaths
from tasks.core.quarantine import quarantine
from tasks.core.reasons import BLANK
from tasks.core.recipe import Recipe
from tasks.core.vectors import encode_vector
from tasks.dedupe import identity

FACE, WHOLE = "face", "image"  # hash_kind: aligned inner face, or the whole crop
INNER = slice(8, 72)  # the inner 64 px of the 80 px aligned chip: forehead to chin, no background
DEGENERATE = {0, 2**64 - 1, 2**63}  # hashes of flat images (only the DC term, or nothing)

# Every column the dedupe stage writes, in manifest order: these per image, and
# dup_group, dup_match and person_group by group.py.
COLUMNS: dict[str, str] = {
    "phash": "string",
    "phash_mirror": "string",
    "hash_kind": "string",
    "face_descriptor": "string",
    "grey_std": "Float64",
    "dup_group": "string",
    "dup_match": "string",
    "person_group": "string",
    "quarantine_path": "string",  # blank images are set aside for review, as the faces stage does
}


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every dedupe column, in its dtype (in place)."""
    return with_columns(frame, COLUMNS)


def phash_hex(image: Image.Image) -> str:
    return str(imagehash.phash(image))


def face_hash(chip: np.ndarray) -> str:
    """pHash of the aligned chip's inner face (box-averaged to 32 px, pHash's own input size)."""
    inner = Image.fromarray(np.ascontiguousarray(chip[INNER, INNER]))
    return phash_hex(inner.resize((32, 32), Image.Resampling.BOX))


def crop_file(row: dict[str, Any], paths: DatasetPaths) -> Path | None:
    """The face crop (or, without one, the image) of a row, as a path."""
    for column in ("face_path", "image_path"):
        value = row.get(column)
        if isinstance(value, str) and value:
            path = Path(value)
            return path if path.is_absolute() else paths.root / path
    return None


def look_at(rgb: np.ndarray, describer: identity.Describer | None, blank_std: float) -> dict[str, Any]:
    """Hashes, descriptor and blankness of one crop (RGB uint8)."""
    grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32)
    values: dict[str, Any] = {"grey_std": round(float(grey.std()), 3)}
    flipped = np.ascontiguousarray(rgb[:, ::-1])
    look = describer(rgb, describe=True) if describer is not None and values["grey_std"] >= blank_std else None
    if look is not None and look.chip is not None:
        mirrored = describer(flipped, describe=False)
        values.update(hash_kind=FACE, phash=face_hash(look.chip),
                      face_descriptor=encode_vector(look.descriptor))
        if mirrored.chip is not None:
            values["phash_mirror"] = face_hash(mirrored.chip)
    else:
        values.update(hash_kind=WHOLE, phash=phash_hex(Image.fromarray(rgb)),
                      phash_mirror=phash_hex(Image.fromarray(flipped)))
    values["blank"] = values["grey_std"] < blank_std or int(values["phash"], 16) in DEGENERATE
    return values


def process_row(row: dict[str, Any], recipe: Recipe, paths: DatasetPaths,
                describer: identity.Describer | None) -> dict[str, Any]:
    """The new values of one row: its hashes and descriptor, or a status saying why there are none."""
    path = crop_file(row, paths)
    if path is None:
        return {"status": FAILED, "reason": "no image to compare (no face_path or image_path)"}
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return {"status": FAILED, "reason": f"face crop unreadable: {type(exc).__name__}"}
    values = look_at(rgb, describer, recipe.dedupe.blank_std)
    if values.pop("blank"):
        original = paths.root / str(row["image_path"]) if isinstance(row.get("image_path"), str) else path
        values.update(status=QUARANTINED, reason=BLANK,
                      quarantine_path=quarantine(original, BLANK, str(row["item_id"]), paths))
    return values


def process_batch(rows: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *,
                  describer: identity.Describer | None = None) -> pd.DataFrame:
    """Hash and describe a batch of kept rows; blank crops are quarantined here."""
    if recipe.faces is not None and describer is None:
        describer = identity.default_describer()
    out = typed(rows.copy())
    for index, row in zip(rows.index, rows.to_dict("records")):
        for column, value in process_row(row, recipe, paths, describer if recipe.faces is not None else None).items():
            out.at[index, column] = value
    return out
