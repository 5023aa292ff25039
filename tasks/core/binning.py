"""One binning of labels for every consumer: the split's strata, the report, the card, the
cross-check's per-group metrics and the fine-tune's subgroup accuracy.

Numbers are binned (the recipe's `split.bins`, else quartiles of the rows the split bins:
kept rows with a target value), other values kept as categories; missing values become
'unknown'. One grouping, so a build never shows the same field grouped three ways; and
one smallest group worth judging (`MIN_GROUP`), so no consumer presents the accuracy of
five faces as a finding.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from tasks.core.errors import FacesetError
from tasks.core.manifest import kept
from tasks.core.recipe import Recipe

UNKNOWN = "unknown"
DEFAULT_QUANTILES = (0.25, 0.5, 0.75)
MIN_DISTINCT_FOR_NUMERIC = 10  # fewer distinct numbers (0/1 codes, a few ages) are treated as categories
NUMERIC_SHARE = 0.95  # share of values that must parse as numbers for a field to be binned
MIN_GROUP = 20  # fewer images than this and a group's rates move by chance: too few to judge
TOO_FEW = "too few to judge"


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


def reference_rows(frame: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """The rows whose values fix the default edges: kept rows with a target value, the rows
    the split stratifies, so every consumer bins with the split's quartiles."""
    return frame[kept(frame) & (category_labels(frame[recipe.target]) != UNKNOWN)]


def group_labels(values: pd.Series, edges: list[float] | None = None, reference: pd.Series | None = None) -> pd.Series:
    """Values as group labels: numbers binned by `edges` when given, else by the quartiles of
    `reference` (whether the field is numeric is decided there too, so a subset such as the
    test split is grouped as the whole); everything else as categories."""
    if edges:
        return bin_labels(values, edges)  # values that are not numbers become 'unknown'
    basis = reference if reference is not None and reference.notna().any() else values
    if is_numeric(basis):
        return bin_labels(values, default_edges(basis))
    return category_labels(values)


def field_labels(frame: pd.DataFrame, field: str, recipe: Recipe, reference: pd.DataFrame | None = None) -> pd.Series:
    """The values of one field as stratum labels: numbers binned (recipe bins, else quartiles
    of `reference`, by default `reference_rows`), everything else as categories."""
    if field not in frame.columns:
        raise FacesetError(
            f"the split needs the field {field!r}, but the manifest has no such column",
            "check split.stratify, split.group_by and split.variants in the recipe against the source fields",
        )
    basis = reference if reference is not None else reference_rows(frame, recipe)
    return group_labels(frame[field], recipe.split.bins.get(field), basis[field])


def target_classes(frame: pd.DataFrame, recipe: Recipe) -> pd.Series:
    """The class of each row: the target's value, or its bin when `split.bins` bins the target
    (`target: age` with bins gives one class per bin, not one per year); NA when it has none.
    The split, the variants and the export all take classes from here, so they agree."""
    edges = recipe.split.bins.get(recipe.target)
    labels = bin_labels(frame[recipe.target], edges) if edges else category_labels(frame[recipe.target])
    return labels.mask(labels == UNKNOWN)


def label_order(label: str) -> tuple[int, float, str]:
    """Sort key: bins in numeric order ('<34', '34-43', ..., '>=52'), other values
    alphabetically, 'unknown' last. Only a whole bin label reads as a number: labels such
    as '.NET', '1.2.3' or '..' are text."""
    if label == UNKNOWN:
        return (2, 0.0, label)
    match = re.match(r"^(<|>=)?(-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)(?:-|$)", label)
    if match:
        number = float(match.group(2))
        return (0, -math.inf if match.group(1) == "<" else number, label)
    return (1, 0.0, label)


def small_groups(sizes: Mapping[str, int], minimum: int = MIN_GROUP) -> list[str]:
    """Groups with fewer than `minimum` members: reports call them too few to judge
    instead of presenting their rates as findings."""
    return [group for group, n in sizes.items() if n < minimum]
