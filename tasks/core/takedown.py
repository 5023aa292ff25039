"""The takedown list: images people asked to have removed, excluded from every build.

The list lives with the data, not with the code or a dataset: `<data_root>/takedowns.json`
is shared by every dataset under that data root (a person removed from one dataset is
removed from all of them; an entry may be limited to one dataset with `dataset`). Builds
never remove entries, so the list survives rebuilds and `--rebuild`; they only add to an
entry the image URLs and sha256s it matched, so the next crawl excludes those before
download and the next fetch a copy of the same bytes. The list is read and written back
under its own lock (`takedowns.json.lock`).

An entry is one of

- `url`: an image URL or the URL of the page it was on (matches `image_url` or `page_url`,
  compared without fragment, default port or case of scheme and host);
- `name`: a person's name as published (matches the `name` field, ignoring case and spaces);
- `image`: an image file, matched by perceptual hash (imagehash pHash, Hamming distance
  at most 6, mirrored copies too) against the downloaded images and face crops, and by
  its exact sha256.

With an `s3://bucket/prefix` data root the list is `s3://bucket/prefix/takedowns.json`;
`faceset takedown add` updates it there and in this machine's mirror of the data root
(`$FACESET_MIRROR/<bucket>/<prefix>/`), where builds read it.

`apply` marks every match `excluded` with reason `takedown`, together with every row that
shares its bytes (`sha256`) or is a near-copy of it (`dup_group`), and deletes their files
from images/, faces/, quarantine/, splits/, variants/ and the metadata, shared
manifest and model evaluations that list them; the build's state forgets them too (stage manifests, row caches,
crawl and fetch records, logs and page cache). The row itself stays, as a tombstone that
keeps only TOMBSTONE's columns. The build calls it after crawl (URL and name entries:
excluded before anything is downloaded), after fetch and after faces (image entries); the
later stages then run again on what changed, which regenerates the reports, the review page
and the model's predictions and galleries without the person.
"""

from __future__ import annotations

import dbm
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal
from urllib.parse import urlsplit, urlunsplit

import imagehash
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from tasks.core.atomic import read_json, read_or_absent, write_json, write_parquet, write_text
from tasks.core.errors import FacesetError
from tasks.core.locks import file_lock
from tasks.core.manifest import EXCLUDED, set_status
from tasks.core.paths import METADATA, TAKEDOWNS, DatasetPaths
from tasks.core.reasons import TAKEDOWN
from tasks.core.recipe import FacesConfig
from tasks.core.text import read_spreadsheet_csv, write_spreadsheet_csv

MAX_DISTANCE = 6
Kind = Literal["url", "name", "image"]
Learned = dict[str, set[str]]  # "urls" and "sha256s" an entry matched
# folders whose files derive from an image and are named by its item_id or sha256
# what a taken-down row keeps: enough for the funnel, and for stages, which never drop a row
TOMBSTONE = ("item_id", "source", "status", "reason", "crawled_at", "last_seen")
PHASH_CACHE = "takedown-phash.json"  # under the dataset's state folder
DRAFT_SIDE = 256  # smallest side JPEGs are decoded at for hashing
# the faces stage's decompression-bomb limit: a larger image is never decoded for hashing
MAX_PIXELS: int = FacesConfig.model_fields["max_pixels"].default
UNREADABLE = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    kind: Kind
    value: str  # normalized URL, normalized name, or the image's pHash (hex)
    given: str  # what the person gave, for the record
    added_at: str
    dataset: str | None = None  # None: every dataset under the data root
    mirror: str | None = None  # pHash of the mirrored image
    sha256: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def normalize_url(url: str) -> str:
    """'HTTPS://Example.org:443/a.jpg#x' and 'example.org/a.jpg' -> '//example.org/a.jpg': the
    same picture over http and https, with or without the default port, is one entry."""
    text = url.strip()
    parts = urlsplit(text if re.match(r"^[a-z][a-z0-9+.-]*://", text, flags=re.I) else f"//{text}")
    host = (parts.hostname or "").lower()
    port = parts.port if parts.port not in (None, 80, 443) else None
    return urlunsplit(("", host if port is None else f"{host}:{port}", parts.path or "/", parts.query, ""))


def normalize_name(name: str) -> str:
    return re.sub(r"\s+", " ", str(name)).strip().casefold()


def list_path(data_root: str | Path) -> Path:
    return Path(data_root) / TAKEDOWNS


def load(data_root: str | Path) -> list[Entry]:
    """The entries of the list (none when there is no list yet)."""
    path = list_path(data_root)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Entry(**item) for item in data.get("entries", [])]
    except (ValueError, TypeError) as exc:
        raise FacesetError(f"the takedown list {path} cannot be read: {exc}",
                           "restore it from a backup or fix the JSON by hand; it is never rewritten by builds") from exc


def requests(data_root: str | Path) -> frozenset[tuple[str, str, str | None]]:
    """What the list asks to remove, without what builds learn (an image entry's URLs):
    a change here means a build must apply the list again."""
    return frozenset((e.kind, e.value, e.dataset) for e in load(data_root))


def refused_urls(data_root: str | Path, dataset: str) -> frozenset[str]:
    """The URLs (normalized) no request may go to in `dataset`: URL entries, and the image URLs
    entries learned. The crawl and the image download decline them before they are sent
    (spiders/guard.py), so a later build never fetches the person's page or image again."""
    urls: set[str] = set()
    for entry in load(data_root):
        if entry.dataset in (None, dataset):
            urls.update([entry.value] if entry.kind == "url" else [])
            urls.update(entry.extra.get("urls", []))
    return frozenset(urls)


def save(data_root: str | Path, entries: list[Entry]) -> Path:
    path = list_path(data_root)
    body = {"about": "images excluded from every faceset build under this data root (faceset takedown add)",
            "version": 1, "entries": [asdict(e) for e in entries]}
    write_text(path, json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    return path


def _editing(data_root: str | Path):
    """Held while the list is read and written back, so that an entry added by `faceset
    takedown add` is never lost to a build storing what it learned at the same moment."""
    path = list_path(data_root)
    return file_lock(path.with_name(path.name + ".lock"))


def fingerprint(data_root: str | Path) -> str:
    """A hash of the list, for build cache keys: a new entry must re-run the stages that apply it."""
    path = list_path(data_root)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def image_hashes(path: Path) -> tuple[imagehash.ImageHash, imagehash.ImageHash]:
    """pHash of an image and of its mirror image. JPEGs are decoded at reduced scale (the
    hash looks at 32x32 pixels), which makes hashing a large photo about ten times faster.

    The pixel count is read from the header before any pixel is decoded, so a
    decompression bomb (a few KB inflating to gigapixels) raises ValueError, never fills memory."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ValueError(f"image too large ({width}x{height} pixels)")
            image.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
            image = ImageOps.exif_transpose(image).convert("RGB")
            return imagehash.phash(image), imagehash.phash(ImageOps.mirror(image))


def looks_like_url(key: str) -> bool:
    """'https://...', or a bare 'host.tld/path' as copied from a browser's address bar."""
    key = key.strip()
    return bool(re.match(r"^https?://", key, flags=re.I) or re.match(r"^[\w-]+(\.[\w-]+)+(:\d+)?/\S*$", key))


def guess_kind(key: str) -> Kind:
    if Path(key).is_file():
        return "image"
    if looks_like_url(key):
        return "url"
    return "name"


def make_entry(key: str, kind: Kind | Literal["auto"] = "auto", dataset: str | None = None, note: str = "") -> Entry:
    """An entry from what a person gave: a URL, a name or an image file."""
    kind = guess_kind(key) if kind == "auto" else kind
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if kind == "url":
        if not looks_like_url(key):
            raise FacesetError(f"{key!r} is not a web address", "give the URL of the image or of its page")
        return Entry("url", normalize_url(key), key, now, dataset, note=note)
    if kind == "name":
        if not normalize_name(key):
            raise FacesetError("the name is empty", "give the name as the pages publish it")
        return Entry("name", normalize_name(key), key, now, dataset, note=note)
    path = Path(key)
    if not path.is_file():
        raise FacesetError(f"no image file at {path}", "give the path of the image to remove, a URL or a name")
    try:
        phash, mirror = image_hashes(path)
    except UNREADABLE as exc:
        raise FacesetError(f"{path} is not an image that can be read ({exc})", "give a JPEG, PNG or WebP file") from exc
    return Entry("image", str(phash), path.name, now, dataset, mirror=str(mirror),
                 sha256=hashlib.sha256(path.read_bytes()).hexdigest(), note=note)


def add(data_root: str | Path, entry: Entry) -> tuple[Entry, bool]:
    """Put an entry on the list; (the entry, False) when the same one is there already."""
    with _editing(data_root):
        entries = load(data_root)
        for existing in entries:
            if (existing.kind, existing.value, existing.dataset) == (entry.kind, entry.value, entry.dataset):
                return existing, False
        save(data_root, [*entries, entry])
    return entry, True


# ---------------------------------------------------------------- matching


def _hash_of(path: Path, cache: dict[str, str]) -> imagehash.ImageHash | None:
    """pHash of a stored file, cached by path, size and modification time; None (with a
    warning, once) for a file that cannot be hashed safely, so one bad image never stops a build."""
    try:
        stat = path.stat()
    except OSError:
        return None
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in cache:
        try:
            cache[key] = str(image_hashes(path)[0])
        except UNREADABLE as exc:
            log.warning("takedown check: %s cannot be compared with the takedown images (%s); it is skipped", path, exc)
            cache[key] = ""
    return imagehash.hex_to_hash(cache[key]) if cache[key] else None


def _stored_hashes(row: Any, paths: DatasetPaths, cache: dict[str, str]) -> list[imagehash.ImageHash]:
    found = []
    value = getattr(row, "phash", None)
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16}", value):
        found.append(imagehash.hex_to_hash(value))
    for column in ("image_path", "face_path"):
        rel = getattr(row, column, None)
        if isinstance(rel, str) and rel:
            digest = _hash_of(paths.root / rel, cache)
            if digest is not None:
                found.append(digest)
    return found


def image_matches(frame: pd.DataFrame, entries: list[Entry], paths: DatasetPaths) -> list[pd.Series]:
    """Per image entry, the rows whose image or crop is within MAX_DISTANCE of it (or of its
    mirror image), or whose bytes are the entry's file."""
    masks = [pd.Series(False, index=frame.index) for _ in entries]
    if not entries or frame.empty:
        return masks
    wanted = [[imagehash.hex_to_hash(h) for h in (e.value, e.mirror) if h] for e in entries]
    cache_file = paths.state / PHASH_CACHE
    cache = read_json(cache_file, "the stored images are hashed again")
    cache = cache if isinstance(cache, dict) else {}
    for index, row in zip(frame.index, frame.itertuples(index=False)):
        stored = _stored_hashes(row, paths, cache)
        sha = getattr(row, "sha256", None)
        for entry, hashes, mask in zip(entries, wanted, masks):
            if (isinstance(sha, str) and sha == entry.sha256) or any(
                    s - w <= MAX_DISTANCE for s in stored for w in hashes):
                mask[index] = True
    write_json(cache_file, cache, indent=None, durable=False)
    return masks


def _normalized(frame: pd.DataFrame, column: str, normalize: Callable[[str], str]) -> pd.Series:
    values = frame[column] if column in frame.columns else pd.Series(pd.NA, index=frame.index, dtype="string")
    return values.astype(object).map(lambda v: normalize(v) if isinstance(v, str) and v else None)


def matches(frame: pd.DataFrame, entries: list[Entry], paths: DatasetPaths) -> tuple[pd.Series, dict[int, Learned]]:
    """Rows any entry names, plus rows sharing their bytes or duplicate group; and, per entry
    (by position), the image URLs and sha256s it matched, which the list keeps (see remember):
    the rows themselves are blanked, and later builds must still exclude those images."""
    image_urls, page_urls = _normalized(frame, "image_url", normalize_url), _normalized(frame, "page_url", normalize_url)
    names, shas = _normalized(frame, "name", normalize_name), _normalized(frame, "sha256", str)
    by_image = iter(image_matches(frame, [e for e in entries if e.kind == "image"], paths))
    mask = pd.Series(False, index=frame.index)
    learned: dict[int, Learned] = {}
    for position, entry in enumerate(entries):
        urls = {*entry.extra.get("urls", []), *([entry.value] if entry.kind == "url" else [])}
        found = image_urls.isin(urls) | page_urls.isin(urls) | shas.isin(entry.extra.get("sha256s", []))
        if entry.kind == "name":
            found |= names == entry.value
        if entry.kind == "image":
            found |= next(by_image)
        found = found.fillna(False).astype(bool)
        mask |= found
        if found.any():
            learned[position] = {"urls": set(image_urls[found].dropna()), "sha256s": set(shas[found].dropna())}
    for column in ("sha256", "dup_group"):
        if column in frame.columns and mask.any():
            taken = set(frame.loc[mask, column].dropna())
            mask |= frame[column].isin(taken).fillna(False).astype(bool)
    return mask, learned


def remember(data_root: Path, entries: list[Entry], learned: dict[int, Learned]) -> None:
    """Store the image URLs and sha256s an entry matched in the list itself, so that the next
    build excludes them right after the crawl (before they are downloaded again) and after the fetch."""
    updates: dict[tuple[str, str, str | None], dict[str, list[str]]] = {}
    for position, found in learned.items():
        entry = entries[position]
        merged = {name: sorted(set(entry.extra.get(name, [])) | values) for name, values in found.items()}
        if any(merged[name] != sorted(entry.extra.get(name, [])) for name in merged):
            updates[(entry.kind, entry.value, entry.dataset)] = merged
    if not updates:
        return
    with _editing(data_root):
        current = load(data_root)
        for i, entry in enumerate(current):
            key = (entry.kind, entry.value, entry.dataset)
            if key in updates:
                current[i] = replace(entry, extra={**entry.extra, **updates[key]})
        save(data_root, current)


# ---------------------------------------------------------------- removal


def remove_files(rows: pd.DataFrame, paths: DatasetPaths) -> int:
    """Delete every file derived from these rows; returns how many were deleted."""
    ids = set(rows["item_id"].astype(str))
    shas = {s for s in rows.get("sha256", pd.Series(dtype=object)).dropna().astype(str) if s}
    removed = 0
    for column in [c for c in rows.columns if c.endswith("_path")]:
        for rel in rows[column].dropna():
            path = paths.root / str(rel)
            if path.is_file() and path.resolve().is_relative_to(paths.root.resolve()):
                path.unlink()
                removed += 1
    # folders whose files derive from an image and are named by its item_id or sha256
    derived = (paths.images, paths.faces, paths.quarantine, paths.splits, paths.variants, paths.state_folder("faces"))
    for base in derived:
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            if path.is_file() and (path.stem in ids or any(path.name.startswith(s) for s in shas)):
                path.unlink()
                removed += 1
    for listing in [*paths.splits.rglob(METADATA), *paths.variants.rglob(METADATA)]:
        lines = listing.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line).get("item_id") not in ids]
        if len(kept) != len(lines):
            write_text(listing, "".join(kept))
    if paths.share_csv.is_file():
        table = read_spreadsheet_csv(paths.share_csv)
        if table["item_id"].isin(ids).any():
            write_spreadsheet_csv(paths.share_csv, table[~table["item_id"].isin(ids)])
    for table in sorted(paths.models.glob("evaluations/*.csv")):  # `faceset evaluate` on this dataset's trees
        measured = read_or_absent(table, pd.read_csv, "the evaluation is left as it is")
        if measured is not None and "path" in measured.columns:
            theirs = measured["path"].astype(str).map(lambda p: Path(p).stem in ids)
            if theirs.any():
                write_text(table, measured[~theirs].to_csv(index=False))
    urls = {u for column in ("image_url", "page_url") if column in rows.columns for u in rows[column].dropna().astype(str)}
    _forget(paths, ids, urls)
    return removed


def _forget(paths: DatasetPaths, ids: set[str], urls: set[str]) -> None:
    """Take these rows out of the build's state: taken down in the stage manifests, dropped from the
    per-image row caches, from the crawl's and the fetch's records and logs and from the crawl's page
    cache, and the hashes of deleted files dropped from the takedown's own cache."""
    marks = tuple(m for m in ids | urls if m)
    for record in sorted(p for p in paths.state.rglob("*") if p.suffix in (".jsonl", ".log") and p.is_file()):
        lines = record.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        kept = [line for line in lines if not any(mark in line for mark in marks)]
        if len(kept) != len(lines):
            write_text(record, "".join(kept))
    for meta in sorted(paths.state_folder("crawl").rglob("meta")):  # Scrapy's page cache: one folder per request
        if any(mark in meta.read_text(encoding="utf-8", errors="replace") for mark in marks):
            shutil.rmtree(meta.parent, ignore_errors=True)
    for db in sorted(paths.state_folder("crawl").rglob("*.db.dir")) + sorted(paths.state_folder("crawl").rglob("*.db")):
        _forget_cached_pages(db.with_suffix("") if db.suffix == ".dir" else db, marks)
    for table in sorted(paths.stage_manifest("crawl").parent.glob("*.parquet")):
        frame = read_or_absent(table, pd.read_parquet, "that stage runs again")
        if frame is not None and "item_id" in frame.columns and frame["item_id"].isin(ids).any():
            rows = frame["item_id"].isin(ids)
            set_status(frame, rows, EXCLUDED, TAKEDOWN)
            scrub(frame, rows)
            write_parquet(table, frame)
    for part in sorted(paths.state_folder("rows").rglob("*.parquet")):
        rows = read_or_absent(part, pd.read_parquet, "its rows are processed again")
        if rows is not None and "item_id" in rows.columns and rows["item_id"].isin(ids).any():
            write_parquet(part, rows[~rows["item_id"].isin(ids)])
    cache_file = paths.state / PHASH_CACHE
    cache = read_json(cache_file, "the stored images are hashed again")
    if isinstance(cache, dict):
        write_json(cache_file, {k: v for k, v in cache.items() if Path(k.rsplit("|", 2)[0]).is_file()},
                   indent=None, durable=False)


def _forget_cached_pages(db: Path, marks: tuple[str, ...]) -> None:
    """Drop from Scrapy's DBM page cache (`<spider>.db`) every page that names a mark. The cache is
    copied without those entries and the copy put in its place: deleting a key from a dbm.dumb
    file only unlinks it, and the page's bytes would stay in the `.dat` file."""
    if dbm.whichdb(str(db)) in (None, ""):
        return
    needles = [mark.encode("utf-8") for mark in marks]
    with dbm.open(str(db), "r") as cache:
        keys = [key for key in cache.keys() if key.endswith(b"_data")]
        named = {key[: -len(b"_data")] for key in keys if any(n in cache[key] for n in needles)}
        if not named:
            return
        fresh = Path(tempfile.mkdtemp(prefix=".forget.", dir=db.parent))
        with dbm.open(str(fresh / db.name), "n") as copy:
            for key in cache.keys():
                if key.rsplit(b"_", 1)[0] not in named:
                    copy[key] = cache[key]
    for old in db.parent.glob(db.name + "*"):
        if old.is_file() and not (fresh / old.name).exists():
            old.unlink()
    for made in sorted(fresh.iterdir()):
        os.replace(made, db.parent / made.name)
    shutil.rmtree(fresh, ignore_errors=True)


def taken_down(frame: pd.DataFrame) -> pd.Series:
    """The rows a takedown excluded."""
    return ((frame["status"] == EXCLUDED) & (frame["reason"] == TAKEDOWN)).fillna(False).astype(bool)


def scrub(frame: pd.DataFrame, rows: pd.Series) -> None:
    """Blank (in place) every value of these rows but those in TOMBSTONE: a taken-down row stays
    in the manifest (stages never drop rows) but no longer names, links or fingerprints the person."""
    for column in [c for c in frame.columns if c not in TOMBSTONE]:
        frame[column] = frame[column].mask(rows)


def _paths(target: DatasetPaths | str | Path) -> DatasetPaths:
    return target if isinstance(target, DatasetPaths) else DatasetPaths(Path(target).resolve())


def apply(manifest: pd.DataFrame, target: DatasetPaths | str | Path, entries: list[Entry] | None = None) -> pd.DataFrame:
    """Mark rows on the takedown list `excluded` (reason `takedown`) and delete their files.

    `target` is the dataset folder (its parent is the data root holding the list); pass
    `entries` to use another list instead.
    """
    paths = _paths(target)
    from_list = entries is None
    entries = load(paths.root.parent) if entries is None else entries
    entries = [e for e in entries if e.dataset in (None, paths.root.name)]
    frame = manifest.copy()
    if frame.empty or not entries:
        return frame
    mask, learned = matches(frame, entries, paths)
    taken = taken_down(frame)
    new = mask.fillna(False).astype(bool) & ~taken
    if from_list and learned:
        remember(paths.root.parent, entries, learned)
    if new.any():
        set_status(frame, new, EXCLUDED, TAKEDOWN)
        remove_files(frame[new], paths)
    scrub(frame, new | taken)  # taken too: a re-crawl refreshes the fields of a row it finds again
    return frame
