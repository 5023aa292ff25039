"""Calibrating the autotagger's ages against the dataset's own labels, without leakage.

A tagger's age errors are systematic: the local model ages young adults too old and the
old too young (its ages stop at 80), so comparing its raw age with a fixed margin flags
whole age groups of correct labels. Since most crawled labels are right, the dataset
itself says how the tagger errs: an isotonic map from the tagger's age to the crawled
one, a shift per group of the recipe's other attributes, and the typical spread of
correct labels at each calibrated age. A label is flagged when it lies further than
max(margin, Z_FLAG spreads) from its calibrated age.

No face's own label may score it: every row's calibrated age comes from a model fitted
on the other folds (K-fold cross-fitting), and each fit is refitted once without gross
outliers, so label errors pull it as little as possible.

It is off by default (`crosscheck.calibrate`): it removes the tagger's age bias per
group (the report shows raw and calibrated error), but on UTKFace adults with planted
age errors it did not rank them better than the raw gap (precision at 80% recall 0.17
against 0.19, benchmarks/bench_crosscheck.py), because the tagger's spread, not its
bias, limits what it can catch.

Gender is not calibrated here: on UTKFace adults with planted errors, logistic
calibration (with group offsets and slopes) ranked planted errors *worse* than the
tagger's own probability (precision at 90% recall 0.85-0.87 against 0.88), see
benchmarks/bench_crosscheck.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import KFold

from tasks.recipe import Recipe

MIN_ROWS = 100  # fewer labelled faces than this: the plain rules decide
FOLDS = 5
SEED = 13
Z_FLAG = 2.5  # spreads between the crawled and the calibrated age
SPREAD_BINS = 5
TRIM = 3.0  # residuals beyond this many spreads are left out of the age fit


def tail_score(excess: float) -> float:
    """Plain-rule age score in (0, 1): 0.5 at the tolerance, rising with the excess years."""
    return 1 / (1 + math.exp(-excess / 2.5))


def _folds(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(KFold(min(FOLDS, n), shuffle=True, random_state=SEED).split(np.arange(n)))


def _one_hot(labels: pd.Series) -> np.ndarray:
    """One-hot columns of a grouping, dropping the largest group (the reference)."""
    values = labels.astype("string").fillna("unknown")
    levels = list(values.value_counts().index[1:])
    return np.column_stack([(values == level).to_numpy(float) for level in levels]) if levels else np.zeros((len(values), 0))


def _spread(residuals: np.ndarray) -> float:
    return max(1.4826 * float(np.median(np.abs(residuals))), 1.0)


def _fit_age(tagger: np.ndarray, crawled: np.ndarray, groups: np.ndarray):
    """Isotonic map plus group shifts, refitted once without gross outliers."""
    keep = np.ones(len(tagger), bool)
    for _ in range(2):
        iso = IsotonicRegression(out_of_bounds="clip").fit(tagger[keep], crawled[keep])
        residual = crawled - iso.predict(tagger)
        shifts = np.array([np.median(residual[keep & (groups[:, j] == 1)]) if (keep & (groups[:, j] == 1)).sum() >= 10
                           else 0.0 for j in range(groups.shape[1])])
        residual = residual - groups @ shifts
        keep = np.abs(residual) <= TRIM * _spread(residual[keep])
    return iso, shifts


def age_expected(tagger: np.ndarray, crawled: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted calibrated age and the typical spread of correct labels around it.

    The spread comes from the out-of-fold residuals of the *other* folds, binned by
    calibrated age: in-fold residuals of an isotonic fit are too small."""
    folds = _folds(len(tagger))
    expected = np.empty(len(tagger))
    for train, test in folds:
        iso, shifts = _fit_age(tagger[train], crawled[train], groups[train])
        expected[test] = iso.predict(tagger[test]) + groups[test] @ shifts
    residual = crawled - expected
    spread = np.empty(len(tagger))
    for train, test in folds:
        edges = np.quantile(expected[train], np.linspace(0, 1, SPREAD_BINS + 1)[1:-1])
        bins_train, bins_test = np.digitize(expected[train], edges), np.digitize(expected[test], edges)
        spreads = np.array([_spread(residual[train][bins_train == b]) if (bins_train == b).sum() >= 5
                            else _spread(residual[train]) for b in range(SPREAD_BINS)])
        spread[test] = spreads[bins_test]
    return expected, spread


def _groups(frame: pd.DataFrame, recipe: Recipe, exclude: str) -> np.ndarray:
    """Group indicators from the recipe's attributes other than the checked field."""
    from tasks.split import field_labels

    columns = [_one_hot(field_labels(frame, attribute, recipe, reference=frame))
               for attribute in recipe.attributes if attribute != exclude and attribute in frame]
    return np.column_stack(columns) if columns else np.zeros((len(frame), 0))


def calibrate_age(frame: pd.DataFrame, recipe: Recipe) -> dict[str, Any] | None:
    spec = recipe.crosscheck.fields["age"]
    crawled = pd.to_numeric(frame[spec.field].astype("string"), errors="coerce")
    tagger = frame["autotag_age"].astype("Float64")
    usable = crawled.notna() & tagger.notna()
    rows = frame[usable]
    if len(rows) < MIN_ROWS:
        return None
    groups = _groups(rows, recipe, spec.field)
    y = crawled[usable].to_numpy(float)
    expected, spread = age_expected(tagger[usable].to_numpy(float), y, groups)
    margin = 5.0 if spec.margin is None else float(spec.margin)
    tolerance = np.maximum(margin, Z_FLAG * spread)
    gap = np.abs(y - expected)
    z = gap / spread
    score = np.array([math.erf(v / math.sqrt(2)) for v in z])  # share of correct labels expected closer
    outcome = np.where(gap > tolerance, "disagree", "agree")
    raw = tagger[usable].to_numpy(float)
    reasons = [f"age: crawled {c:.0f}, tagger {r:.0f}, calibrated {e:.0f} (margin {t:.0f})" if o == "disagree"
               else f"age: crawled {c:.0f}, tagger {r:.0f}, calibrated {e:.0f}"
               for o, c, r, e, t in zip(outcome, y, raw, expected, tolerance)]
    return {"index": rows.index, "outcome": outcome, "reason": reasons, "score": score, "expected": expected}


def apply(frame: pd.DataFrame, index: pd.Index, recipe: Recipe) -> pd.DataFrame:
    """Replace the plain age decisions of rows `index` by calibrated ones where there are
    enough labelled faces (the caller recombines each row's outcome and score)."""
    out = frame
    rows = out.loc[index]
    rows = rows[rows["autotag_note"].ne("API budget reached").fillna(True)]
    result = calibrate_age(rows, recipe) if "age" in recipe.crosscheck.fields else None
    if result is None:
        return out
    idx = result["index"]
    out.loc[idx, "crosscheck_age"] = result["outcome"]
    out.loc[idx, "crosscheck_age_reason"] = result["reason"]
    out.loc[idx, "crosscheck_age_score"] = result["score"]
    out.loc[idx, "crosscheck_age_expected"] = result["expected"]
    return out
