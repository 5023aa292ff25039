"""The split stage: train/val/test that are stratified the way the research needs and
leak-free by construction.

A test image that shares a person or a near-copy with the training set inflates every
accuracy the user reports, so the unit that is assigned to a split is a *group*, never
an image: rows sharing a `dup_group`, a `person_group`, a `parent_id` (the faces of one
photo), the same `name` within a source or the recipe's `group_by` value are joined (transitively, by union-find) and placed
together. Within that constraint each stratum (the target and `split.stratify` jointly,
numbers binned) gets as close to the recipe's ratios as whole groups allow:

1. per-stratum target counts are apportioned with *controlled rounding*, so that tiny
   strata (one or two images) are spread across splits and the overall shares still
   come out right;
2. groups, largest first, go to the split whose targets they help most (least squared
   error, weighted by 1/stratum size), so the many single images at the end fill the
   remaining gaps exactly;
3. a few passes move single groups wherever that lowers the error further;
4. every class (target value) gets images in every split where its groups allow, train
   first, by moving single groups at the least cost: a loader that numbers classes by
   the folders it finds would otherwise number a split missing a class differently.
   A class with too few groups is named in a warning.

Rows are taken in item_id order and every draw is seeded, so the split is a function of
the rows and the recipe, never of the order in which the crawl found the pages.

A dataset rebuilt with more images keeps every earlier image in its split (the
assignment is saved under `.faceset/split/`) as long as the split settings are
unchanged, so a test image of one version is never a training image of the next;
only a group that a new image joins to a group of another split has to move.

Variants (`variants.py`) choose a subset of rows and reuse `assign.py` for their own
split, written to `split_<name>`; `split` is always the `original` variant.
"""


from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.atomic import read_json, read_or_absent, write_json, write_parquet
from tasks.core.binning import target_classes
from tasks.core.manifest import kept
from tasks.core.paths import DatasetPaths, tree_folder
from tasks.core.recipe import Recipe
from tasks.core.reports import write_report
from tasks.split import variants
from tasks.split.assign import (achieved, group_ids, in_id_order, leaks, min_stratum_size, ratios_of, split_frame,
                                 strata_labels, stratify_fields)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the stage


def settings_of(recipe: Recipe) -> dict[str, Any]:
    """What decides the original split; a previous assignment is kept only while these stay the same."""
    return {"target": recipe.target, **ratios_of(recipe), **recipe.split.model_dump(
        mode="json", include={"stratify", "seed", "group_by", "bins"})}


def _assignment_files(paths: DatasetPaths) -> tuple[Path, Path]:
    folder = paths.state_folder("split")
    return folder / "assignment.parquet", folder / "settings.json"


def previous_assignment(paths: DatasetPaths, recipe: Recipe) -> pd.Series | None:
    """item_id -> split of the last build with the same split settings, or None.

    A damaged saved assignment counts as none (with a warning): the split is then drawn
    afresh, which only loses the stability across builds.
    """
    table, settings = _assignment_files(paths)
    if read_json(settings, "the split is drawn afresh") != settings_of(recipe):
        return None
    saved = read_or_absent(table, lambda p: pd.read_parquet(p, columns=["item_id", "split"]), "the split is drawn afresh")
    return None if saved is None else pd.Series(saved["split"].to_numpy(), index=saved["item_id"].to_numpy())


def save_assignment(paths: DatasetPaths, recipe: Recipe, splits: pd.Series, item_ids: pd.Series) -> None:
    table, settings = _assignment_files(paths)
    write_parquet(table, pd.DataFrame({"item_id": item_ids.astype(str).to_numpy(), "split": splits.astype(str).to_numpy()}))
    write_json(settings, settings_of(recipe), indent=None)


def split_rows(frame: pd.DataFrame, strata: pd.Series, ratios: dict[str, float], recipe: Recipe,
               previous: pd.Series | None = None) -> tuple[pd.Series, list[str]]:
    """Assign the given rows to splits (keeping `previous`, item_id -> split, where groups
    allow); returns the splits and warnings naming small strata and classes missing from a split."""
    result, warnings = split_frame(frame, strata, ratios, recipe.split.seed, recipe.split.group_by,
                                   target_classes(frame, recipe), previous)
    smallest = min_stratum_size(ratios)
    sizes = strata.value_counts()
    small = sizes[sizes < smallest]
    if len(small):
        listed = "; ".join(f"{name} ({n})" for name, n in small.sort_values().items())
        warnings.append(
            f"{len(small)} strata have fewer than {smallest} images, too few for every split to get its share; "
            f"they are spread so that the overall shares stay right: {listed}"
        )
    return result, warnings


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> pd.DataFrame:
    """Add `split` (the original variant) and `split_<name>` per recipe variant."""
    frame = manifest.copy()
    is_kept = kept(frame).fillna(False).astype(bool)
    fields = stratify_fields(recipe)
    pool = in_id_order(frame[is_kept])
    labelled = pool[target_classes(pool, recipe).notna()]
    unlabelled = len(pool) - len(labelled)
    ratios = ratios_of(recipe)
    strata = strata_labels(labelled, fields, recipe, reference=labelled)
    previous = previous_assignment(paths, recipe)
    splits, warnings = split_rows(labelled, strata, ratios, recipe, previous)
    save_assignment(paths, recipe, splits, labelled["item_id"])
    earlier = labelled["item_id"].map(previous) if previous is not None else pd.Series(pd.NA, index=labelled.index)
    stable = {"kept_from_previous_build": int((earlier == splits).fillna(False).sum()),
              "moved_since_previous_build": int((earlier.notna() & (earlier != splits)).fillna(False).sum())}
    if unlabelled:
        warnings.append(f"{unlabelled} kept images have no {recipe.target!r} value and were left out of every split")
    frame["split"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    frame.loc[splits.index, "split"] = splits
    summary: dict[str, Any] = {
        "seed": recipe.split.seed,
        "stratify": fields,
        "group_by": recipe.split.group_by,
        "kept": int(is_kept.sum()),
        "unlabelled": unlabelled,
        "groups": _group_figures(labelled, recipe.split.group_by),
        **stable,
        "variants": {},
    }
    summary["variants"]["original"] = {
        "kind": "original",
        "column": "split",
        "folder": tree_folder("split"),
        **achieved(splits, strata, ratios),
        "leaks": leaks(frame.loc[labelled.index], "split", recipe.split.group_by),
        "warnings": list(warnings),
    }
    for variant in recipe.split.variants:
        column = f"split_{variant.name}"
        chosen, figures, notes = variants.build(variant, labelled, recipe)
        frame[column] = pd.Series(pd.NA, index=frame.index, dtype="string")
        frame.loc[chosen.index, column] = chosen
        figures["leaks"] = leaks(frame.loc[labelled.index], column, recipe.split.group_by)
        summary["variants"][variant.name] = {"kind": variant.kind, "column": column,
                                             "folder": tree_folder(column), **figures, "warnings": notes}
        warnings += [f"{variant.name}: {note}" for note in notes]
    for warning in warnings:
        log.warning("split: %s", warning)
    summary["warnings"] = warnings
    write_report(paths, "split", summary)
    return frame


def _group_figures(frame: pd.DataFrame, group_by: str | None) -> dict[str, int]:
    groups = group_ids(frame, group_by)
    sizes = np.bincount(groups) if len(groups) else np.zeros(0, dtype=int)
    return {
        "groups": int(len(sizes)),
        "images_in_multi_image_groups": int(sizes[sizes > 1].sum()),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
    }
