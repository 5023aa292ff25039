"""The dedupe stage: one copy of each photo, and faces of one person grouped.

Per kept row (batched with tasks.parallel, `process_batch`):
- the face crop is looked at by the describer (dlib: face finder, 5 landmarks, ResNet
  descriptor, `tasks.identity`). The pHash is taken of the *aligned* inner face (the
  landmarks put eyes and nose in fixed places), so a thumbnail, a slightly different
  crop or the face cut out onto another background hash alike, which a pHash of the
  whole crop misses. `phash_mirror` is the same hash of the left-right flipped crop.
  Without a face (or with `faces: none`) the whole crop is hashed (`hash_kind` image).
- blank and placeholder crops (almost one grey level, or a degenerate hash) are
  quarantined as `blank image` first, so they cannot form one giant cluster.

Over the whole table (`cluster`):
1. reference sets (`dedupe.reference`): a row matching an image of an earlier dataset's
   test split becomes `duplicate`, `in reference set <name> (test split)`;
2. pairs: same bytes (sha256), same pixels (pixel_sha256), or near hashes found by a
   multi-index hash search (`tasks.hashindex`, never all pairs). Aligned faces match
   within `face_max_distance` only if their descriptors agree within
   `descriptor_distance`: on tight face crops a pHash distance of 8 already joins
   different people. Faces whose descriptors almost coincide (`same_photo_distance`)
   match up to CLOSE_FACE_HASH bits. Whole images match within `max_distance`.
   With `mirror: true` each mirrored hash is searched too;
3. union-find clusters pairs into `dup_group` (the keeper's item_id). The keeper is the
   largest face (face box area in source pixels; else the image's), then the sharpest
   (`face_blur`), then the most confident (`face_score`), then the smallest item_id.
   The others become `duplicate`, `duplicate of <keeper>`, with `dup_match` saying how;
4. identity (`dedupe.identity`): kept faces are grouped into `person_group` by
   `tasks.identity.group_people` (no chaining; names corroborate). Duplicates take
   their keeper's group. No image is ever removed for identity.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from tasks.dedupe import identity
from tasks.core.errors import FacesetError
from tasks.core.quarantine import quarantine
from tasks.dedupe.hashindex import HashIndex, hamming, to_uint64
from tasks.core.manifest import DUPLICATE, FAILED, KEPT, QUARANTINED, kept, with_columns
from tasks.core.parallel import Mapper, default_workers, map_frame
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe
from tasks.core.unionfind import UnionFind
from tasks.core.vectors import decode_vectors, encode_vector

BLANK = "blank image"
FACE, WHOLE = "face", "image"  # hash_kind: aligned inner face, or the whole crop
INNER = slice(8, 72)  # the inner 64 px of the 80 px aligned chip: forehead to chin, no background
DEGENERATE = {0, 2**64 - 1, 2**63}  # hashes of flat images (only the DC term, or nothing)
SAMPLE_CLUSTERS = 24
CLOSE_FACE_HASH = 24  # aligned faces of different people: ~25 % of pairs within 20 bits, unrelated images ~32

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


# ---------------------------------------------------------------- per image


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


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    return with_columns(frame, COLUMNS)


def process_batch(rows: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *,
                  describer: identity.Describer | None = None) -> pd.DataFrame:
    """Hash and describe a batch of kept rows; blank crops are quarantined here."""
    if recipe.faces is not None and describer is None:
        describer = identity.default_describer()
    out = _typed(rows.copy())
    for index, row in zip(rows.index, rows.to_dict("records")):
        for column, value in process_row(row, recipe, paths, describer if recipe.faces is not None else None).items():
            out.at[index, column] = value
    return out


# ---------------------------------------------------------------- pairs and clusters



def descriptor_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance; NaN where either descriptor is missing."""
    return np.sqrt(((a - b) ** 2).sum(axis=1))


def similar_pairs(query: pd.DataFrame, base: pd.DataFrame, recipe: Recipe, *, self_join: bool) -> list[tuple[int, int, str]]:
    """(query position, base position, how) for perceptually similar rows.

    Only hashes of one kind are compared. Face pairs need descriptor agreement; for a
    face without a descriptor (a fake describer, say) the whole-image radius applies.
    """
    config = recipe.dedupe
    found: list[tuple[int, int, str]] = []
    for kind, radius in ((FACE, max(config.face_max_distance, config.max_distance)), (WHOLE, config.max_distance)):
        qpos = np.flatnonzero((query["hash_kind"] == kind).fillna(False).to_numpy() & query["phash"].notna().to_numpy())
        bpos = np.flatnonzero((base["hash_kind"] == kind).fillna(False).to_numpy() & base["phash"].notna().to_numpy())
        if not len(qpos) or not len(bpos):
            continue
        index = HashIndex(to_uint64(base["phash"].iloc[bpos]), radius)
        qdesc = descriptor_array(query["face_descriptor"].iloc[qpos]) if kind == FACE else None
        bdesc = descriptor_array(base["face_descriptor"].iloc[bpos]) if kind == FACE else None
        sources = [("phash", "similar " + kind)]
        if config.mirror:
            sources.append(("phash_mirror", "similar " + kind + " (mirrored)"))
        for column, how in sources:
            has = query[column].iloc[qpos].notna().to_numpy()
            q, b, dist = index.search(to_uint64(query[column].iloc[qpos[has]]))
            q = qpos[has][q]
            b_local = b
            b = bpos[b]
            if kind == FACE:
                ddist = descriptor_distance(qdesc[np.searchsorted(qpos, q)], bdesc[b_local])
                ok = np.where(np.isnan(ddist), dist <= config.max_distance,
                              (dist <= config.face_max_distance) & (ddist <= config.descriptor_distance))
            else:
                ok = np.ones(len(q), dtype=bool)
            if self_join:
                ok &= q != b
            found.extend(zip(q[ok].tolist(), b[ok].tolist(), [how] * int(ok.sum())))
        if kind == FACE:
            found.extend(close_faces(query, base, qpos, bpos, qdesc, bdesc, recipe, self_join=self_join))
    return found


def close_faces(query: pd.DataFrame, base: pd.DataFrame, qpos: np.ndarray, bpos: np.ndarray,
                qdesc: np.ndarray, bdesc: np.ndarray, recipe: Recipe, *, self_join: bool) -> list[tuple[int, int, str]]:
    """Faces whose descriptors almost coincide (`same_photo_distance`) and whose hashes
    are not far apart (CLOSE_FACE_HASH). For some faces many pHash bits sit near the
    median and flip between copies of one photo (a face cut out onto another background
    reached 22 bits); the descriptor is then the evidence, the hash only rules out
    photos of another pose or light.
    """
    config = recipe.dedupe
    i, j, _ = identity.pairwise_within(qdesc, config.same_photo_distance, None if self_join else bdesc)
    if not len(i):
        return []
    qh = to_uint64(query["phash"].iloc[qpos[i]])
    dist = hamming(qh, to_uint64(base["phash"].iloc[bpos[j]]))
    how = np.full(len(i), "close face", dtype=object)
    if config.mirror:
        mirrored = query["phash_mirror"].iloc[qpos[i]].fillna(query["phash"].iloc[qpos[i]])
        flipped = hamming(to_uint64(mirrored), to_uint64(base["phash"].iloc[bpos[j]]))
        how = np.where(flipped < dist, "close face (mirrored)", how)
        dist = np.minimum(dist, flipped)
    ok = dist <= CLOSE_FACE_HASH
    return list(zip(qpos[i][ok].tolist(), bpos[j][ok].tolist(), how[ok].tolist()))


def exact_pairs(frame: pd.DataFrame) -> list[tuple[int, int, str]]:
    """Rows with the same bytes or the same decoded pixels, chained to the group's first."""
    found = []
    for column, how in (("sha256", "same bytes"), ("pixel_sha256", "same pixels")):
        if column not in frame:
            continue
        values = frame[column].astype("string")
        for _, positions in values[values.notna()].groupby(values[values.notna()]).indices.items():
            found.extend((int(positions[0]), int(p), how) for p in positions[1:])
    return found


def keeper_order(frame: pd.DataFrame) -> pd.Series:
    """Rank for choosing a cluster's keeper: largest face, then sharpest, then surest.

    Face size is the face box area in the source photo (faces stage, [x, y, w, h]);
    without a box, the image's area.
    """
    def box_area(text: Any) -> float:
        try:
            box = json.loads(text)
            return float(box[2]) * float(box[3])
        except (TypeError, ValueError, IndexError, KeyError):
            return math.nan

    area = frame["face_box"].map(box_area) if "face_box" in frame else pd.Series(math.nan, index=frame.index)
    if "image_width" in frame and "image_height" in frame:
        image_area = pd.to_numeric(frame["image_width"], errors="coerce") * pd.to_numeric(frame["image_height"], errors="coerce")
        area = area.fillna(image_area.astype(float))
    keys = pd.DataFrame({
        "area": area.astype(float).fillna(0),
        "blur": pd.to_numeric(frame.get("face_blur", pd.Series(0, index=frame.index)), errors="coerce").astype(float).fillna(0),
        "score": pd.to_numeric(frame.get("face_score", pd.Series(0, index=frame.index)), errors="coerce").astype(float).fillna(0),
        "item_id": frame["item_id"].astype(str),
    }, index=frame.index)
    ranked = keys.sort_values(["area", "blur", "score", "item_id"], ascending=[False, False, False, True], kind="stable")
    return pd.Series(np.arange(len(ranked)), index=ranked.index).reindex(frame.index)


# ---------------------------------------------------------------- reference sets


def load_reference(spec: str) -> tuple[str, pd.DataFrame]:
    """An earlier dataset's manifest (a .parquet/.csv file or its dataset folder) and its name."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "manifest.parquet" if (path / "manifest.parquet").is_file() else path / "manifest.csv"
    if not path.is_file():
        raise FacesetError(f"dedupe.reference: no manifest at {spec}",
                           "give the path of an earlier dataset's folder or its manifest.parquet / manifest.csv")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    if "split" not in frame:
        raise FacesetError(f"dedupe.reference: {path} has no 'split' column",
                           "use the manifest of a dataset that was built through the split stage")
    return path.parent.name, frame


def reference_matches(rows: pd.DataFrame, recipe: Recipe) -> pd.Series:
    """For each row, the reason it is in a reference set's test split (or NA)."""
    reasons = pd.Series(pd.NA, index=rows.index, dtype="string")
    for spec in recipe.dedupe.reference:
        name, ref = load_reference(spec)
        test = _typed(ref[ref["split"].astype("string") == "test"].reset_index(drop=True))
        if not len(test):
            continue
        local = rows.reset_index(drop=True)
        pairs = exact_pairs(pd.concat([local, test], ignore_index=True))
        # a group's first position is its smallest, so a group holding a row starts with it
        firsts = {a for a, b, _ in pairs if b >= len(local) > a}
        hits = firsts | {b for a, b, _ in pairs if a in firsts and b < len(local)}
        hits |= {q for q, _, _ in similar_pairs(local, test, recipe, self_join=False)}
        hit_index = rows.index[sorted(hits)]
        reasons.loc[hit_index] = reasons.loc[hit_index].fillna(f"in reference set {name} (test split)")
    return reasons


# ---------------------------------------------------------------- the stage


def cluster(manifest: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """Mark duplicates among kept rows and group people; returns the manifest."""
    out = _typed(manifest.copy())
    rows = out[kept(out) & out["phash"].notna()]
    if recipe.dedupe.reference and len(rows):
        in_reference = reference_matches(rows, recipe)
        hit = in_reference.notna()
        out.loc[hit[hit].index, "status"] = DUPLICATE
        out.loc[hit[hit].index, "reason"] = in_reference[hit]
        rows = rows[~hit]
    local = rows.reset_index(drop=True)
    finder = UnionFind(len(local))
    how_joined: dict[int, str] = {}
    for a, b, how in exact_pairs(local) + similar_pairs(local, local, recipe, self_join=True):
        if finder.find(a) != finder.find(b):
            how_joined.setdefault(max(a, b), how)
            how_joined.setdefault(min(a, b), how)
        finder.union(a, b)
    roots = pd.Series([finder.find(i) for i in range(len(local))])
    rank = keeper_order(local)
    keeper_pos = rank.groupby(roots).idxmin()
    keeper_of = roots.map(keeper_pos)
    keeper_ids = local["item_id"].astype("string").to_numpy()[keeper_of.to_numpy()] if len(local) else np.array([])
    out.loc[rows.index, "dup_group"] = keeper_ids
    is_dup = (keeper_of.to_numpy() != np.arange(len(local)))
    dup_index = rows.index[is_dup]
    out.loc[dup_index, "status"] = DUPLICATE
    out.loc[dup_index, "reason"] = [f"duplicate of {k}" for k in keeper_ids[is_dup]]
    out.loc[dup_index, "dup_match"] = [how_joined.get(int(p), "similar") for p in np.flatnonzero(is_dup)]
    if recipe.dedupe.identity:
        out = group_identities(out, recipe)
    return _typed(out)


def group_identities(out: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """person_group for kept faces (descriptor clusters) and for their duplicates."""
    faces = out[kept(out) & out["face_descriptor"].notna()]
    if len(faces):
        config = recipe.dedupe
        names = None
        if config.name_field and config.name_field in faces:
            names = [identity.normalise_name(v) for v in faces[config.name_field]]
        labels = identity.group_people(descriptor_array(faces["face_descriptor"]), config.identity_threshold,
                                       names, config.name_threshold)
        first = pd.Series(faces["item_id"].astype(str).to_numpy()).groupby(labels).transform("min")
        out.loc[faces.index, "person_group"] = first.to_numpy()
    alone = kept(out) & out["person_group"].isna() & out["phash"].notna()
    out.loc[alone, "person_group"] = out.loc[alone, "item_id"]
    groups = out.loc[kept(out)].set_index("item_id")["person_group"]
    dups = (out["status"] == DUPLICATE) & out["dup_group"].notna()
    out.loc[dups, "person_group"] = out.loc[dups, "dup_group"].map(groups).astype("string")
    return out


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *,
        describer: identity.Describer | None = None, mapper: Mapper | None = None) -> pd.DataFrame:
    """Hash new kept rows (batched), then cluster the whole table; no row is dropped."""
    out = _typed(manifest.copy() if manifest.index.is_unique else manifest.reset_index(drop=True))
    started = time.perf_counter()
    todo = out[kept(out) & out["phash"].isna()]
    if len(todo):
        size = max(1, min(32, math.ceil(len(todo) / (4 * default_workers()))))
        work = functools.partial(process_batch, recipe=recipe, paths=paths, describer=describer)
        done = map_frame(work, todo, size, mapper)
        for column in [*COLUMNS, "status", "reason"]:
            out.loc[done.index, column] = done[column]
        out = _typed(out)
    hashed = time.perf_counter()
    out = cluster(out, recipe)
    summarize(out, recipe, paths, timings={"hash_s": round(hashed - started, 3),
                                           "cluster_s": round(time.perf_counter() - hashed, 3),
                                           "hashed_rows": len(todo)})
    return out


# ---------------------------------------------------------------- report


def attribute_groups(frame: pd.DataFrame, column: str) -> pd.Series:
    """Values to report merge rates by; numbers (age) are binned by decade."""
    numbers = pd.to_numeric(frame[column], errors="coerce")
    if numbers.notna().mean() > 0.8:
        low = (numbers // 10 * 10).astype("Int64")
        return (low.astype("string") + "-" + (low + 9).astype("string")).astype("string")
    return frame[column].astype("string")


def summarize(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *,
              timings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Figures over the whole manifest; written to reports/dedupe.json."""
    frame = _typed(manifest.copy())
    seen = frame[frame["phash"].notna() | (frame["reason"] == BLANK)]
    dups = frame[(frame["status"] == DUPLICATE)]
    clustered = frame[frame["dup_group"].notna() & frame["status"].isin([KEPT, DUPLICATE])]
    sizes = clustered.groupby("dup_group").size()
    clusters = []
    for group in sizes[sizes > 1].sort_values(ascending=False).index[:SAMPLE_CLUSTERS]:
        members = clustered[clustered["dup_group"] == group]
        clusters.append({"keeper": str(group), "members": [
            {"item_id": str(r.item_id), "path": None if pd.isna(r.face_path) else str(r.face_path),
             "match": "keeper" if r.item_id == group else str(r.dup_match)}
            for r in members.itertuples()]})
    summary: dict[str, Any] = {
        "rows_compared": int(len(seen)),
        "kept": int((seen["status"] == KEPT).sum()),
        "blank": int((frame["reason"] == BLANK).sum()),
        "duplicates": int(dups["reason"].astype("string").str.startswith("duplicate of").sum()),
        "in_reference_sets": int(dups["reason"].astype("string").str.startswith("in reference set").sum()),
        "duplicates_by_match": {str(k): int(v) for k, v in dups["dup_match"].value_counts().items()},
        "duplicate_clusters": int((sizes > 1).sum()),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "hash_kinds": {str(k): int(v) for k, v in seen["hash_kind"].value_counts().items()},
        "clusters": clusters,
        "settings": recipe.dedupe.model_dump(mode="json"),
        "keeper_rule": "largest face (box area in the source photo), then sharpest (face_blur), "
                       "then highest face_score, then smallest item_id",
        "timings": timings or {},
    }
    if recipe.dedupe.identity:
        summary["identity"] = identity_summary(frame, recipe)
    target = paths.report_json("dedupe")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    tmp.replace(target)
    return summary


def identity_summary(frame: pd.DataFrame, recipe: Recipe) -> dict[str, Any]:
    """Person groups and merge rates per group of each recipe attribute."""
    faces = frame[kept(frame) & frame["face_descriptor"].notna()]
    sizes = faces.groupby("person_group").size() if len(faces) else pd.Series(dtype=int)
    result: dict[str, Any] = {
        "faces": int(len(faces)),
        "person_groups": int(len(sizes)),
        "faces_in_shared_groups": int(sizes[sizes > 1].sum()) if len(sizes) else 0,
        "largest_person_group": int(sizes.max()) if len(sizes) else 0,
        "threshold": recipe.dedupe.identity_threshold,
        "name_threshold": recipe.dedupe.name_threshold if recipe.dedupe.name_field else None,
        "merge_rates": {},
    }
    if len(faces):
        descriptors = descriptor_array(faces["face_descriptor"])
        labels = pd.factorize(faces["person_group"])[0]
        for column in recipe.attributes:
            if column in faces:
                result["merge_rates"][column] = identity.merge_rates(
                    descriptors, labels, attribute_groups(faces, column).reset_index(drop=True),
                    recipe.dedupe.identity_threshold)
    return result




def descriptor_array(values: pd.Series) -> np.ndarray:
    """Face descriptors back as an (n, 128) array; rows without one are NaN."""
    return decode_vectors(values, width=128)
