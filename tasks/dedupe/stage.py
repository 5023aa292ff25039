"""The dedupe stage: one copy of each photo, and faces of one person grouped.

Two phases, as in imagededup: `encode.py` looks at each kept crop (batched through the
mapper: hashes, aligned face, descriptor; blank crops quarantined), then `group.py` works
over the whole table (reference sets, pairs, clusters and their keepers, people).
Only new rows are encoded; the grouping is redone over every row, so a re-crawl that
adds images is deduplicated against all the earlier ones.
"""

from __future__ import annotations

import functools
from typing import Any

import pandas as pd

from tasks.core.manifest import DUPLICATE, KEPT, kept
from tasks.core.parallel import Batching, Mapper, run_per_image
from tasks.core.paths import DatasetPaths
from tasks.core.reasons import BLANK, DUPLICATE_OF, IN_REFERENCE_SET
from tasks.core.recipe import Recipe
from tasks.core.reports import write_report
from tasks.dedupe import identity
from tasks.dedupe.encode import COLUMNS, process_batch, typed
from tasks.dedupe.group import cluster, descriptor_array

SAMPLE_CLUSTERS = 24
BATCHING = Batching(least=1, most=32, per_worker=4)


def _new(frame: pd.DataFrame) -> pd.Series:
    """Kept rows not encoded yet."""
    return kept(frame) & frame["phash"].isna()


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *,
        describer: identity.Describer | None = None, mapper: Mapper | None = None) -> pd.DataFrame:
    """Encode new kept rows (batched), then group the whole table; no row is dropped."""
    return run_per_image(
        manifest, _new, functools.partial(process_batch, recipe=recipe, paths=paths, describer=describer),
        lambda out, done: summarize(out, recipe, paths, timings={
            "hash_s": round(done.map_seconds, 3), "cluster_s": round(done.decide_seconds, 3), "hashed_rows": done.processed}),
        columns=[*COLUMNS, "status", "reason"], batching=BATCHING, mapper=mapper, typed=typed,
        decide=functools.partial(cluster, recipe=recipe))


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
    frame = typed(manifest.copy())
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
        "duplicates": int(dups["reason"].astype("string").str.startswith(DUPLICATE_OF).sum()),
        "in_reference_sets": int(dups["reason"].astype("string").str.startswith(IN_REFERENCE_SET).sum()),
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
    write_report(paths, "dedupe", summary)
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
