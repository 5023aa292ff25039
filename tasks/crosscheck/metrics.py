"""Figures of the cross-check, as an Images-as-Data reader expects them.

For every checked field, overall, per source and per group of each recipe attribute:
how often the autotagger agrees with the crawled labels, the confusion matrix, accuracy,
precision and recall (the autotagger scored against the crawled labels), and for ages
the error distribution. A tagger that is worse for one group shows it here. Attribute
groups are the split's (tasks.core.binning); a group too small to judge is marked so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.crosscheck.autotag import GENDERS
from tasks.core.binning import UNKNOWN, field_labels, label_order, small_groups
from tasks.core.reasons import AUTOTAGGER_DISAGREES
from tasks.core.recipe import Recipe

AGE_ERROR_BINS = [-np.inf, -20, -10, -5, 5, 10, 20, np.inf]
AGE_ERROR_NAMES = ["< -20", "-20 to -10", "-10 to -5", "-5 to 5", "5 to 10", "10 to 20", "> 20"]
TOP = 24


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), digits)


def outcome_counts(frame: pd.DataFrame, column: str) -> dict[str, int]:
    values = frame[column].dropna() if column in frame else pd.Series(dtype="string")
    return {k: int((values == k).sum()) for k in ("agree", "disagree", "skipped")}


def gender_metrics(frame: pd.DataFrame, field: str) -> dict[str, Any]:
    """Confusion matrix (rows crawled, columns tagger), accuracy, per-class precision and recall."""
    crawled = frame[field].astype("string").str.strip().str.lower()
    tagger = frame["autotag_gender"].astype("string")
    both = crawled.isin(GENDERS).fillna(False) & tagger.isin(GENDERS).fillna(False)
    crawled, tagger = crawled[both], tagger[both]
    result: dict[str, Any] = {"n": int(both.sum()), **outcome_counts(frame, "crosscheck_gender")}
    if not len(crawled):
        return result
    result["confusion"] = {c: {t: int(((crawled == c) & (tagger == t)).sum()) for t in GENDERS} for c in GENDERS}
    result["accuracy"] = _round((crawled == tagger).mean())
    for value in GENDERS:
        said = tagger == value
        truth = crawled == value
        result[f"precision_{value}"] = _round((said & truth).sum() / said.sum()) if said.sum() else None
        result[f"recall_{value}"] = _round((said & truth).sum() / truth.sum()) if truth.sum() else None
    return result


def age_metrics(frame: pd.DataFrame, field: str, margin: float) -> dict[str, Any]:
    """Error of the tagger's age against the crawled one (tagger minus crawled), raw and calibrated."""
    crawled = pd.to_numeric(frame[field].astype("string"), errors="coerce")
    tagger = frame["autotag_age"].astype("Float64")
    both = crawled.notna() & tagger.notna()
    result: dict[str, Any] = {"n": int(both.sum()), **outcome_counts(frame, "crosscheck_age")}
    if not both.any():
        return result
    error = (tagger[both].astype(float) - crawled[both].astype(float))
    result.update(
        mean_error=_round(error.mean(), 2), mae=_round(error.abs().mean(), 2),
        median_abs_error=_round(error.abs().median(), 2),
        within_margin=_round((error.abs() <= margin).mean()), within_5=_round((error.abs() <= 5).mean()),
        errors={name: int(n) for name, n in zip(AGE_ERROR_NAMES, np.histogram(error, AGE_ERROR_BINS)[0])},
    )
    expected = frame.loc[both, "crosscheck_age_expected"].astype("Float64")
    if expected.notna().any():
        calibrated = expected.astype(float) - crawled[both].astype(float)
        result["calibrated_mae"] = _round(calibrated.abs().mean(), 2)
    return result


def target_metrics(frame: pd.DataFrame, recipe: Recipe) -> dict[str, Any]:
    """Scene labels mapped to the target: per target value, how often the tagger saw it."""
    crawled = frame[recipe.target].astype("string")
    result: dict[str, Any] = {"n": int(crawled.notna().sum()), **outcome_counts(frame, "crosscheck_label")}
    agree = frame["crosscheck_label"].eq("agree").fillna(False)
    result["agreement_by_value"] = {str(v): _round(agree[crawled == v].mean()) for v in crawled.dropna().unique()}
    return result


def field_metrics(frame: pd.DataFrame, name: str, recipe: Recipe) -> dict[str, Any]:
    if name == "label":
        return target_metrics(frame, recipe)
    spec = recipe.crosscheck.fields[name]
    if name == "gender":
        return gender_metrics(frame, spec.field)
    if name == "age":
        return age_metrics(frame, spec.field, 5.0 if spec.margin is None else float(spec.margin))
    return {"n": int(frame[spec.field].notna().sum()), **outcome_counts(frame, f"crosscheck_{name}")}


def checked_fields(recipe: Recipe) -> list[str]:
    return list(recipe.crosscheck.fields) + (["label"] if recipe.crosscheck.labels else [])


def calibration_mode(tagged: pd.DataFrame, recipe: Recipe) -> str:
    """How the decisions were made, in words for the report."""
    from tasks.crosscheck.calibration import MIN_ROWS, descriptors_of, second_ages_of

    if not recipe.crosscheck.calibrate or len(tagged) < MIN_ROWS:
        return "plain rules"
    embedded = "face_embedding" in tagged and tagged["face_embedding"].notna().sum() >= MIN_ROWS
    images = "Lite0 image embeddings" + (" and a second age model" if second_ages_of(tagged) is not None else "")
    if descriptors_of(tagged) is not None:
        extra = f" and {images}" if embedded else ""
        return f"learned from this dataset's labels, face descriptors{extra} (cross-fitted)"
    if embedded and tagged["crosscheck_age_expected"].notna().any():
        return f"ages learned from this dataset's labels and {images} (cross-fitted)"
    if tagged["crosscheck_age_expected"].notna().any():
        return "ages calibrated on this dataset's labels (cross-fitted)"
    return "plain rules"


def group_metrics(tagged: pd.DataFrame, groups: pd.Series, name: str, recipe: Recipe) -> dict[str, dict[str, Any]]:
    """`field_metrics` per group, groups in label order; a group with fewer than MIN_GROUP
    faces compared is marked `too_few_to_judge`, so no report presents its rates as a finding."""
    figures = {str(g): field_metrics(rows, name, recipe) for g, rows in tagged.groupby(groups)}
    few = set(small_groups({g: f["n"] for g, f in figures.items()}))
    return {g: {**figures[g], "too_few_to_judge": g in few} for g in sorted(figures, key=label_order)}


def build(manifest: pd.DataFrame, recipe: Recipe) -> dict[str, Any]:
    """The whole summary written to reports/crosscheck.json."""
    frame = manifest[manifest["crosscheck"].notna()]
    tagged = frame[frame["autotag_source"].notna()]
    skipped = frame.loc[frame["crosscheck"] == "skipped", "crosscheck_reason"].dropna()
    summary: dict[str, Any] = {
        "autotagger": recipe.crosscheck.autotagger,
        "on_disagreement": recipe.crosscheck.on_disagreement,
        "rows": int(len(frame)),
        "tagged": int(len(tagged)),
        "outcomes": outcome_counts(frame, "crosscheck"),
        "quarantined": int(frame["reason"].astype("string").str.startswith(AUTOTAGGER_DISAGREES).fillna(False).sum()),
        "skipped_reasons": {str(k): int(v) for k, v in skipped.str.split(";").str[0].value_counts().head(10).items()},
        "calibration": calibration_mode(tagged, recipe),
        "fields": {},
    }
    for name in checked_fields(recipe):
        entry: dict[str, Any] = {"all": field_metrics(tagged, name, recipe), "by_source": {}, "by_attribute": {}}
        entry["by_source"] = group_metrics(tagged, tagged["source"].astype("string").fillna(UNKNOWN), name, recipe)
        for attribute in recipe.attributes:
            if attribute not in tagged or not len(tagged):
                continue
            groups = field_labels(manifest, attribute, recipe).loc[tagged.index]  # binned as the split bins it
            entry["by_attribute"][attribute] = group_metrics(tagged, groups, name, recipe)
        summary["fields"][name] = entry
    from tasks.crosscheck.review import disagreements

    top = disagreements(manifest).head(TOP)
    summary["review"] = [{"item_id": str(r.item_id), "face_path": str(r.face_path), "reason": str(r.crosscheck_reason),
                          "score": _round(r.crosscheck_score)} for r in top.itertuples()]
    return summary
