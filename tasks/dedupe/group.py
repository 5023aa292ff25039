"""Dedupe, over the whole table: pairs, clusters and their keepers, reference sets, people.

1. reference sets (`dedupe.reference`): a row matching an image of an earlier dataset's
   test split becomes `duplicate`, `in reference set <name> (test split)`;
2. pairs: same bytes (sha256), same pixels (pixel_sha256), or near hashes found by a
   multi-index hash search (`hashindex.py`, never all pairs). Aligned faces match
   within `face_max_distance` only if their descriptors agree within
   `descriptor_distance`: on tight face crops a pHash distance of 8 already joins
   different people. Faces whose descriptors almost coincide (`same_photo_distance`)
   match up to CLOSE_FACE_HASH bits. Whole images match within `max_distance`.
   With `mirror: true` each mirrored hash is searched too;
3. union-find clusters pairs into `dup_group` (the keeper's item_id). The keeper is the
   largest face (face box area in source pixels; else the image's), then the sharpest
   (`face_blur`), then the most confident (`face_score`), then the smallest item_id, so
   a group's name never depends on the order of the rows.
   The others become `duplicate`, `duplicate of <keeper>`, with `dup_match` saying how;
4. identity (`dedupe.identity`): kept faces are grouped into `person_group` by
   `identity.group_people` (no chaining; names corroborate), named by their smallest
   item_id. Duplicates take their keeper's group. No image is ever removed for identity.

With one row per face (`faces: {each: true}`) a face row carries its image's sha256 and
pixel_sha256: same bytes or pixels then match face by face (the same `face_index`), so
a re-posted group photo duplicates each of its faces; two faces of one image (`parent_id`)
are never in one cluster (pairs are joined in order, and a pair that would put two faces
of one photo together is left out), nor one person; and ties in the keeper rule go to the
faces of one image, so a re-posted photo's faces are all kept from the same copy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.errors import FacesetError
from tasks.core.manifest import DUPLICATE, kept
from tasks.core.paths import DatasetPaths
from tasks.core.reasons import duplicate_of, in_reference_set
from tasks.core.recipe import Recipe
from tasks.core.text import read_spreadsheet_csv
from tasks.core.unionfind import UnionFind
from tasks.core.vectors import decode_vectors
from tasks.dedupe import identity
from tasks.dedupe.encode import FACE, WHOLE, typed
from tasks.dedupe.hashindex import HashIndex, hamming, to_uint64

CLOSE_FACE_HASH = 24  # aligned faces of different people: ~25 % of pairs within 20 bits, unrelated images ~32


def descriptor_array(values: pd.Series) -> np.ndarray:
    """Face descriptors back as an (n, 128) array; rows without one are NaN."""
    return decode_vectors(values, width=128)


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
    """Rows with the same bytes or the same decoded pixels, chained to the group's first.

    Face rows of one image share its hashes: they match only the same face of a copy."""
    found = []
    face = frame["face_index"].astype("string") if "face_index" in frame else pd.Series(pd.NA, index=frame.index, dtype="string")
    for column, how in (("sha256", "same bytes"), ("pixel_sha256", "same pixels")):
        if column not in frame:
            continue
        values = frame[column].astype("string")
        values = values.where(face.isna(), values + "#" + face)
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
    image = frame["parent_id"].astype("string").fillna(frame["item_id"].astype("string")) if "parent_id" in frame else frame["item_id"]
    keys = pd.DataFrame({
        "area": area.astype(float).fillna(0),
        "blur": pd.to_numeric(frame.get("face_blur", pd.Series(0, index=frame.index)), errors="coerce").astype(float).fillna(0),
        "score": pd.to_numeric(frame.get("face_score", pd.Series(0, index=frame.index)), errors="coerce").astype(float).fillna(0),
        "image": image.astype(str),  # equal faces of two copies: every face kept from the same copy
        "item_id": frame["item_id"].astype(str),
    }, index=frame.index)
    ranked = keys.sort_values(["area", "blur", "score", "image", "item_id"], ascending=[False, False, False, True, True],
                              kind="stable")
    return pd.Series(np.arange(len(ranked)), index=ranked.index).reindex(frame.index)


# ---------------------------------------------------------------- reference sets


def load_reference(spec: str) -> tuple[str, pd.DataFrame]:
    """An earlier dataset's manifest (a .parquet/.csv file or its dataset folder) and its name."""
    path = Path(spec).expanduser()
    if path.is_dir():
        dataset = DatasetPaths(path)
        path = dataset.manifest if dataset.manifest.is_file() else dataset.manifest_csv
    if not path.is_file():
        raise FacesetError(f"dedupe.reference: no manifest at {spec}",
                           "give the path of an earlier dataset's folder or its manifest.parquet / manifest.csv")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else read_spreadsheet_csv(path)
    if "split" not in frame:
        raise FacesetError(f"dedupe.reference: {path} has no 'split' column",
                           "use the manifest of a dataset that was built through the split stage")
    return path.parent.name, frame


def reference_matches(rows: pd.DataFrame, recipe: Recipe) -> pd.Series:
    """For each row, the reason it is in a reference set's test split (or NA)."""
    reasons = pd.Series(pd.NA, index=rows.index, dtype="string")
    for spec in recipe.dedupe.reference:
        name, ref = load_reference(spec)
        test = typed(ref[ref["split"].astype("string") == "test"].reset_index(drop=True))
        if not len(test):
            continue
        local = rows.reset_index(drop=True)
        pairs = exact_pairs(pd.concat([local, test], ignore_index=True))
        # a group's first position is its smallest, so a group holding a row starts with it
        firsts = {a for a, b, _ in pairs if b >= len(local) > a}
        hits = firsts | {b for a, b, _ in pairs if a in firsts and b < len(local)}
        hits |= {q for q, _, _ in similar_pairs(local, test, recipe, self_join=False)}
        hit_index = rows.index[sorted(hits)]
        reasons.loc[hit_index] = reasons.loc[hit_index].fillna(in_reference_set(name))
    return reasons


# ---------------------------------------------------------------- clusters


def cluster(manifest: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """Mark duplicates among kept rows and group people; returns the manifest."""
    out = typed(manifest.copy())
    # in item_id order, so that pairs, how each was joined and identity clusters never
    # depend on the order in which the crawl found the rows
    rows = out[kept(out) & out["phash"].notna()].sort_values("item_id", kind="stable")
    if recipe.dedupe.reference and len(rows):
        in_reference = reference_matches(rows, recipe)
        hit = in_reference.notna()
        out.loc[hit[hit].index, "status"] = DUPLICATE
        out.loc[hit[hit].index, "reason"] = in_reference[hit]
        rows = rows[~hit]
    local = rows.reset_index(drop=True)
    finder = UnionFind(len(local))
    how_joined: dict[int, str] = {}
    # the photos each cluster holds faces of: two faces of one photo (two people, or one person
    # twice) never end up in one cluster, not even through a copy of the photo
    parent = local["parent_id"].astype("string") if "parent_id" in local else pd.Series(pd.NA, index=local.index)
    photos: dict[int, set[str]] = {i: set() if pd.isna(p) else {str(p)} for i, p in enumerate(parent)}
    for a, b, how in exact_pairs(local) + similar_pairs(local, local, recipe, self_join=True):
        root_a, root_b = finder.find(a), finder.find(b)
        if root_a == root_b or photos[root_a] & photos[root_b]:
            continue
        how_joined.setdefault(max(a, b), how)
        how_joined.setdefault(min(a, b), how)
        finder.union(a, b)
        photos[finder.find(a)] = photos[root_a] | photos[root_b]
    roots = pd.Series([finder.find(i) for i in range(len(local))])
    rank = keeper_order(local)
    keeper_pos = rank.groupby(roots).idxmin()
    keeper_of = roots.map(keeper_pos)
    keeper_ids = local["item_id"].astype("string").to_numpy()[keeper_of.to_numpy()] if len(local) else np.array([])
    out.loc[rows.index, "dup_group"] = keeper_ids
    is_dup = (keeper_of.to_numpy() != np.arange(len(local)))
    dup_index = rows.index[is_dup]
    out.loc[dup_index, "status"] = DUPLICATE
    out.loc[dup_index, "reason"] = [duplicate_of(k) for k in keeper_ids[is_dup]]
    out.loc[dup_index, "dup_match"] = [how_joined.get(int(p), "similar") for p in np.flatnonzero(is_dup)]
    if recipe.dedupe.identity:
        out = group_identities(out, recipe)
    return typed(out)


def group_identities(out: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """person_group for kept faces (descriptor clusters) and for their duplicates."""
    faces = out[kept(out) & out["face_descriptor"].notna()].sort_values("item_id", kind="stable")
    if len(faces):
        config = recipe.dedupe
        names = None
        if config.name_field and config.name_field in faces:
            names = [identity.normalise_name(v) for v in faces[config.name_field]]
        photos = faces["parent_id"].astype("string").tolist() if "parent_id" in faces else None
        labels = identity.group_people(descriptor_array(faces["face_descriptor"]), config.identity_threshold,
                                       names, config.name_threshold, apart=photos)
        first = pd.Series(faces["item_id"].astype(str).to_numpy()).groupby(labels).transform("min")
        out.loc[faces.index, "person_group"] = first.to_numpy()
    alone = kept(out) & out["person_group"].isna() & out["phash"].notna()
    out.loc[alone, "person_group"] = out.loc[alone, "item_id"]
    groups = out.loc[kept(out)].set_index("item_id")["person_group"]
    dups = (out["status"] == DUPLICATE) & out["dup_group"].notna()
    out.loc[dups, "person_group"] = out.loc[dups, "dup_group"].map(groups).astype("string")
    return out
