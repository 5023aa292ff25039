"""The split stage: train/val/test that are stratified the way the research needs and
leak-free by construction.

A test image that shares a person or a near-copy with the training set inflates every
accuracy the user reports, so the unit that is assigned to a split is a *group*, never
an image: rows sharing a `dup_group`, a `person_group`, the same `name` within a source
or the recipe's `group_by` value are joined (transitively, by union-find) and placed
together. Within that constraint each stratum (the target and `split.stratify` jointly,
numbers binned) gets as close to the recipe's ratios as whole groups allow:

1. per-stratum target counts are apportioned with *controlled rounding*, so that tiny
   strata (one or two images) are spread across splits and the overall shares still
   come out right;
2. groups, largest first, go to the split whose targets they help most (least squared
   error, weighted by 1/stratum size), so the many single images at the end fill the
   remaining gaps exactly;
3. a few passes move single groups wherever that lowers the error further.

A dataset rebuilt with more images keeps every earlier image in its split (the
assignment is saved under `.faceset/split/`) as long as the split settings are
unchanged, so a test image of one version is never a training image of the next;
only a group that a new image joins to a group of another split has to move.

Variants (`tasks/variants.py`) choose a subset of rows and reuse `assign` for their own
split, written to `split_<name>`; `split` is always the `original` variant.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.errors import FacesetError
from tasks.manifest import kept
from tasks.paths import DatasetPaths
from tasks.recipe import Recipe

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
UNKNOWN = "unknown"
TOLERANCE = 0.02  # the bound: every stratum within 2 percentage points where its size allows
DEFAULT_QUANTILES = (0.25, 0.5, 0.75)
MIN_DISTINCT_FOR_NUMERIC = 10  # fewer distinct numbers (0/1 codes, a few ages) are treated as categories
NUMERIC_SHARE = 0.95  # share of values that must parse as numbers for a field to be binned
REFINE_PASSES = 3


# ---------------------------------------------------------------- strata


def _as_number(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values.astype("string").str.strip(), errors="coerce")


def is_numeric(values: pd.Series, binned: bool = False) -> bool:
    """A field is binned when nearly every value given parses as a number (a stray 'n/a' does
    not turn ages into 60 categories) and there are many distinct ones, or `binned` (the
    recipe gives bins); few distinct numbers (0/1 codes) are kept as categories."""
    present = values.dropna().astype("string").str.strip()
    present = present[present != ""]
    if present.empty:
        return False
    numbers = _as_number(present)
    if numbers.notna().mean() < NUMERIC_SHARE:
        return False
    return binned or numbers.nunique() >= MIN_DISTINCT_FOR_NUMERIC


def default_edges(values: pd.Series) -> list[float]:
    """Quartile edges of the values: four bins of about equal size, rounded when the data are whole numbers."""
    numbers = _as_number(values).dropna().to_numpy(dtype=float)
    edges = np.quantile(numbers, DEFAULT_QUANTILES)
    if np.all(numbers == np.round(numbers)):
        edges = np.round(edges)
    return sorted({float(e) for e in edges})


def _edge(value: float) -> str:
    return f"{value:g}"


def bin_labels(values: pd.Series, edges: list[float]) -> pd.Series:
    """'<e0', 'e0-e1', ..., '>=en' (lower edge included); missing values become 'unknown'."""
    numbers = _as_number(values)
    edges = sorted(float(e) for e in edges)
    names = [f"<{_edge(edges[0])}"]
    names += [f"{_edge(lo)}-{_edge(hi)}" for lo, hi in zip(edges, edges[1:])]
    names.append(f">={_edge(edges[-1])}")
    index = np.searchsorted(np.asarray(edges), numbers.fillna(0).to_numpy(dtype=float), side="right")
    labels = pd.Series(np.asarray(names, dtype=object)[index], index=values.index, dtype="string")
    return labels.mask(numbers.isna(), UNKNOWN)


def category_labels(values: pd.Series) -> pd.Series:
    """Values as clean strings; missing or blank values become 'unknown'."""
    text = values.astype("string").str.strip()
    return text.mask(text.isna() | (text == ""), UNKNOWN).astype("string")


def field_labels(frame: pd.DataFrame, field: str, recipe: Recipe, reference: pd.DataFrame | None = None) -> pd.Series:
    """The values of one field as stratum labels: numbers binned (recipe bins, else quartiles
    of `reference`, by default the kept rows), everything else as categories."""
    if field not in frame.columns:
        raise FacesetError(
            f"the split needs the field {field!r}, but the manifest has no such column",
            "check split.stratify, split.group_by and split.variants in the recipe against the source fields",
        )
    bins = recipe.split.bins.get(field)
    values = frame[field]
    if bins:
        return bin_labels(values, bins)  # values that are not numbers become 'unknown'
    if is_numeric(values):
        basis = (reference if reference is not None else frame[kept(frame)])[field]
        return bin_labels(values, default_edges(basis if basis.notna().any() else values))
    return category_labels(values)


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


# ---------------------------------------------------------------- groups


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = np.arange(size)

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _normalized(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.casefold().str.replace(r"\s+", " ", regex=True).str.strip()
    return text.mask(text == "")


def group_keys(frame: pd.DataFrame, group_by: str | None) -> dict[str, pd.Series]:
    """Every key whose equal values must share a split (missing values join nothing)."""
    keys = {}
    for column in ("dup_group", "person_group"):
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
    finder = _UnionFind(len(frame))
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


def assign(groups: np.ndarray, strata: np.ndarray, ratios: dict[str, float], seed: int,
           previous: np.ndarray | None = None) -> np.ndarray:
    """A split name per row; every group lands in exactly one split.

    `groups` and `strata` are integer codes per row (0..n-1). Splits with ratio 0 get nothing.
    `previous` (a split name or None per row) keeps groups where an earlier build put them,
    so that a growing dataset never moves a test image into training; new groups fill the gaps.
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
    result[:] = np.asarray(names, dtype=object)[placed[groups]]
    return result


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


def leaks(frame: pd.DataFrame, column: str, group_by: str | None) -> dict[str, int]:
    """Per grouping key, how many groups span more than one split (must be zero)."""
    chosen = frame[frame[column].notna()]
    found = {}
    for name, key in group_keys(chosen, group_by).items():
        spans = chosen[column].groupby(key.to_numpy(), dropna=True).nunique()
        found[name] = int((spans > 1).sum())
    return found


# ---------------------------------------------------------------- the stage


def settings_of(recipe: Recipe) -> dict[str, Any]:
    """What decides the original split; a previous assignment is kept only while these stay the same."""
    return {"target": recipe.target, **ratios_of(recipe), **recipe.split.model_dump(
        mode="json", include={"stratify", "seed", "group_by", "bins"})}


def _assignment_files(paths: DatasetPaths) -> tuple[Path, Path]:
    folder = paths.state / "split"
    return folder / "assignment.parquet", folder / "settings.json"


def previous_assignment(paths: DatasetPaths, recipe: Recipe) -> pd.Series | None:
    """item_id -> split of the last build with the same split settings, or None."""
    table, settings = _assignment_files(paths)
    if not (table.is_file() and settings.is_file()):
        return None
    if json.loads(settings.read_text(encoding="utf-8")) != settings_of(recipe):
        return None
    saved = pd.read_parquet(table)
    return pd.Series(saved["split"].to_numpy(), index=saved["item_id"].to_numpy())


def save_assignment(paths: DatasetPaths, recipe: Recipe, splits: pd.Series, item_ids: pd.Series) -> None:
    table, settings = _assignment_files(paths)
    table.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"item_id": item_ids.astype(str).to_numpy(), "split": splits.astype(str).to_numpy()}).to_parquet(table, index=False)
    settings.write_text(json.dumps(settings_of(recipe)), encoding="utf-8")


def split_rows(frame: pd.DataFrame, strata: pd.Series, ratios: dict[str, float], seed: int,
               group_by: str | None, previous: pd.Series | None = None) -> tuple[pd.Series, list[str]]:
    """Assign the given rows to splits (keeping `previous`, item_id -> split, where groups
    allow); returns the splits and warnings naming small strata."""
    groups = group_ids(frame, group_by)
    codes, _ = pd.factorize(strata)
    before = None if previous is None else frame["item_id"].map(previous).astype(object).to_numpy()
    result = pd.Series(assign(groups, codes, ratios, seed, before), index=frame.index, dtype="string")
    smallest = min_stratum_size(ratios)
    sizes = strata.value_counts()
    small = sizes[sizes < smallest]
    warnings = []
    if len(small):
        listed = "; ".join(f"{name} ({n})" for name, n in small.sort_values().items())
        warnings.append(
            f"{len(small)} strata have fewer than {smallest} images, too few for every split to get its share; "
            f"they are spread so that the overall shares stay right: {listed}"
        )
    return result, warnings


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> pd.DataFrame:
    """Add `split` (the original variant) and `split_<name>` per recipe variant."""
    from tasks import variants  # variants reuse this module's assignment

    frame = manifest.copy()
    is_kept = kept(frame).fillna(False).astype(bool)
    fields = stratify_fields(recipe)
    pool = frame[is_kept]
    labelled = pool[category_labels(pool[recipe.target]) != UNKNOWN]
    unlabelled = len(pool) - len(labelled)
    ratios = ratios_of(recipe)
    strata = strata_labels(labelled, fields, recipe, reference=labelled)
    previous = previous_assignment(paths, recipe)
    splits, warnings = split_rows(labelled, strata, ratios, recipe.split.seed, recipe.split.group_by, previous)
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
        "folder": "splits",
        **achieved(splits, strata, ratios),
        "leaks": leaks(frame.loc[labelled.index], "split", recipe.split.group_by),
        "warnings": warnings,
    }
    for variant in recipe.split.variants:
        column = f"split_{variant.name}"
        chosen, figures, notes = variants.build(variant, labelled, recipe)
        frame[column] = pd.Series(pd.NA, index=frame.index, dtype="string")
        frame.loc[chosen.index, column] = chosen
        figures["leaks"] = leaks(frame.loc[labelled.index], column, recipe.split.group_by)
        summary["variants"][variant.name] = {"kind": variant.kind, "column": column,
                                             "folder": f"variants/{variant.name}", **figures, "warnings": notes}
        warnings += [f"{variant.name}: {note}" for note in notes]
    for warning in warnings:
        log.warning("split: %s", warning)
    summary["warnings"] = warnings
    paths.report_json("split").parent.mkdir(parents=True, exist_ok=True)
    paths.report_json("split").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return frame


def _group_figures(frame: pd.DataFrame, group_by: str | None) -> dict[str, int]:
    groups = group_ids(frame, group_by)
    sizes = np.bincount(groups) if len(groups) else np.zeros(0, dtype=int)
    return {
        "groups": int(len(sizes)),
        "images_in_multi_image_groups": int(sizes[sizes > 1].sum()),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
    }


# ---------------------------------------------------------------- report


def report_section(summary: dict[str, Any], paths: DatasetPaths) -> str:
    """The split in the HTML report: shares per variant, the worst strata, leaks, warnings."""
    from html import escape

    parts = [f"<p>Seed {summary.get('seed')}, stratified on {escape(', '.join(summary.get('stratify', [])))}; "
             f"{summary.get('groups', {}).get('groups', 0)} groups (images of one person or near-copies "
             f"always share a split).</p>"]
    for name, variant in summary.get("variants", {}).items():
        counts = variant.get("counts", {})
        shares = variant.get("share", {})
        target = variant.get("target", {})
        cells = "".join(
            f"<tr><td>{escape(s)}</td><td class=n>{counts.get(s, 0)}</td><td class=n>{shares.get(s, 0):.1%}</td>"
            f"<td class=n>{target.get(s, 0):.0%}</td></tr>" for s in counts
        )
        worst = variant.get("largest_deviation", {})
        leak_total = sum(variant.get("leaks", {}).values())
        parts.append(
            f"<h3>{escape(name)} <small>({escape(variant.get('folder', ''))})</small></h3>"
            f"<table><tr><th>split</th><th>images</th><th>share</th><th>target</th></tr>{cells}</table>"
            f"<p>Largest deviation of a stratum from the target share: {worst.get('deviation', 0):.1%}"
            f" ({escape(str(worst.get('stratum')))}, {escape(str(worst.get('split')))}). "
            f"Groups found in more than one split: {leak_total}.</p>"
        )
        strata = sorted(variant.get("strata", {}).items(), key=lambda kv: -kv[1]["largest_deviation"])[:10]
        if strata:
            rows = "".join(
                f"<tr><td>{escape(k)}</td><td class=n>{v['images']}</td>"
                + "".join(f"<td class=n>{v['share'][s]:.1%}</td>" for s in counts)
                + f"<td class=n>{v['largest_deviation']:.1%}</td></tr>"
                for k, v in strata
            )
            head = "".join(f"<th>{escape(s)}</th>" for s in counts)
            parts.append(f"<table><tr><th>stratum (10 furthest off)</th><th>images</th>{head}<th>deviation</th></tr>{rows}</table>")
    if summary.get("warnings"):
        parts.append("<ul>" + "".join(f"<li>{escape(w)}</li>" for w in summary["warnings"]) + "</ul>")
    return "\n".join(parts)
