"""Rebuild a dataset's image folders from its shareable manifest (`manifest_share.csv`).

Face datasets are often shared as lists of URLs rather than images: the images stay the
property of their owners, and a person who removes their photo from the web removes it
from every copy rebuilt afterwards. `hydrate` downloads each image again, politely (one
request at a time, a pause per host, a User-Agent that says who is asking), keeps it only
if its sha256 is the one recorded, crops the face from the recorded box as the build did,
and lays the files out as the export stage does. What could not be had is reported, in
four kinds: `gone` (the server says so: 404, 410, ...), `hash mismatch` (the URL now
serves another image), `failed` (network errors, incomplete or slow downloads, damaged
rows: worth another try later, or a word with whoever shared the manifest) and `refused`.

A shared manifest comes from someone else, so it is read as hostile: its URLs go through
the URL policy (tasks.export.download), and its classes, item ids and split folders must
be plain names inside OUT_DIR (tasks.core.safepaths). A row that breaks a rule is
`refused` or `failed` with its reason, and the other rows are rebuilt as usual.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import OpenerDirector

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import ValidationError

from tasks.core.atomic import atomic_write, read_json, write_bytes, write_json, write_jsonl
from tasks.core.errors import FacesetError
from tasks.core.paths import HYDRATE_REPORT, METADATA, SHARE_JSON, SPLITS, tree_folder
from tasks.core.recipe import FacesConfig
from tasks.core.safepaths import UnsafePath, child, inside
from tasks.core.text import read_spreadsheet_csv
from tasks.core.urls import UrlPolicy
from tasks.export.download import Outcome, download, opener
from tasks.export.stage import attribute_values

USER_AGENT = "faceset-hydrate/0.1 (research dataset rebuild{contact})"
EXTENSIONS = (".jpg", ".png", ".webp", ".gif", ".bmp", ".tif")
SHA256 = re.compile(r"[0-9a-f]{64}")


class DamagedRow(ValueError):
    """A value of one row that cannot be used; the message is the row's reason."""


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


def face_box(text: str) -> np.ndarray:
    """The recorded box (x, y, width, height), or DamagedRow."""
    try:
        box = [float(v) for v in json.loads(text)]
    except (ValueError, TypeError):
        raise DamagedRow(f"damaged row: face_box {text!r} is not a list of four numbers") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise DamagedRow(f"damaged row: face_box {text!r} is not x, y, width, height")
    return np.array(box, dtype=np.float32)


def faces_config(faces: Any) -> FacesConfig | None:
    """The build's face settings from manifest_share.json (None: keep whole images)."""
    if not isinstance(faces, dict):
        return None
    settings = {k: v for k, v in faces.items() if k in FacesConfig.model_fields}
    try:
        return FacesConfig.model_validate({**settings, "min_bytes": 0})  # the bytes are verified: no size rule
    except ValidationError as exc:
        raise FacesetError(f"the face settings in {SHARE_JSON} are damaged: {exc.errors()[0]['msg']}",
                           "run again with --no-crop to keep whole images") from None


def face_crop(data: bytes, box: np.ndarray, config: FacesConfig) -> np.ndarray | None:
    """The face cut from the verified original, as the faces stage cut it (decode gate,
    then autocrop around the recorded box)."""
    from tasks.vision.decode import decode_bytes
    from tasks.vision.detector import crop_face

    decoded = decode_bytes(data, config)
    return crop_face(decoded.rgb, box, config) if decoded.ok else None


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
    """The shared manifest (every value as text, "" when empty) and the JSON beside it (which may be missing)."""
    if not path.is_file():
        raise FacesetError(f"no shared manifest at {path}", "give the manifest_share.csv of a dataset built by faceset")
    table = read_spreadsheet_csv(path).fillna("")
    needed = {"item_id", "image_url", "sha256", "class"}
    if not needed <= set(table.columns):
        raise FacesetError(f"{path} lacks the columns {sorted(needed - set(table.columns))}",
                           "give the manifest_share.csv that 'faceset build' wrote, not manifest.csv")
    about_file = path.with_name(SHARE_JSON) if path.name.endswith(".csv") else path.with_suffix(".json")
    about = read_json(about_file, "the folders are named from the columns alone")
    return table, about if isinstance(about, dict) else {}


def split_folders(table: pd.DataFrame, about: dict[str, Any], out: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Split column -> its folder under `out`, as the export laid them out; and the columns
    whose folder would leave `out`, with why (those trees are not written)."""
    given = about.get("split_columns")
    given = given if isinstance(given, dict) else {}
    folders: dict[str, Path] = {}
    refused: dict[str, str] = {}
    for column in (c for c in table.columns if c == "split" or c.startswith("split_")):
        try:
            folders[column] = inside(out, str(given.get(column, tree_folder(column))), "split folder")
        except UnsafePath as exc:
            refused[column] = exc.message
    return folders, refused


def _contact(about: dict[str, Any], contact: str | None) -> str:
    """The User-Agent's contact part: one line, whatever the shared JSON holds."""
    value = contact or about.get("contact")
    return f"; contact {' '.join(str(value).split())}" if value else ""


@dataclass
class _Fetcher:
    """Downloads under one policy, politely."""

    user_agent: str
    timeout: float
    policy: UrlPolicy
    polite: Politeness
    director: OpenerDirector

    def __call__(self, url: str) -> Outcome:
        self.polite.wait(url)
        return download(url, self.policy, self.user_agent, self.timeout, self.director)


def _rebuild(row: dict[str, Any], targets: list[tuple[Path, str]], config: FacesConfig | None,
             fetch: _Fetcher) -> tuple[dict[str, Any], str]:
    """One row's files in every tree it belongs to: (its outcome, the files' suffix)."""
    folders = [child(folder / split, row["class"], "class") for folder, split in targets]
    child(folders[0], row["item_id"], "item_id")
    box = face_box(row["face_box"]) if config is not None and row.get("face_box") else None
    if not SHA256.fullmatch(row["sha256"]):
        raise DamagedRow(f"damaged row: sha256 {row['sha256']!r} is not a SHA-256")
    done = next((folders[0] / f"{row['item_id']}{ext}" for ext in EXTENSIONS
                 if (folders[0] / f"{row['item_id']}{ext}").is_file()), None)
    if done is not None:
        return {"status": "ok", "again": False}, done.suffix
    url = row["image_url"]
    got = fetch(url)
    if got.data is None:
        return {"status": got.kind, "why": got.why, "url": url}, ""
    digest = hashlib.sha256(got.data).hexdigest()
    if digest != row["sha256"]:
        return {"status": "hash mismatch", "why": f"sha256 is now {digest[:12]}...", "url": url}, ""
    image = face_crop(got.data, box, config) if box is not None else None
    if box is not None and image is None:
        return {"status": "failed", "why": "could not cut the face", "url": url}, ""
    suffix = ".jpg" if image is not None else _extension(got.data)
    for folder in folders:
        _save(got.data, image, folder / f"{row['item_id']}{suffix}")
    return {"status": "ok", "again": True}, suffix


def hydrate(share_csv: str | Path, out_dir: str | Path, *, crop: bool = True, delay: float = 1.0,
            timeout: float = 30.0, contact: str | None = None, allow_private_hosts: tuple[str, ...] = ()
            ) -> dict[str, Any]:
    """Download, verify and lay out every image of a shared manifest; returns (and writes
    to OUT_DIR/hydrate_report.json) what was rebuilt and what is not. Files already in place
    from an earlier run are not downloaded again. `timeout` bounds each whole download;
    `allow_private_hosts` names the hosts, addresses or networks on the user's own network
    that the manifest's URLs may reach (none by default)."""
    table, about = read_share(Path(share_csv))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = faces_config(about.get("faces")) if crop else None
    policy = UrlPolicy.allowing(allow_private_hosts)
    fetch = _Fetcher(USER_AGENT.format(contact=_contact(about, contact)), timeout, policy, Politeness(delay),
                     opener(policy))
    folders, refused_folders = split_folders(table, about, out)
    wanted = about.get("attributes")
    attributes = attribute_values(table, [a for a in wanted if isinstance(a, str) and a in table.columns]
                                  if isinstance(wanted, list) else [])
    results: dict[str, dict[str, Any]] = {}
    placed: dict[Path, dict[str, list[dict[str, Any]]]] = {}
    for index, row in zip(table.index, table.to_dict("records")):
        refused_here = [why for column, why in refused_folders.items() if row.get(column) in SPLITS]
        targets = [(folder, row[c]) for c, folder in folders.items() if row.get(c) in SPLITS]
        if not targets:
            if refused_here:
                results[row["item_id"]] = {"status": "refused", "why": refused_here[0], "url": row["image_url"]}
            continue
        try:
            outcome, suffix = _rebuild(row, targets, config, fetch)
        except UnsafePath as exc:
            outcome = {"status": "refused", "why": exc.message, "url": row["image_url"]}
        except DamagedRow as exc:
            outcome = {"status": "failed", "why": str(exc), "url": row["image_url"]}
        results[row["item_id"]] = outcome
        if outcome["status"] != "ok":
            continue
        for folder, split in targets:
            line = {"file_name": f"{row['class']}/{row['item_id']}{suffix}", "label": row.get("label", row["class"])}
            line.update({a: values[index] for a, values in attributes.items()})
            line["item_id"] = row["item_id"]
            placed.setdefault(folder, {}).setdefault(split, []).append(line)
    for folder, splits in placed.items():
        for split, lines in splits.items():
            write_jsonl(folder / split / METADATA, lines)
    report = summarize(results, len(table), refused_folders)
    write_json(out / HYDRATE_REPORT, report)
    return report


def summarize(results: dict[str, dict[str, Any]], rows: int, refused_folders: dict[str, str]) -> dict[str, Any]:
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
        "refused": counts.get("refused", 0),
        "refused_folders": refused_folders,
        "problems": problems,
    }
