"""Assignment of groups to splits: strata, leak-free groups, controlled rounding (the split stage and its variants use it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.binning import field_labels
from tasks.core.errors import FacesetError
from tasks.core.paths import SPLITS
from tasks.core.recipe import Recipe
from tasks.core.unionfind import UnionFind

TOLERANCE = 0.02  # the bound: every stratum within 2 percentage points where its size allows
REFINE_PASSES = 3


# ---------------------------------------------------------------- strata



def stratify_fields(recipe: Recipe) -> list[str]:
    """The target first, then `split.stratify` (the target is not repeated)."""
    return list(dict.fromkeys([recipe.target, *recipe.split.stratify]))


def strata_labels(frame: pd.DataFrame, fields: list[str], recipe: Recipe, reference: pd.DataFrame | None = None) -> pd.Series:
    """One readable label per row, e.g. 'label=cs, gender=female, age=30-45'."""
    parts = [f"{f}=" + field_labels(frame, f, recipe, reference) for f in fields]
    if not parts:
        return pd.Series("all", index=frame.index, dtype="string")
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + ", " + part
    return joined.astype("string")


def in_id_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows sorted by item_id. Groups and strata are numbered in row order and the seeded
    draws below run over those numbers, so sorted rows make the split a function of the rows
    alone, never of the order in which a crawl happened to find them."""
    return frame.sort_values("item_id", kind="stable")


# ---------------------------------------------------------------- groups



def _normalized(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.casefold().str.replace(r"\s+", " ", regex=True).str.strip()
    return text.mask(text == "")


def group_keys(frame: pd.DataFrame, group_by: str | None) -> dict[str, pd.Series]:
    """Every key whose equal values must share a split (missing values join nothing).

    `parent_id` joins the faces of one photo (`faces: {each: true}`): a group photo's
    faces are never spread over train and test."""
    keys = {}
    for column in ("dup_group", "person_group", "parent_id"):
        if column in frame.columns:
            keys[column] = _normalized(frame[column])
    if "name" in frame.columns and "source" in frame.columns:
        name = _normalized(frame["name"])
        keys["name within source"] = (frame["source"].astype("string").fillna("") + "\x1f" + name).mask(name.isna())
    if group_by:
        if group_by not in frame.columns:
            raise FacesetError(
                f"split.group_by names {group_by!r}, but the manifest has no such column",
                "set split.group_by to one of the recipe's fields, or remove it",
            )
        keys[f"group_by ({group_by})"] = _normalized(frame[group_by])
    return keys


def group_ids(frame: pd.DataFrame, group_by: str | None = None) -> np.ndarray:
    """A group number per row: rows joined by any grouping key, transitively, share it."""
    finder = UnionFind(len(frame))
    for key in group_keys(frame, group_by).values():
        codes, _ = pd.factorize(key, use_na_sentinel=True)
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        for position in range(1, len(order)):
            code = sorted_codes[position]
            if code >= 0 and code == sorted_codes[position - 1]:
                finder.union(int(order[position - 1]), int(order[position]))
    roots = np.fromiter((finder.find(i) for i in range(len(frame))), dtype=np.int64, count=len(frame))
    return pd.factorize(roots)[0]


# ---------------------------------------------------------------- assignment


def _largest_remainder(total: int, ratios: np.ndarray) -> np.ndarray:
    exact = total * ratios
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def apportion(sizes: np.ndarray, ratios: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Target counts per stratum (rows) and split (columns) that add up to each stratum's size
    and to the overall split sizes (controlled rounding): tiny strata share out the remainders."""
    exact = sizes[:, None] * ratios[None, :]
    targets = np.floor(exact).astype(int)
    need = sizes - targets.sum(axis=1)
    capacity = _largest_remainder(int(sizes.sum()), ratios) - targets.sum(axis=0)
    remainder = exact - targets
    noise = rng.random(remainder.shape) * 1e-9  # random among equal remainders, reproducible by seed
    for flat in np.argsort(-(remainder + noise), axis=None, kind="stable"):
        stratum, split = divmod(int(flat), len(ratios))
        if need[stratum] > 0 and capacity[split] > 0 and ratios[split] > 0:
            targets[stratum, split] += 1
            need[stratum] -= 1
            capacity[split] -= 1
    for stratum in np.flatnonzero(need > 0):  # rare: remainders and capacities did not meet
        for _ in range(int(need[stratum])):
            split = int(np.argmax(np.where(ratios > 0, capacity, -np.inf)))
            targets[stratum, split] += 1
            capacity[split] -= 1
    return targets


@dataclass
class Groups:
    """Each group's row counts per stratum, as parallel arrays."""

    strata: list[np.ndarray]
    counts: list[np.ndarray]
    sizes: np.ndarray


def compose_groups(groups: np.ndarray, strata: np.ndarray) -> Groups:
    table = pd.DataFrame({"g": groups, "s": strata}).groupby(["g", "s"]).size()
    g_index = table.index.get_level_values(0).to_numpy()
    s_index = table.index.get_level_values(1).to_numpy()
    values = table.to_numpy()
    bounds = np.flatnonzero(np.diff(g_index)) + 1
    return Groups(
        strata=np.split(s_index, bounds),
        counts=np.split(values, bounds),
        sizes=np.bincount(groups),
    )


def _delta(n: np.ndarray, t: np.ndarray, weight: np.ndarray, strata: np.ndarray, counts: np.ndarray, sign: int) -> np.ndarray:
    """Change of the weighted squared error of every split if a group is added (sign 1) or removed (-1)."""
    gap = n[strata] - t[strata]  # (k, splits)
    step = sign * counts[:, None]
    return (((gap + step) ** 2 - gap**2) * weight[strata][:, None]).sum(axis=0)


def _keep_previous(groups: np.ndarray, previous: np.ndarray, names: list[str], rates: np.ndarray) -> np.ndarray:
    """Per group, the split most of its rows had in the previous build (-1: none). A group that
    now joins rows of several splits goes to the most held-out one among the most common."""
    placed = np.full(groups.max() + 1, -1)
    index = {name: i for i, name in enumerate(names)}
    codes = np.array([index.get(p, -1) if isinstance(p, str) else -1 for p in previous])
    usable = (codes >= 0) & (rates[np.maximum(codes, 0)] > 0)
    if usable.any():
        table = pd.crosstab(groups[usable], codes[usable])
        best = table.to_numpy() == table.to_numpy().max(axis=1, keepdims=True)
        last = best.shape[1] - 1 - np.argmax(best[:, ::-1], axis=1)  # ties: the later split (test before val before train)
        placed[table.index.to_numpy()] = table.columns.to_numpy()[last]
    return placed


def _cover_classes(placed: np.ndarray, movable: np.ndarray, members: Groups, composed: Groups,
                   filled: np.ndarray, targets: np.ndarray, weight: np.ndarray, rates: np.ndarray) -> None:
    """Move single groups (in place) so that every class has rows in every split with a ratio
    above 0, wherever its groups allow: a loader numbers classes by the folders it finds, so a
    class missing from test shifts every label after it. Splits are filled in order (train
    first); a move never empties a split of another class, nor an earlier split of this one;
    among the moves allowed, the one that costs the strata's targets least is taken."""
    open_splits = np.flatnonzero(rates > 0)
    n_classes = max((int(c.max()) for c in members.strata if len(c)), default=-1) + 1
    rows = np.zeros((n_classes, len(rates)), dtype=int)
    for g in range(len(placed)):
        rows[members.strata[g], placed[g]] += members.counts[g]
    holders: list[list[int]] = [[] for _ in range(n_classes)]
    for g in np.flatnonzero(movable):
        for c in members.strata[g]:
            holders[c].append(int(g))
    for c in range(n_classes):
        for rank, split in enumerate(open_splits):
            if rows[c, split]:
                continue
            best, best_cost = -1, np.inf
            for g in holders[c]:
                here = placed[g]
                left = rows[members.strata[g], here] - members.counts[g]
                later = here in open_splits[rank + 1:]
                if here == split or (left[members.strata[g] != c] <= 0).any() or (left.min() <= 0 and not later):
                    continue
                strata_g, counts_g = composed.strata[g], composed.counts[g]
                cost = (_delta(filled, targets, weight, strata_g, counts_g, -1)[here]
                        + _delta(filled, targets, weight, strata_g, counts_g, 1)[split] + (left.min() <= 0) * 1e6)
                if cost < best_cost:
                    best, best_cost = g, cost
            if best >= 0:
                here = placed[best]
                rows[members.strata[best], here] -= members.counts[best]
                rows[members.strata[best], split] += members.counts[best]
                filled[composed.strata[best], here] -= composed.counts[best]
                filled[composed.strata[best], split] += composed.counts[best]
                placed[best] = split


def assign(groups: np.ndarray, strata: np.ndarray, ratios: dict[str, float], seed: int,
           previous: np.ndarray | None = None, classes: np.ndarray | None = None) -> np.ndarray:
    """A split name per row; every group lands in exactly one split.

    `groups` and `strata` are integer codes per row (0..n-1). Splits with ratio 0 get nothing.
    `previous` (a split name or None per row) keeps groups where an earlier build put them,
    so that a growing dataset never moves a test image into training; new groups fill the gaps.
    `classes` (a code per row) puts every class in every split where its groups allow; a
    group kept from the previous build may then leave train only, never enter it.
    """
    names = [s for s in SPLITS if s in ratios]
    rates = np.array([ratios[s] for s in names], dtype=float)
    result = np.empty(len(groups), dtype=object)
    if len(groups) == 0:
        return result
    rng = np.random.default_rng(seed)
    sizes = np.bincount(strata)
    targets = apportion(sizes, rates, rng)
    weight = 1.0 / np.maximum(sizes, 1)
    closed = np.where(rates > 0, 0.0, np.inf)
    composed = compose_groups(groups, strata)
    n_groups = len(composed.sizes)
    order = np.lexsort((rng.permutation(n_groups), -composed.sizes))
    placed = np.full(n_groups, -1) if previous is None else _keep_previous(groups, previous, names, rates)
    fixed = placed >= 0
    filled = np.zeros_like(targets)
    for g in np.flatnonzero(fixed):
        filled[composed.strata[g], placed[g]] += composed.counts[g]
    for g in order[~fixed[order]]:
        cost = _delta(filled, targets, weight, composed.strata[g], composed.counts[g], 1) + closed
        best = np.flatnonzero(cost == cost.min())
        choice = int(best[0] if len(best) == 1 else rng.choice(best))
        placed[g] = choice
        filled[composed.strata[g], choice] += composed.counts[g]
    for _ in range(REFINE_PASSES):
        moved = 0
        for g in rng.permutation(np.flatnonzero(~fixed)):
            here = placed[g]
            strata_g, counts_g = composed.strata[g], composed.counts[g]
            filled[strata_g, here] -= counts_g
            cost = _delta(filled, targets, weight, strata_g, counts_g, 1) + closed
            choice = here if cost[here] <= cost.min() + 1e-12 else int(np.argmin(cost))
            filled[strata_g, choice] += counts_g
            moved += choice != here
            placed[g] = choice
        if not moved:
            break
    if classes is not None:
        movable = ~fixed | (placed == (names.index("train") if "train" in names else -1))
        _cover_classes(placed, movable, compose_groups(groups, classes), composed, filled, targets, weight, rates)
    result[:] = np.asarray(names, dtype=object)[placed[groups]]
    return result


def split_frame(frame: pd.DataFrame, strata: pd.Series, ratios: dict[str, float], seed: int, group_by: str | None,
                classes: pd.Series, previous: pd.Series | None = None) -> tuple[pd.Series, list[str]]:
    """A split per row (`previous`, item_id -> split, kept where groups allow), every class
    (`binning.target_classes`, as the export names folders) in every split where its groups
    allow, and a warning per class that is not."""
    groups = group_ids(frame, group_by)
    codes, _ = pd.factorize(strata)
    before = None if previous is None else frame["item_id"].map(previous).astype(object).to_numpy()
    chosen = assign(groups, codes, ratios, seed, before, pd.factorize(classes)[0])
    splits = pd.Series(chosen, index=frame.index, dtype="string")
    return splits, class_warnings(missing_classes(splits, classes, ratios), classes, groups)


def ratios_of(recipe: Recipe) -> dict[str, float]:
    return {"train": recipe.split.train, "val": recipe.split.val, "test": recipe.split.test}


# ---------------------------------------------------------------- figures


def best_deviation(size: int, ratios: dict[str, float]) -> float:
    """The smallest largest-deviation any allocation of `size` images can reach."""
    rates = np.array(list(ratios.values()), dtype=float)
    counts = _largest_remainder(size, rates)
    return float(np.abs(counts / max(size, 1) - rates).max()) if size else 0.0


def min_stratum_size(ratios: dict[str, float]) -> int:
    """Below this size a stratum cannot give every split (with a ratio above 0) one image."""
    return math.ceil(1 / min(r for r in ratios.values() if r > 0) - 1e-9)


def achieved(splits: pd.Series, strata: pd.Series, ratios: dict[str, float]) -> dict[str, Any]:
    """Share per split overall and per stratum, each stratum's largest deviation from the
    ratios, and whether its size allows the 2-point bound."""
    names = [s for s in SPLITS if s in ratios]
    total = int(splits.notna().sum())
    table = pd.crosstab(strata, splits).reindex(columns=names, fill_value=0)
    rows = {}
    worst = {"deviation": 0.0, "stratum": None, "split": None}
    worst_sized = dict(worst)
    for stratum, counts in table.iterrows():
        size = int(counts.sum())
        shares = {s: float(counts[s]) / size for s in names}
        deviations = {s: abs(shares[s] - ratios[s]) for s in names}
        split, deviation = max(deviations.items(), key=lambda kv: kv[1])
        allows = best_deviation(size, ratios) <= TOLERANCE
        rows[str(stratum)] = {
            "images": size,
            "counts": {s: int(counts[s]) for s in names},
            "share": {s: round(shares[s], 4) for s in names},
            "largest_deviation": round(deviation, 4),
            "size_allows_tolerance": allows,
        }
        if deviation > worst["deviation"]:
            worst = {"deviation": round(deviation, 4), "stratum": str(stratum), "split": split}
        if allows and deviation > worst_sized["deviation"]:
            worst_sized = {"deviation": round(deviation, 4), "stratum": str(stratum), "split": split}
    counts = {s: int((splits == s).sum()) for s in names}
    return {
        "images": total,
        "counts": counts,
        "share": {s: round(counts[s] / total, 4) if total else 0.0 for s in names},
        "target": ratios,
        "strata": rows,
        "largest_deviation": worst,
        "largest_deviation_where_size_allows": worst_sized,
        "tolerance": TOLERANCE,
    }


def missing_classes(splits: pd.Series, classes: pd.Series, ratios: dict[str, float]) -> dict[str, list[str]]:
    """Class -> the splits (with a ratio above 0) that hold none of its images."""
    names = [s for s in SPLITS if ratios.get(s, 0) > 0]
    table = pd.crosstab(classes.astype("string"), splits).reindex(columns=names, fill_value=0)
    return {str(c): [s for s in names if row[s] == 0] for c, row in table.iterrows() if (row == 0).any()}


def class_warnings(missing: dict[str, list[str]], classes: pd.Series, groups: np.ndarray) -> list[str]:
    """One warning per class missing from a split, with the images and groups it has."""
    text = classes.astype("string").to_numpy()
    notes = []
    for name, lacking in sorted(missing.items()):
        mine = text == name
        images, together = int(mine.sum()), len(np.unique(groups[mine]))
        notes.append(f"class {name!r} has no images in {', '.join(lacking)}: {images} image{'s' * (images != 1)} in "
                     f"{together} group{'s' * (together != 1)} (a person's photos and near-copies stay in one split) "
                     f"are too few for every split; the export leaves its folder there empty")
    return notes


def leaks(frame: pd.DataFrame, column: str, group_by: str | None) -> dict[str, int]:
    """Per grouping key, how many groups span more than one split (must be zero)."""
    chosen = frame[frame[column].notna()]
    found = {}
    for name, key in group_keys(chosen, group_by).items():
        spans = chosen[column].groupby(key.to_numpy(), dropna=True).nunique()
        found[name] = int((spans > 1).sum())
    return found
