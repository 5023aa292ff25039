"""Rebuild a dataset's image folders from its shareable manifest (`manifest_share.csv`).

Face datasets are often shared as lists of URLs rather than images: the images stay the
property of their owners, and a person who removes their photo from the web removes it
from every copy rebuilt afterwards. `hydrate` downloads each image again, politely (one
request at a time, a pause per host, a User-Agent that says who is asking), keeps it only
if its sha256 is the one recorded, crops the face from the recorded box as the build did,
and lays the files out as the export stage does. What could not be had is reported, in
three kinds: `gone` (the server says so: 404, 410, ...), `hash mismatch` (the URL now
serves another image) and `failed` (network errors, worth another try later).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from PIL import Image

from tasks.core.errors import FacesetError
from tasks.core.atomic import atomic_write, read_json, write_bytes, write_json, write_jsonl
from tasks.core.paths import HYDRATE_REPORT, METADATA, SHARE_JSON, SPLITS, tree_folder
from tasks.export.stage import attribute_values
from tasks.core.recipe import FacesConfig


USER_AGENT = "faceset-hydrate/0.1 (research dataset rebuild{contact})"
MAX_BYTES = 20_000_000
GONE_STATUSES = {404, 410, 451}


@dataclass
class Politeness:
    """Waits so that one host gets at most one request per `delay` seconds."""

    delay: float = 1.0
    last: dict[str, float] = field(default_factory=dict)

    def wait(self, url: str) -> None:
        host = urlsplit(url).netloc
        pause = self.last.get(host, -1e9) + self.delay - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self.last[host] = time.monotonic()


def download(url: str, user_agent: str, timeout: float) -> tuple[bytes | None, str | None, bool]:
    """(bytes, None, False) or (None, why, gone); `gone` when the server says the image is not there."""
    if urlsplit(url).scheme not in ("http", "https"):
        return None, "not an http(s) URL", True
    request = urllib.request.Request(url, headers={"User-Agent": user_agent, "Accept": "image/*"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code}", exc.code in GONE_STATUSES
    except (urllib.error.URLError, OSError) as exc:
        return None, f"download failed: {getattr(exc, 'reason', exc)}", False
    if len(data) > MAX_BYTES:
        return None, f"larger than {MAX_BYTES} bytes", False
    return data, None, False


def face_crop(data: bytes, box: str, faces: dict[str, Any]) -> np.ndarray | None:
    """The face cut from the verified original, as the faces stage cut it (decode gate,
    then autocrop around the recorded box)."""
    from tasks.vision.decode import decode_bytes
    from tasks.vision.detector import crop_face

    settings = {k: v for k, v in faces.items() if k in FacesConfig.model_fields}
    config = FacesConfig.model_validate({**settings, "min_bytes": 0})  # the bytes are verified: no size rule
    decoded = decode_bytes(data, config)
    if not decoded.ok:
        return None
    x, y, w, h = (float(v) for v in json.loads(box))
    return crop_face(decoded.rgb, np.array([x, y, w, h], dtype=np.float32), config)


def _save(data: bytes, crop: np.ndarray | None, target: Path) -> None:
    """The face crop as JPEG, or the verified original as downloaded."""
    if crop is not None:
        atomic_write(target, lambda tmp: Image.fromarray(crop).save(tmp, "JPEG", quality=95), durable=False)
    else:
        write_bytes(target, data, durable=False)


def _extension(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
                    "TIFF": ".tif"}.get(image.format or "", ".jpg")
    except OSError:
        return ".jpg"


def read_share(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The shared manifest and the JSON beside it (which may be missing)."""
    if not path.is_file():
        raise FacesetError(f"no shared manifest at {path}", "give the manifest_share.csv of a dataset built by faceset")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    needed = {"item_id", "image_url", "sha256", "class"}
    if not needed <= set(table.columns):
        raise FacesetError(f"{path} lacks the columns {sorted(needed - set(table.columns))}",
                           "give the manifest_share.csv that 'faceset build' wrote, not manifest.csv")
    about_file = path.with_name(SHARE_JSON) if path.name.endswith(".csv") else path.with_suffix(".json")
    about = read_json(about_file, "the folders are named from the columns alone")
    return table, about if isinstance(about, dict) else {}


def split_folders(table: pd.DataFrame, about: dict[str, Any]) -> dict[str, str]:
    """Split column -> folder under OUT_DIR, as the export laid them out."""
    given = about.get("split_columns") or {}
    columns = [c for c in table.columns if c == "split" or c.startswith("split_")]
    return {c: given.get(c, tree_folder(c)) for c in columns}


def hydrate(share_csv: str | Path, out_dir: str | Path, *, crop: bool = True, delay: float = 1.0,
            timeout: float = 30.0, contact: str | None = None) -> dict[str, Any]:
    """Download, verify and lay out every image of a shared manifest; returns (and writes
    to OUT_DIR/hydrate_report.json) what was rebuilt and what is gone. Files already in place
    from an earlier run are not downloaded again."""
    table, about = read_share(Path(share_csv))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    contact = contact or about.get("contact")
    agent = USER_AGENT.format(contact=f"; contact {contact}" if contact else "")
    folders = split_folders(table, about)
    faces = about.get("faces") if crop else None
    polite = Politeness(delay)
    attributes = attribute_values(table, [a for a in about.get("attributes", []) if a in table.columns])
    results: dict[str, dict[str, Any]] = {}
    placed: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for index, row in zip(table.index, table.to_dict("records")):
        targets = [(folder, row[c]) for c, folder in folders.items() if row.get(c) in SPLITS]
        if not targets:
            continue
        existing = [out / folder / split / row["class"] / f"{row['item_id']}{ext}"
                    for folder, split in targets[:1] for ext in (".jpg", ".png", ".webp", ".gif", ".bmp", ".tif")]
        done = next((p for p in existing if p.is_file()), None)
        if done is not None:
            suffix, outcome = done.suffix, {"status": "ok", "again": False}
        else:
            polite.wait(row["image_url"])
            data, why, gone = download(row["image_url"], agent, timeout)
            if data is None:
                results[row["item_id"]] = {"status": "gone" if gone else "failed", "why": why, "url": row["image_url"]}
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest != row["sha256"]:
                results[row["item_id"]] = {"status": "hash mismatch", "why": f"sha256 is now {digest[:12]}...",
                                           "url": row["image_url"]}
                continue
            image = face_crop(data, row["face_box"], faces) if faces and row.get("face_box") else None
            if faces and row.get("face_box") and image is None:
                results[row["item_id"]] = {"status": "failed", "why": "could not cut the face", "url": row["image_url"]}
                continue
            suffix = ".jpg" if image is not None else _extension(data)
            for folder, split in targets:
                _save(data, image, out / folder / split / row["class"] / f"{row['item_id']}{suffix}")
            outcome = {"status": "ok", "again": True}
        results[row["item_id"]] = outcome
        for folder, split in targets:
            line = {"file_name": f"{row['class']}/{row['item_id']}{suffix}", "label": row.get("label", row["class"])}
            line.update({a: values[index] for a, values in attributes.items()})
            line["item_id"] = row["item_id"]
            placed.setdefault(folder, {}).setdefault(split, []).append(line)
    for folder, splits in placed.items():
        for split, lines in splits.items():
            write_jsonl(out / folder / split / METADATA, lines)
    report = summarize(results, len(table))
    write_json(out / HYDRATE_REPORT, report)
    return report


def summarize(results: dict[str, dict[str, Any]], rows: int) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for result in results.values():
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    problems = {item: r for item, r in results.items() if r["status"] != "ok"}
    return {
        "rows": rows,
        "ok": counts.get("ok", 0),
        "downloaded": sum(1 for r in results.values() if r.get("again")),
        "gone": counts.get("gone", 0),
        "hash_mismatch": counts.get("hash mismatch", 0),
        "failed": counts.get("failed", 0),
        "problems": problems,
    }
