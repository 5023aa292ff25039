"""The cross-check stage: an autotagger's opinion on every kept face, set against the crawled labels.

Scraped labels are wrong more often than users think. For each kept face the stage runs
an independent autotagger (autotag.py) and compares it with the recipe's
`crosscheck.fields` (gender, age, a celebrity name) and `crosscheck.labels` (scene labels
that mean a target value, e.g. `protest: [Crowd, Protest]`). Every row gets
`crosscheck` = `agree` / `disagree` / `skipped`, a `crosscheck_reason` a person can read
(`gender: crawled female, tagger male (97%)`) and a `crosscheck_score` (the estimated
chance that the crawled label is wrong), so reviewers look at the likeliest errors first.

Two steps, because a per-face rule cannot see how a tagger errs on *this* dataset:

1. `process_batch` (per image, batched): tag the crops and apply the plain rules.
2. `flag` (whole dataset): re-applies the rules over every checked row (so a changed
   recipe re-decides without re-tagging) and, with `calibrate: true` and enough
   labelled faces, calibrates the tagger's ages against the dataset's own labels,
   cross-fitted so no face's own label scores it (calibration.py).

`on_disagreement: drop` quarantines disagreeing faces (`autotagger disagrees: ...`);
`flag` keeps them and lists them on reports/review.html.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import pandas as pd

from tasks.crosscheck import calibration
from tasks.crosscheck import embeddings as face_embedding
from tasks.crosscheck import second_age
from tasks.crosscheck.autotag import GENDERS, RekognitionTagger, Tagger, Tags, local_tagger, price_usd
from tasks.core.manifest import KEPT, QUARANTINED, kept, set_status, with_columns
from tasks.core.parallel import Batching, Mapper, run_per_image, serial_mapper
from tasks.core.paths import DatasetPaths
from tasks.core.reasons import AUTOTAGGER_DISAGREES, BUDGET_REACHED
from tasks.core.recipe import CrosscheckConfig, CrosscheckField, Recipe
from tasks.core.reports import write_report
from tasks.core.vectors import encode_vector

AGREE, DISAGREE, SKIPPED = "agree", "disagree", "skipped"
DEFAULT_MARGIN = 5.0
GENDER_MIN_CONFIDENCE = 90.0  # default crosscheck.fields.gender.min_confidence (the plain rule)
BATCHING = Batching(least=16, most=256, per_worker=2)

COLUMNS: dict[str, str] = {
    "autotag_gender": "string",
    "autotag_gender_confidence": "Float64",
    "autotag_age": "Float64",
    "autotag_age_width": "Float64",
    "autotag_labels": "string",
    "autotag_celebrity": "string",
    "autotag_source": "string",
    "autotag_note": "string",
    "crosscheck": "string",
    "crosscheck_reason": "string",
    "crosscheck_score": "Float64",
    "crosscheck_age_expected": "Float64",
    "face_embedding": "string",  # Lite0 embedding, with `crosscheck.embeddings: true`
    "autotag_second_age": "Float64",  # a second model's age (tasks/second_age.py), likewise
}
CHECKS = ("gender", "age", "celebrity", "label")  # one outcome, reason and score column each
for _name in CHECKS:
    COLUMNS.update({f"crosscheck_{_name}": "string", f"crosscheck_{_name}_reason": "string",
                    f"crosscheck_{_name}_score": "Float64"})


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    return with_columns(frame, COLUMNS)


# ---------------------------------------------------------------- taggers


def make_tagger(config: CrosscheckConfig, paths: DatasetPaths) -> Tagger:
    """The recipe's autotagger. The local one is shared by the whole process; a
    Rekognition one is new each time, so its call budget counts one build."""
    if config.autotagger == "rekognition":
        return RekognitionTagger(
            paths.state_folder("rekognition"), region=config.region, endpoint_url=config.endpoint_url,
            rate_limit=config.rate_limit, max_calls=config.max_calls, faces=bool({"gender", "age"} & set(config.fields)),
            celebrities=config.celebrities or "celebrity" in config.fields, labels=bool(config.labels),
        )
    return local_tagger()


# ---------------------------------------------------------------- the plain, per-face rules


def _text(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def check_gender(crawled: Any, tags: Tags, spec: CrosscheckField) -> tuple[str, str, float | None]:
    """Gender rule: (outcome, reason, score = the tagger's probability that the crawled label is wrong)."""
    label = (_text(crawled) or "").lower()
    if label not in GENDERS:
        return SKIPPED, "gender: no crawled label", None
    if tags.gender not in GENDERS or tags.gender_confidence is None:
        return SKIPPED, f"gender: {tags.note or 'tagger gave no gender'}", None
    confidence = float(tags.gender_confidence)
    score = confidence / 100 if tags.gender != label else 1 - confidence / 100
    least = GENDER_MIN_CONFIDENCE if spec.min_confidence is None else spec.min_confidence
    if confidence < least:
        return SKIPPED, f"gender: tagger unsure ({math.floor(confidence)}% < {least:.0f}%)", score
    if tags.gender == label:
        return AGREE, f"gender: both {label}", score
    return DISAGREE, f"gender: crawled {label}, tagger {tags.gender} ({math.floor(confidence)}%)", score


def age_tolerance(spec: CrosscheckField, width: float | None) -> float:
    """Allowed difference: the recipe margin plus half the tagger's own range (Rekognition)."""
    margin = DEFAULT_MARGIN if spec.margin is None else float(spec.margin)
    return margin + (float(width) / 2 if width is not None and not pd.isna(width) else 0.0)


def check_age(crawled: Any, tags: Tags, spec: CrosscheckField) -> tuple[str, str, float | None]:
    """Age rule: disagree when the crawled age is further than the tolerance from the tagger's."""
    age = pd.to_numeric(pd.Series([_text(crawled)]), errors="coerce").iloc[0]
    if pd.isna(age):
        return SKIPPED, "age: no crawled age", None
    if tags.age is None:
        return SKIPPED, f"age: {tags.note or 'tagger gave no age'}", None
    tolerance = age_tolerance(spec, tags.age_width)
    gap = abs(float(age) - float(tags.age))
    score = calibration.tail_score(gap - tolerance)
    shown = f"{tags.age:.0f}" if tags.age_width is None else f"{tags.age - tags.age_width / 2:.0f}-{tags.age + tags.age_width / 2:.0f}"
    if gap <= tolerance:
        return AGREE, f"age: crawled {age:.0f}, tagger {shown}", score
    return DISAGREE, f"age: crawled {age:.0f}, tagger {shown} (margin {tolerance:g})", score


def check_target(crawled: Any, tags: Tags, config: CrosscheckConfig) -> tuple[str, str, float | None]:
    """Scene labels: a crawled target value should come with the tagger labels that mean it."""
    value = _text(crawled)
    if value is None:
        return SKIPPED, "label: no crawled label", None
    seen = {target: [n for n in names if tags.labels.get(n, 0.0) >= config.label_confidence]
            for target, names in config.labels.items()}
    if value in config.labels:
        if seen[value]:
            return AGREE, f"label: {value}, tagger saw {', '.join(seen[value])}", 0.0
        return DISAGREE, f"label: crawled {value}, tagger saw none of {', '.join(config.labels[value])}", 0.5
    others = [target for target, names in seen.items() if names]
    if others:
        found = seen[others[0]]
        return DISAGREE, f"label: crawled {value}, tagger saw {', '.join(found)} ({others[0]})", 0.5
    return AGREE, f"label: {value}", 0.0


def check_celebrity(crawled: Any, tags: Tags) -> tuple[str, str, float | None]:
    name = _text(crawled)
    if name is None or tags.celebrity is None:
        return SKIPPED, "celebrity: not recognised" if name else "celebrity: no crawled name", None
    confidence = tags.celebrity_confidence or 0.0
    if name.casefold() == tags.celebrity.casefold():
        return AGREE, f"celebrity: {name}", 0.0
    return DISAGREE, f"celebrity: crawled {name}, tagger {tags.celebrity} ({math.floor(confidence)}%)", confidence / 100


def combine(parts: list[tuple[str, str, float | None]]) -> tuple[str, str, float | None]:
    """One outcome per row: any disagreement wins, then any agreement, else skipped.

    The row's score is the largest score of its disagreeing checks (or of all its
    checks when none disagrees), so ranking by it puts the likeliest errors first."""
    if not parts:
        return SKIPPED, "nothing to check: crosscheck.fields and crosscheck.labels are empty", None
    outcomes = [p[0] for p in parts]
    outcome = DISAGREE if DISAGREE in outcomes else AGREE if AGREE in outcomes else SKIPPED
    chosen = [p for p in parts if p[0] == outcome] if outcome == DISAGREE else parts
    scores = [p[2] for p in chosen if p[2] is not None and not pd.isna(p[2])]
    return outcome, "; ".join(p[1] for p in chosen), (max(scores) if scores else None)


def _tags_of(row: pd.Series) -> Tags:
    """The tagger output stored in a row, back as `Tags`."""
    def number(column: str) -> float | None:
        value = row.get(column)
        return None if value is None or pd.isna(value) else float(value)

    labels = _text(row.get("autotag_labels"))
    return Tags(
        gender=_text(row.get("autotag_gender")), gender_confidence=number("autotag_gender_confidence"),
        age=number("autotag_age"), age_width=number("autotag_age_width"),
        labels=json.loads(labels) if labels else {}, celebrity=_text(row.get("autotag_celebrity")),
        note=_text(row.get("autotag_note")) or "",
    )


def active_checks(recipe: Recipe) -> list[str]:
    """The checks the recipe asks for, in the order reasons list them."""
    return [name for name in CHECKS if name in recipe.crosscheck.fields] + (["label"] if recipe.crosscheck.labels else [])


def plain_check(row: pd.Series, recipe: Recipe) -> dict[str, Any]:
    """The plain rules for one tagged row: per-check outcome, reason and score columns."""
    config = recipe.crosscheck
    tags = _tags_of(row)
    values: dict[str, Any] = {}
    for name in active_checks(recipe):
        if name == "label":
            part = check_target(row.get(recipe.target), tags, config)
        else:
            spec = config.fields[name]
            check = {"gender": check_gender, "age": check_age}.get(name)
            part = check(row.get(spec.field), tags, spec) if check else check_celebrity(row.get(spec.field), tags)
        values.update({f"crosscheck_{name}": part[0], f"crosscheck_{name}_reason": part[1],
                       f"crosscheck_{name}_score": part[2]})
    return values


def recombine(row: pd.Series, recipe: Recipe) -> dict[str, Any]:
    """The row's `crosscheck`, `crosscheck_reason` and `crosscheck_score` from its checks."""
    if _text(row.get("autotag_note")) == BUDGET_REACHED:
        return {"crosscheck": SKIPPED, "crosscheck_reason": BUDGET_REACHED, "crosscheck_score": None}
    parts = [(row[f"crosscheck_{n}"], row[f"crosscheck_{n}_reason"], row[f"crosscheck_{n}_score"])
             for n in active_checks(recipe) if not pd.isna(row.get(f"crosscheck_{n}"))]
    outcome, reason, score = combine(parts)
    return {"crosscheck": outcome, "crosscheck_reason": reason, "crosscheck_score": score}


def _set(frame: pd.DataFrame, index: Any, values: dict[str, Any]) -> None:
    for column, value in values.items():
        frame.at[index, column] = pd.NA if value is None else value


def _set_many(frame: pd.DataFrame, index: pd.Index, values: dict[str, Any]) -> None:
    for column, value in values.items():
        frame.loc[index, column] = pd.NA if value is None else value


# ---------------------------------------------------------------- per-image work


def tag_columns(tags: Tags, source: str) -> dict[str, Any]:
    return {
        "autotag_gender": tags.gender, "autotag_gender_confidence": tags.gender_confidence,
        "autotag_age": tags.age, "autotag_age_width": tags.age_width,
        "autotag_labels": json.dumps(tags.labels, sort_keys=True) if tags.labels else None,
        "autotag_celebrity": tags.celebrity, "autotag_source": source, "autotag_note": tags.note or None,
    }


def process_batch(rows: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *, tagger: Tagger | None = None) -> pd.DataFrame:
    """Tag a batch of kept rows that have a face crop and apply the plain rules."""
    out = _typed(rows.copy())
    if not len(out):
        return out
    tagger = tagger or make_tagger(recipe.crosscheck, paths)
    results = tagger.tag([paths.root / str(p) for p in out["face_path"]])
    for index, tags in zip(out.index, results):
        _set(out, index, tag_columns(tags, tagger.name))
        _set(out, index, plain_check(out.loc[index], recipe))
        _set(out, index, recombine(out.loc[index], recipe))
    if recipe.crosscheck.embeddings:
        crops = [paths.root / str(p) for p in out["face_path"]]
        out["face_embedding"] = pd.Series([encode_vector(v) for v in face_embedding.embed(crops)],
                                          index=out.index, dtype="string")
        out["autotag_second_age"] = pd.Series(second_age.estimate(crops), index=out.index, dtype="Float64")
    return _typed(out)


def _budget_plan(todo: pd.DataFrame, tagger: Tagger, config: CrosscheckConfig, paths: DatasetPaths) -> pd.Series:
    """Rows a paid tagger may call for within `max_calls` (cached responses cost nothing)."""
    affordable = pd.Series(True, index=todo.index)
    if not getattr(tagger, "paid", False) or config.max_calls is None:
        return affordable
    spent = 0
    for index, face in todo["face_path"].items():
        need = tagger.missing_calls([paths.root / str(face)])
        if spent + need > config.max_calls:
            affordable[index] = False
        else:
            spent += need
    return affordable


def _checked(frame: pd.DataFrame) -> pd.Series:
    """Rows this stage decides on: kept ones, and ones it quarantined itself on an earlier run."""
    return kept(frame).fillna(False) | _dropped_here(frame)


def _dropped_here(frame: pd.DataFrame) -> pd.Series:
    """Rows this stage quarantined (`on_disagreement: drop`) on an earlier run."""
    return frame["status"].eq(QUARANTINED) & frame["reason"].astype("string").str.startswith(AUTOTAGGER_DISAGREES).fillna(False)


def _to_tag(out: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, tagger: Tagger | None) -> pd.Series:
    """Rows to tag now; marks (in place) the checked rows that are not: no tagger, no face, over budget."""
    config = recipe.crosscheck
    checked = _checked(out)
    if config.autotagger == "none":
        out.loc[checked, "crosscheck"] = SKIPPED
        out.loc[checked, "crosscheck_reason"] = "autotagger: none"
        return pd.Series(False, index=out.index)
    has_face = out["face_path"].notna()
    no_face = checked & ~has_face
    out.loc[no_face, "crosscheck"] = SKIPPED
    out.loc[no_face, "crosscheck_reason"] = "no face crop to check"
    # Tagged before by this tagger: not again, unless the budget or the service stopped it.
    note = out["autotag_note"].astype("string")
    retry = note.eq(BUDGET_REACHED).fillna(False) | note.str.startswith("Rekognition ").fillna(False)
    stale = out["autotag_source"].ne(config.autotagger).fillna(True) | retry
    if config.embeddings:
        second_age.weights_path()  # installed? Say so before any work, not in every worker
        stale |= ~face_embedding.is_current(out["face_embedding"]) | out["autotag_second_age"].isna()
    todo = checked & has_face & stale
    if todo.any() and getattr(tagger, "paid", False):
        affordable = _budget_plan(out[todo], tagger, config, paths)
        over = affordable.index[~affordable]
        _set_many(out, over, {**tag_columns(Tags(note=BUDGET_REACHED), tagger.name),
                              "crosscheck": SKIPPED, "crosscheck_reason": BUDGET_REACHED})
        todo[over] = False
    return todo


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *,
        tagger: Tagger | None = None, mapper: Mapper | None = None) -> pd.DataFrame:
    """Tag every kept face not tagged yet, check it against its crawled labels, and report.

    A paid tagger works here, in one process, whatever mapper was given: its budget and
    rate limit then hold exactly, and its response cache makes re-runs free. The local
    model is not sent to workers: each loads its own (tagger None).
    """
    config = recipe.crosscheck
    if config.autotagger == "rekognition" and tagger is None:
        tagger = make_tagger(config, paths)
    return run_per_image(
        manifest, functools.partial(_to_tag, recipe=recipe, paths=paths, tagger=tagger),
        functools.partial(process_batch, recipe=recipe, paths=paths, tagger=tagger),
        lambda out, _: summarize(out, recipe, paths), columns=list(COLUMNS), batching=BATCHING,
        mapper=serial_mapper if getattr(tagger, "paid", False) else mapper, typed=_typed,
        decide=functools.partial(flag_and_honour, recipe=recipe, paths=paths))


def flag_and_honour(frame: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> pd.DataFrame:
    """The tagger's flags (with an autotagger), then the reviewers' decisions over them."""
    from tasks.crosscheck import decisions

    from tasks.crosscheck import validation

    flagged = frame if recipe.crosscheck.autotagger == "none" else flag(frame, recipe, paths)
    return validation.label_from(decisions.honour(flagged, recipe, paths), recipe, paths)


# ---------------------------------------------------------------- dataset-level decision


def flag(frame: pd.DataFrame, recipe: Recipe, paths: DatasetPaths | None = None) -> pd.DataFrame:
    """Final decision over all checked rows: re-applies the plain rules, then (with
    `calibrate`) the cross-fitted calibration, then the threshold learned from reviewed
    faces (with `paths`, once there are enough), then `on_disagreement`."""
    config = recipe.crosscheck
    out = _typed(frame.copy())
    rows = out[_checked(out) & out["autotag_source"].notna()]
    for index, row in rows.iterrows():
        _set(out, index, plain_check(row, recipe))
    out["crosscheck_age_expected"] = pd.NA
    if config.calibrate:
        out = calibration.apply(_typed(out), rows.index, recipe)
    if paths is not None:
        out = calibration.apply_thresholds(out, rows.index, learned_thresholds(out, recipe, paths))
    for index in rows.index:
        _set(out, index, recombine(out.loc[index], recipe))
    own = _dropped_here(out)
    out.loc[own, "status"] = KEPT  # re-decided below, so a changed recipe can bring faces back
    out.loc[own, "reason"] = pd.NA
    if config.on_disagreement == "drop":
        disagree = out["crosscheck"].eq(DISAGREE).fillna(False) & kept(out)
        set_status(out, disagree, QUARANTINED, AUTOTAGGER_DISAGREES + out["crosscheck_reason"].astype("string"))
    return _typed(out)


def learned_thresholds(frame: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> dict[str, Any]:
    """The flag thresholds reviewers' decisions teach (calibration.review_thresholds)."""
    from tasks.core import gold

    return calibration.review_thresholds(frame, recipe, gold.decision_table(paths.root), gold.read_sample(paths))


# ---------------------------------------------------------------- cost


def estimate_cost(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *, tagger: Tagger | None = None) -> dict[str, Any]:
    """Paid calls a build would make now (cached responses are free) and their public price.

    `faceset build --dry-run` prints this; it never calls the API.
    """
    config = recipe.crosscheck
    frame = _typed(manifest.copy())
    todo = frame[_checked(frame) & frame["face_path"].notna()]
    result: dict[str, Any] = {"autotagger": config.autotagger, "images": int(len(todo)), "calls": 0,
                              "cached_calls": 0, "usd": 0.0, "max_calls": config.max_calls, "over_budget_images": 0}
    if config.autotagger != "rekognition":
        return result
    tagger = tagger or make_tagger(config, paths)
    operations = len(tagger.operations)
    need = [tagger.missing_calls([paths.root / str(p)]) for p in todo["face_path"]]
    calls = sum(need)
    if config.max_calls is not None:
        spent, over = 0, 0
        for n in need:
            if spent + n > config.max_calls:
                over += 1
            else:
                spent += n
        result["over_budget_images"], calls = over, spent
    result.update(calls=int(calls), cached_calls=int(len(todo) * operations - sum(need)),
                  operations=list(tagger.operations), usd=price_usd(calls),
                  price_note="public Rekognition image-API prices, us-east-1, first tier $0.001 per image")
    return result


# ---------------------------------------------------------------- report


def summarize(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> dict[str, Any]:
    """Agreement tables per field, source and attribute; writes reports/crosscheck.json and review.html."""
    from tasks.crosscheck import metrics as crosscheck_report
    from tasks.crosscheck import decisions, review, validation

    summary = crosscheck_report.build(_typed(manifest.copy()), recipe)
    summary["checks"] = {name: spec.field for name, spec in recipe.crosscheck.fields.items()}
    summary["decisions"] = decisions.summary(manifest, recipe, paths)  # what reviewers changed (report, card)
    checked = validation.write(_typed(manifest.copy()), recipe, paths)  # reports/validation.json: against gold
    summary["threshold"] = learned_thresholds(manifest, recipe, paths)  # learned from reviews, with expected precision
    summary["flag_trust"] = validation.flag_trust(summary, checked, recipe)  # what the flags may be said to mean
    write_report(paths, "crosscheck", summary)
    review.write(_typed(decisions.unsettled(manifest).copy()), recipe, paths, summary, checked)
    return summary
