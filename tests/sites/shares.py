"""Shared manifests as someone else could hand them to `faceset hydrate`: a manifest_share.csv
written as any tool would write it (no escaping), and the manifest_share.json beside it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd


def share_row(item_id: str, url: str, data: bytes, *, cls: str = "cs", split: str = "train", **extra: str) -> dict[str, str]:
    """One row of a shared manifest for the image `data` served at `url`."""
    return {"item_id": item_id, "label": cls, "class": cls, "image_url": url,
            "sha256": hashlib.sha256(data).hexdigest(), "face_box": "", "split": split, **extra}


def write_share(folder: Path, rows: list[dict[str, str]], **about: Any) -> Path:
    """manifest_share.csv with `rows` and manifest_share.json with `about` (no face crops unless given)."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "manifest_share.csv", index=False)
    (folder / "manifest_share.json").write_text(json.dumps({"faces": None, **about}))
    return folder / "manifest_share.csv"
