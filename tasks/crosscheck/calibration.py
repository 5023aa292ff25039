"""Learning how the autotagger errs on this dataset, from the dataset's own labels.

Most crawled labels are right, so the dataset itself can teach what a tagger's opinion
means here (`crosscheck.calibrate: true`, the default; it needs MIN_ROWS labelled faces):

- with the face descriptors the dedupe stage wrote (`face_descriptor`, dlib ResNet), a
  model trained on the dataset itself gives an independent opinion (confident learning):
  support-vector regression of the crawled age on the descriptor, the tagger's age, the
  recipe's other attributes (gender, race: one-hot) and, where the manifest has them
  (`crosscheck.embeddings: true`), Lite0 image features (`face_embedding`, which alone
  also suffice for age) and a second age model's age (`autotag_second_age`), fitted
  without the training rows it fits worst; and logistic regression of the crawled gender
  on the descriptor and the tagger's logit. On UTKFace adults with planted errors this
  ranks them better than the tagger alone, each added input better again, and more
  labelled faces help (measured: docs/benchmarks.md, 'cross-check');
- without descriptors (or embeddings, for age), ages are calibrated by an isotonic map
  from the tagger's age to the crawled one plus a shift per group of the recipe's other
  attributes; gender keeps the tagger's own probability (logistic calibration ranked
  planted errors worse).

No face's own label may score it: every row's expected value comes from a model fitted
on the other folds (K-fold cross-fitting), and fits resist wrong labels (trimmed
isotonic refit; SVR's linear, epsilon-insensitive loss and its refit without the worst-fit
rows). A gender is flagged when its learned chance of being wrong is GENDER_FLAG or more;
an age when it lies further than max(margin, Z_FLAG spreads) from its expected age, the
spread growing with the expected age. The threshold comes from the out-of-fold residuals
only, never from known errors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVR
from sklearn.model_selection import KFold

from tasks.crosscheck.autotag import GENDERS
from tasks.core.reasons import BUDGET_REACHED
from tasks.core.recipe import Recipe

MIN_ROWS = 100  # fewer labelled faces than this: the plain rules decide
FOLDS = 10  # each model trains on 9/10 of the rows; measured better than 5 (docs/benchmarks.md, 'cross-check')
SEED = 13
Z_FLAG = 1.5  # spreads between the crawled and the expected age that flag a label
TRIM = 3.0  # residuals beyond this many spreads are left out of the age fit
GENDER_FLAG = 0.7  # learned probability that the crawled gender is wrong
PRIOR_ERROR = 0.05  # share of crawled ages assumed wrong, for the age score only
ERROR_RANGE = 40.0  # years over which a wrong age may fall
MAX_SVR_ROWS = 5000  # training rows per fold for the age model, at most
DESCRIPTOR_SCALE = 3.0  # descriptor entries are ~0.1: scaled to weigh like the tagger's age
AGE_DESCRIPTOR_WEIGHT = 1.5  # the descriptor weighs more than the embedding in the age model's kernel
EMBEDDING_DIMS = 128  # main directions of the Lite0 embedding given to the age model
REFIT_DROP = 0.05  # share of training rows furthest from an inner fit left out of the final one
INNER_FOLDS = 3
TAGGER_SCALE = 7.5  # years per kernel unit of the tagger's age, its strongest input: with 15, on
# 400 faces with Lite0 embeddings only, the model leant too little on it and aged worse than the tagger


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


def isotonic_age(tagger: np.ndarray, crawled: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Cross-fitted calibrated age: isotonic map of the tagger's age plus group shifts."""
    expected = np.empty(len(tagger))
    for train, test in _folds(len(tagger)):
        iso, shifts = _fit_age(tagger[train], crawled[train], groups[train])
        expected[test] = iso.predict(tagger[test]) + groups[test] @ shifts
    return expected


def spread_of(expected: np.ndarray, crawled: np.ndarray) -> np.ndarray:
    """Typical distance of correct labels from their out-of-fold expected age, per row, as
    a function of the expected age: older faces are harder to age (on UTKFace adults the
    clean-label error doubles from the twenties to the seventies), so a 12-year gap means
    more at 25 than at 70. A monotone (isotonic) fit of the absolute gap on the expected
    age, with gaps capped at their 90th percentile so that wrong labels barely count,
    scaled to a normal spread (x1.25); at least 1 year."""
    gap = np.abs(crawled - expected)
    capped = np.minimum(gap, np.quantile(gap, 0.9))
    fit = IsotonicRegression(out_of_bounds="clip").fit(expected, capped)
    return np.maximum(1.2533 * fit.predict(expected), 1.0)


def descriptors_of(frame: pd.DataFrame) -> np.ndarray | None:
    """The dedupe stage's face descriptors (NaN rows filled with the mean), or None if absent."""
    if "face_descriptor" not in frame or frame["face_descriptor"].notna().sum() < MIN_ROWS:
        return None
    from tasks.core.vectors import decode_vectors

    vectors = decode_vectors(frame["face_descriptor"], width=128).astype(float)
    means = np.nanmean(vectors, axis=0)
    return np.where(np.isnan(vectors), means, vectors)


def embeddings_of(frame: pd.DataFrame) -> np.ndarray | None:
    """Lite0 embeddings (`face_embedding`, tasks/crosscheck/embeddings.py) reduced to their
    EMBEDDING_DIMS main directions, or None if absent. The reduction uses no labels (so it
    cannot leak one); with all its dimensions the kernel's distances drown in noise."""
    if "face_embedding" not in frame or frame["face_embedding"].notna().sum() < MIN_ROWS:
        return None
    from sklearn.decomposition import PCA

    from tasks.core.vectors import decode_vectors

    vectors = decode_vectors(frame["face_embedding"])
    if vectors is None:
        return None
    vectors = np.where(np.isnan(vectors), np.nanmean(vectors, axis=0), vectors).astype(float)
    vectors = (vectors - vectors.mean(axis=0)) / (vectors.std(axis=0) + 1e-6)
    main = PCA(min(EMBEDDING_DIMS, *vectors.shape), random_state=SEED).fit_transform(vectors)
    return main / (main[:, 0].std() + 1e-9) / np.sqrt(main.shape[1]) * DESCRIPTOR_SCALE


def second_ages_of(frame: pd.DataFrame) -> np.ndarray | None:
    """The second age model's ages (`autotag_second_age`, tasks/crosscheck/second_age.py) as one input
    column scaled like the tagger's age (missing ones filled with the mean), or None if absent."""
    if "autotag_second_age" not in frame or frame["autotag_second_age"].notna().sum() < MIN_ROWS:
        return None
    ages = _second_ages(frame)
    return _age_input(np.where(np.isnan(ages), np.nanmean(ages), ages))[:, None]


def _second_ages(frame: pd.DataFrame) -> np.ndarray:
    return frame["autotag_second_age"].astype("Float64").to_numpy(float, na_value=np.nan)


def _age_input(ages: np.ndarray) -> np.ndarray:
    """A tagger's age as a model input: centred and scaled so it weighs as it should."""
    return (ages - 40.0) / TAGGER_SCALE


def _svr(inputs: np.ndarray, crawled: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> SVR:
    if len(rows) > MAX_SVR_ROWS:  # its fit grows with the square of the rows
        rows = rng.choice(rows, MAX_SVR_ROWS, replace=False)
    return SVR(C=30.0, epsilon=2.0, gamma="scale").fit(inputs[rows], crawled[rows])


def _trusted(inputs: np.ndarray, crawled: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The training rows to keep: all but the REFIT_DROP share furthest from an inner
    out-of-fold prediction made from these rows alone (so no outside label decides)."""
    gap = np.empty(len(rows))
    for fit, held in KFold(INNER_FOLDS, shuffle=True, random_state=SEED).split(rows):
        gap[held] = np.abs(crawled[rows[held]] - _svr(inputs, crawled, rows[fit], rng).predict(inputs[rows[held]]))
    return rows[gap <= np.quantile(gap, 1 - REFIT_DROP)]


def learned_age(tagger: np.ndarray, crawled: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Cross-fitted age from the tagger's age and face features (support-vector regression:
    its epsilon-insensitive, linear loss lets a few wrong labels pull little).

    Confident-learning refit: within each fold's training rows, those whose label lies
    furthest from an inner out-of-fold prediction (the top REFIT_DROP, most of them wrong
    labels) are left out before the fold's model is fitted, so wrong labels teach it even
    less. Everything a row's score depends on comes from the other folds' rows: its own
    label neither trains its model nor decides which rows train it."""
    inputs = np.column_stack([features, _age_input(tagger)])
    expected = np.empty(len(crawled))
    rng = np.random.default_rng(SEED)
    for train, test in _folds(len(crawled)):
        expected[test] = _svr(inputs, crawled, _trusted(inputs, crawled, train, rng), rng).predict(inputs[test])
    return expected


def learned_gender_wrong(p_male: np.ndarray, crawled_male: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Cross-fitted probability that each crawled gender is the other one, from the
    tagger's logit and the face descriptor (logistic regression)."""
    logit = np.log(np.clip(p_male, 1e-6, 1 - 1e-6) / np.clip(1 - p_male, 1e-6, 1))
    inputs = np.column_stack([logit, features])
    male = np.empty(len(p_male))
    for train, test in _folds(len(p_male)):
        model = LogisticRegression(C=1.0, max_iter=2000).fit(inputs[train], crawled_male[train])
        male[test] = model.predict_proba(inputs[test])[:, 1]
    return np.where(crawled_male == 1, 1 - male, male)


def calibrate_gender(frame: pd.DataFrame, recipe: Recipe) -> dict[str, Any] | None:
    """Learned gender outcome, reason and score, where face descriptors are available."""
    spec = recipe.crosscheck.fields["gender"]
    crawled = frame[spec.field].astype("string").str.strip().str.lower()
    tagger = frame["autotag_gender"].astype("string")
    usable = (crawled.isin(GENDERS) & tagger.isin(GENDERS)).fillna(False)
    rows = frame[usable]
    features = descriptors_of(rows) if len(rows) >= MIN_ROWS else None
    if features is None or crawled[usable].nunique() < 2:
        return None
    confidence = rows["autotag_gender_confidence"].astype(float).to_numpy() / 100
    said = tagger[usable].to_numpy()
    label = crawled[usable].to_numpy()
    wrong = learned_gender_wrong(np.where(said == "male", confidence, 1 - confidence), (label == "male").astype(int), features)
    outcome = np.where(wrong >= GENDER_FLAG, "disagree", "agree")
    reasons = [f"gender: crawled {c}, tagger {t} ({math.floor(100 * p)}%), learned chance of error {w:.0%}"
               for c, t, p, w in zip(label, said, confidence, wrong)]
    return {"index": rows.index, "outcome": outcome, "reason": reasons, "score": wrong}


def age_error_probability(gap: np.ndarray, spread: np.ndarray | float) -> np.ndarray:
    """Chance that a crawled age is wrong given its gap to the expected age, so that age
    and gender scores rank on one scale: correct labels lie half-normally around the
    expectation (scale `spread`), wrong ones anywhere within ERROR_RANGE years, and
    PRIOR_ERROR of labels are wrong. Monotone in the gap."""
    clean = (1 - PRIOR_ERROR) * np.sqrt(2 / np.pi) / spread * np.exp(-0.5 * (gap / spread) ** 2)
    wrong = PRIOR_ERROR / ERROR_RANGE
    return wrong / (wrong + clean)


def _groups(frame: pd.DataFrame, recipe: Recipe, exclude: str) -> np.ndarray:
    """Group indicators from the recipe's attributes other than the checked field."""
    from tasks.core.binning import field_labels

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
    raw = tagger[usable].to_numpy(float)
    descriptors, embeddings, second = descriptors_of(rows), embeddings_of(rows), second_ages_of(rows)
    found = ([] if descriptors is None else [AGE_DESCRIPTOR_WEIGHT * descriptors]) + ([] if embeddings is None else [embeddings])
    found += [] if second is None else [second]
    features = np.column_stack([*found, groups]) if found else None
    expected = isotonic_age(raw, y, groups) if features is None else learned_age(raw, y, features)
    spread = spread_of(expected, y)
    margin = 5.0 if spec.margin is None else float(spec.margin)
    tolerance = np.maximum(margin, Z_FLAG * spread)
    gap = np.abs(y - expected)
    score = age_error_probability(gap, spread)
    outcome = np.where(gap > tolerance, "disagree", "agree")
    other = _second_ages(rows) if "autotag_second_age" in rows else np.full(len(rows), np.nan)
    said = [f"tagger {r:.0f}" + ("" if np.isnan(a) else f", second model {a:.0f}") for r, a in zip(raw, other)]
    reasons = [f"age: crawled {c:.0f}, {t}, calibrated {e:.0f}" + (f" (margin {m:.0f})" if o == "disagree" else "")
               for o, c, t, e, m in zip(outcome, y, said, expected, tolerance)]
    return {"index": rows.index, "outcome": outcome, "reason": reasons, "score": score, "expected": expected}


def apply(frame: pd.DataFrame, index: pd.Index, recipe: Recipe) -> pd.DataFrame:
    """Replace the plain decisions of rows `index` by calibrated or learned ones where there
    are enough labelled faces (the caller recombines each row's outcome and score)."""
    out = frame
    rows = out.loc[index]
    rows = rows[rows["autotag_note"].ne(BUDGET_REACHED).fillna(True)]
    for name, calibrate in (("gender", calibrate_gender), ("age", calibrate_age)):
        result = calibrate(rows, recipe) if name in recipe.crosscheck.fields else None
        if result is None:
            continue
        idx = result["index"]
        out.loc[idx, f"crosscheck_{name}"] = result["outcome"]
        out.loc[idx, f"crosscheck_{name}_reason"] = result["reason"]
        out.loc[idx, f"crosscheck_{name}_score"] = result["score"]
        if "expected" in result:
            out.loc[idx, "crosscheck_age_expected"] = result["expected"]
    return out


# ---------------------------------------------------------------- the flag threshold, learned from reviews

MIN_REVIEWED = 40  # reviewed faces of a check before its threshold is learned from them
MIN_REVIEWED_ERRORS = 8  # and label errors among them: fewer and the recall moves by one face's worth


def reviewed_errors(frame: pd.DataFrame, decisions: pd.DataFrame, field: str) -> pd.Series:
    """Per reviewed row (index of `frame`): True where a reviewer relabelled `field` (the
    crawled label was wrong), False where they kept the face or that field (it was right)."""
    if decisions is None or not len(decisions):
        return pd.Series(dtype=bool)
    rows = {str(item): index for index, item in frame["item_id"].items()}
    verdict: dict[Any, bool] = {}
    for d in decisions.to_dict("records"):
        index = rows.get(str(d["item_id"]))
        name = d.get("field")
        name = None if name is None or pd.isna(name) or not str(name).strip() else str(name)
        if index is None:
            continue
        if d.get("action") == "relabel" and name == field:
            verdict[index] = True
        elif d.get("action") == "keep" and name in (None, field):
            verdict.setdefault(index, False)
    return pd.Series(verdict, dtype=bool)


def learn_threshold(scores: np.ndarray, errors: np.ndarray, target_recall: float) -> dict[str, float] | None:
    """The highest score threshold at which flagging `score >= threshold` finds at least
    `target_recall` of the reviewed errors, with its recall and precision on the reviewed
    faces (scikit-learn's precision-recall curve). None without errors to find."""
    from sklearn.metrics import precision_recall_curve

    if not errors.any() or errors.all():
        return None
    precision, recall, thresholds = precision_recall_curve(errors.astype(int), scores)
    reach = np.flatnonzero(recall[:-1] >= target_recall)  # the last point is (recall 0, no threshold)
    best = reach[-1]
    return {"threshold": float(thresholds[best]), "recall": float(recall[best]), "precision": float(precision[best])}


def review_thresholds(frame: pd.DataFrame, recipe: Recipe, decisions: pd.DataFrame | None,
                      sample: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per check (gender, age), the threshold learned from reviewed faces where there are enough.

    Faces of the validation sample are used alone when there are enough of them: they
    are a random draw, so the recall measured on them is the dataset's. Otherwise every
    reviewed face is: the flags queue shows flagged faces first, so errors the flags miss
    are under-represented and the recall reached may be lower than measured; the report
    says which was used."""
    found: dict[str, dict[str, Any]] = {}
    target = recipe.crosscheck.target_recall
    for check in ("gender", "age"):
        spec = recipe.crosscheck.fields.get(check)
        column = f"crosscheck_{check}_score"
        if spec is None or column not in frame:
            continue
        verdict = reviewed_errors(frame, decisions, spec.field)
        scores = frame[column].astype("Float64").reindex(verdict.index)
        verdict = verdict[scores.notna().to_numpy()]
        in_sample = verdict[frame.loc[verdict.index, "item_id"].astype(str).isin(sample or set()).to_numpy()]
        used, basis = ((in_sample, "validation sample") if len(in_sample) >= MIN_REVIEWED and in_sample.sum() >= MIN_REVIEWED_ERRORS
                       else (verdict, "all reviewed faces (mostly from the flags queue: recall may be overstated)"))
        if len(used) < MIN_REVIEWED or used.sum() < MIN_REVIEWED_ERRORS:
            continue
        learned = learn_threshold(frame.loc[used.index, column].astype(float).to_numpy(), used.to_numpy(), target)
        if learned is None:
            continue
        found[check] = {**{k: round(v, 4) for k, v in learned.items()}, "threshold": learned["threshold"],  # exact: scores tie
                        "reviewed": int(len(used)),
                        "errors": int(used.sum()), "target_recall": target, "basis": basis,
                        "says": (f"{check} flag threshold learned from {len(used)} reviewed faces ({int(used.sum())} label "
                                 f"errors, {basis}): it finds {learned['recall']:.0%} of their errors (asked: {target:.0%}); "
                                 f"expected precision there {learned['precision']:.0%}")}
    return found


def apply_thresholds(frame: pd.DataFrame, index: pd.Index, learned: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Re-decide each check of rows `index` by its learned threshold: disagree at or above it."""
    for check, found in learned.items():
        column = f"crosscheck_{check}"
        rows = index[frame.loc[index, f"{column}_score"].notna().to_numpy()]
        high = frame.loc[rows, f"{column}_score"].astype(float) >= found["threshold"]
        frame.loc[rows, column] = np.where(high, "disagree", "agree")
        reason = frame.loc[rows, f"{column}_reason"].astype("string").fillna(check)
        frame.loc[rows, f"{column}_reason"] = reason + f" (threshold learned from {found['reviewed']} reviews)"
    return frame
