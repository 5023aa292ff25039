"""reports/validation.json: the crawled labels, each autotagger and the flags, scored against gold.

Gold labels (tasks.core.gold: an imported CSV, or decisions on the review app's
validation sample) are the only figures that say how good a label source is; agreement
between two unvalidated sources says nothing of which is right. For every field with
gold, as the Images-as-Data book's Tables 6.1 and 6.2 set them out:

- categorical fields (gender, the target via the tagger's scene labels, a celebrity
  name): confusion matrix (rows gold, columns the source), accuracy, per-class
  precision, recall and F1, Cohen's kappa (scikit-learn). A face the source gave no
  answer for is the column `(no answer)`: it counts against recall and accuracy, not
  as "skipped". Precision, recall and accuracy carry 95% Wilson intervals (statsmodels);
  F1, a ratio of two counts that move together, a bootstrap interval over the faces;
- numeric fields (age): mean absolute error over the answered faces and within-margin
  accuracy (|source - gold| <= the recipe's margin; no answer counts as outside);
- the cross-check's flags: a crawled label is an error when it differs from gold (ages:
  by more than the margin); precision and recall of `disagree` against those errors;
- several labellers on one face: Krippendorff's alpha (`krippendorff`) and the faces
  they disagree on. The consensus gold value is their majority (median for numbers); a
  tie leaves the face out of the figures, listed.

A figure resting on fewer than MIN_GROUP faces is marked `too_few_to_judge`.
"""

from __future__ import annotations

import json
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
from sklearn.metrics import (accuracy_score, cohen_kappa_score, confusion_matrix, mean_absolute_error,
                             precision_recall_fscore_support)
from statsmodels.stats.proportion import proportion_confint

from tasks.core import gold
from tasks.core.binning import MIN_GROUP
from tasks.core.decisions import manifest_fields
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe
from tasks.core.reports import write_report

NO_ANSWER = "(no answer)"
DEFAULT_MARGIN = 5.0
BOOTSTRAP = 1000  # resamples for the F1 interval
SEED = 13
DISAGREEMENTS_LISTED = 100


def _round(value: Any, digits: int = 4) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), digits)


def wilson(successes: int, trials: int) -> list[float] | None:
    """95% Wilson interval of a proportion (statsmodels), None without trials."""
    if not trials:
        return None
    low, high = proportion_confint(int(successes), int(trials), alpha=0.05, method="wilson")
    return [_round(low), _round(high)]


def _text(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = " ".join(str(value).split())
    return text or None


def _category(value: Any) -> str | None:
    text = _text(value)
    return None if text is None else text.casefold()


def _f1_interval(matrix: np.ndarray, column: int, rng: np.random.Generator) -> list[float] | None:
    """Bootstrap 95% interval of one class's F1: faces resampled (the confusion cells drawn
    multinomially with the observed shares), F1 recomputed from each resample's counts."""
    n = int(matrix.sum())
    if not n:
        return None
    draws = rng.multinomial(n, (matrix / n).ravel(), size=BOOTSTRAP).reshape(BOOTSTRAP, *matrix.shape)
    tp = draws[:, column, column]
    fp = draws[:, :, column].sum(axis=1) - tp
    fn = draws[:, column, :].sum(axis=1) - tp
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return [_round(np.quantile(f1, 0.025)), _round(np.quantile(f1, 0.975))]


def categorical(gold: list[str], said: list[str | None]) -> dict[str, Any]:
    """A source's answers against gold, for a field with classes."""
    predicted = [NO_ANSWER if s is None else s for s in said]
    classes = sorted(set(gold))
    columns = classes + sorted(set(predicted) - set(classes) - {NO_ANSWER}) + ([NO_ANSWER] if NO_ANSWER in predicted else [])
    matrix = confusion_matrix(gold, predicted, labels=columns)
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=classes, zero_division=np.nan)
    correct = int(sum(g == p for g, p in zip(gold, predicted)))
    rng = np.random.default_rng(SEED)
    per_class = {}
    for i, name in enumerate(classes):
        tp, said_it = int(matrix[i, i]), int(matrix[:, i].sum())
        per_class[name] = {
            "support": int(support[i]), "predicted": said_it,
            "precision": _round(precision[i]), "precision_ci": wilson(tp, said_it),
            "recall": _round(recall[i]), "recall_ci": wilson(tp, int(support[i])),
            "f1": _round(f1[i]), "f1_ci": _f1_interval(matrix, i, rng),
        }
    return {
        "n": len(gold), "answered": int(sum(p != NO_ANSWER for p in predicted)),
        "accuracy": _round(accuracy_score(gold, predicted)), "accuracy_ci": wilson(correct, len(gold)),
        "kappa": _round(cohen_kappa_score(gold, predicted)) if len(set(gold) | set(predicted)) > 1 else None,
        "confusion": {g: {c: int(matrix[i, j]) for j, c in enumerate(columns)} for i, g in enumerate(classes)},
        "classes": per_class, "too_few_to_judge": len(gold) < MIN_GROUP,
    }


def celebrities(gold: list[str], said: list[str | None]) -> dict[str, Any]:
    """Names against gold, as the book's Table 6.2: precision over the faces the tagger named,
    recall over every gold face (a face it did not recognise is a miss)."""
    predicted = [NO_ANSWER if s is None else s for s in said]
    names = sorted((set(gold) | set(predicted)) - {NO_ANSWER})
    precision, recall, f1, _ = precision_recall_fscore_support(gold, predicted, labels=names, average="micro",
                                                               zero_division=np.nan)
    recognised = sum(p != NO_ANSWER for p in predicted)
    correct = sum(g == p for g, p in zip(gold, predicted))
    return {"n": len(gold), "recognised": int(recognised), "correct": int(correct),
            "precision": _round(precision), "precision_ci": wilson(correct, recognised),
            "recall": _round(recall), "recall_ci": wilson(correct, len(gold)), "f1": _round(f1),
            "too_few_to_judge": len(gold) < MIN_GROUP}


def numeric(gold: list[float], said: list[float | None], margin: float) -> dict[str, Any]:
    """A source's numbers against gold: MAE over its answers, within-margin accuracy over all."""
    answered = [(g, s) for g, s in zip(gold, said) if s is not None and not pd.isna(s)]
    within = sum(abs(s - g) <= margin for g, s in answered)
    result: dict[str, Any] = {"n": len(gold), "answered": len(answered), "margin": margin,
                              "within_margin": _round(within / len(gold)) if gold else None,
                              "within_margin_ci": wilson(within, len(gold)), "too_few_to_judge": len(gold) < MIN_GROUP}
    if answered:
        g, s = np.array(answered, dtype=float).T
        result.update(mae=_round(mean_absolute_error(g, s), 2), mean_error=_round(float(np.mean(s - g)), 2))
    return result


def flag_scores(wrong: list[bool], flagged: list[bool]) -> dict[str, Any]:
    """Precision and recall of the flags against the label errors gold reveals."""
    hits = sum(w and f for w, f in zip(wrong, flagged))
    precision, recall, _, _ = precision_recall_fscore_support(wrong, flagged, average="binary", zero_division=np.nan)
    return {"n": len(wrong), "errors": int(sum(wrong)), "flagged": int(sum(flagged)), "flagged_errors": int(hits),
            "precision": _round(precision) if any(flagged) else None, "precision_ci": wilson(hits, sum(flagged)),
            "recall": _round(recall) if any(wrong) else None, "recall_ci": wilson(hits, sum(wrong)),
            "too_few_to_judge": sum(flagged) < MIN_GROUP or sum(wrong) < MIN_GROUP}


# ---------------------------------------------------------------- the recipe's fields and their sources


def field_kinds(recipe: Recipe) -> dict[str, tuple[str, str]]:
    """Manifest field -> (check name, kind) for the fields a tagger has an opinion on."""
    kinds = {spec.field: (name, {"age": "numeric", "celebrity": "celebrity"}.get(name, "categorical"))
             for name, spec in recipe.crosscheck.fields.items()}
    if recipe.crosscheck.labels:
        kinds.setdefault(recipe.target, ("label", "categorical"))
    return kinds


def margin_of(recipe: Recipe, check: str) -> float:
    spec = recipe.crosscheck.fields.get(check)
    return DEFAULT_MARGIN if spec is None or spec.margin is None else float(spec.margin)


def crawled_values(frame: pd.DataFrame, field: str) -> pd.Series:
    """The value the site gave: `<field>_crawled` where a reviewer's relabel replaced it."""
    values = frame[field].astype("string")
    if f"{field}_crawled" in frame:
        values = frame[f"{field}_crawled"].astype("string").fillna(values)
    return values


def _tagger_target(labels: Any, recipe: Recipe) -> str | None:
    """The target value the tagger's scene labels mean (the first target whose labels it saw)."""
    text = _text(labels)
    seen = json.loads(text) if text else {}
    for target, names in recipe.crosscheck.labels.items():
        if any(seen.get(n, 0.0) >= recipe.crosscheck.label_confidence for n in names):
            return target
    return None


def sources(frame: pd.DataFrame, field: str, check: str | None, recipe: Recipe) -> dict[str, pd.Series]:
    """Every source of a value for `field`: the crawl, then each autotagger's opinion."""
    found = {"crawled": crawled_values(frame, field)}
    if check is None or "autotag_source" not in frame:
        return found
    names = frame["autotag_source"].astype("string").dropna().unique()
    tagger = f"tagger {names[0]}" if len(names) == 1 else "tagger"
    if check == "gender":
        found[tagger] = frame["autotag_gender"].astype("string")
    elif check == "age":
        found[tagger] = frame["autotag_age"].astype("Float64")
        for column, name in (("crosscheck_age_expected", "calibrated age"), ("autotag_second_age", "second age model")):
            if column in frame and frame[column].notna().any():
                found[name] = frame[column].astype("Float64")
    elif check == "celebrity":
        found[tagger] = frame["autotag_celebrity"].astype("string")
    elif check == "label":
        found[f"{tagger} scene labels"] = frame["autotag_labels"].map(lambda v: _tagger_target(v, recipe)).astype("string")
    return found


# ---------------------------------------------------------------- consensus and agreement


def consensus(table: pd.DataFrame, kind: str) -> tuple[pd.Series, list[dict[str, Any]]]:
    """One gold value per face from its labellers' labels, and the faces they disagree on.

    Categories: the majority (a tie: no gold, listed); numbers: the median."""
    values, disagreements = {}, []
    for item, rows in table.groupby("item_id", sort=True):
        labels = dict(zip(rows["labeller"].astype(str), rows["value"].astype(str)))
        if kind == "numeric":
            numbers = pd.to_numeric(pd.Series(list(labels.values())), errors="coerce").dropna()
            if numbers.empty:
                continue
            values[item] = float(numbers.median())
            differs = numbers.max() - numbers.min() > 0
        else:
            counts = pd.Series([_category(v) for v in labels.values()]).value_counts()
            top = counts[counts == counts.max()]
            differs = len(counts) > 1
            if len(top) == 1:
                values[item] = str(top.index[0])
        if differs:
            disagreements.append({"item_id": str(item), "labels": labels, "gold": values.get(item)})
    return pd.Series(values, dtype=object), disagreements


def agreement(table: pd.DataFrame, kind: str) -> dict[str, Any] | None:
    """Krippendorff's alpha over the faces two or more labellers labelled (None when there are none)."""
    shared = table.groupby("item_id")["labeller"].transform("nunique") >= 2
    rows = table[shared]
    if rows.empty:
        return None
    wide = rows.pivot_table(index="labeller", columns="item_id", values="value", aggfunc="last")
    if kind == "numeric":
        data, level = wide.apply(pd.to_numeric, errors="coerce").to_numpy(float), "interval"
    else:
        cased = wide.map(_category)
        codes = {v: i for i, v in enumerate(sorted(set(cased.stack().dropna())))}
        data, level = cased.map(lambda v: codes.get(v, np.nan) if isinstance(v, str) else np.nan).to_numpy(float), "nominal"
    distinct = len(set(data[~np.isnan(data)]))
    alpha = krippendorff.alpha(reliability_data=data, level_of_measurement=level) if distinct > 1 else None
    return {"faces": int(wide.shape[1]), "labellers": sorted(map(str, wide.index)), "alpha": _round(alpha),
            "level": level, "note": None if distinct > 1 else "every label is the same value: alpha is undefined",
            "too_few_to_judge": wide.shape[1] < MIN_GROUP}


# ---------------------------------------------------------------- the report


def _is_wrong(crawled: Any, truth: Any, kind: str, margin: float) -> bool | None:
    if kind == "numeric":
        number = pd.to_numeric(pd.Series([_text(crawled)]), errors="coerce").iloc[0]
        return None if pd.isna(number) else bool(abs(float(number) - float(truth)) > margin)
    value = _category(crawled)
    return None if value is None else value != truth


def field_report(frame: pd.DataFrame, table: pd.DataFrame, field: str, recipe: Recipe) -> dict[str, Any]:
    """Every figure for one field with gold."""
    check, kind = field_kinds(recipe).get(field, (None, "categorical"))
    if kind == "categorical" and check is None:
        numbers = pd.to_numeric(table["value"], errors="coerce")
        kind = "numeric" if numbers.notna().all() and len(numbers) else kind
    margin = margin_of(recipe, check or "")
    truth, disagreements = consensus(table, kind)
    rows = frame.loc[frame["item_id"].astype(str).isin(truth.index)]
    gold = truth.loc[rows["item_id"].astype(str)].tolist()
    result: dict[str, Any] = {"kind": kind, "check": check, "faces": len(truth), "labels": int(len(table)),
                              "labellers": sorted(table["labeller"].astype(str).unique()), "sources": {}}
    for name, values in sources(rows, field, check, recipe).items():
        if kind == "numeric":
            said = pd.to_numeric(values.astype("string"), errors="coerce").astype(float).tolist()
            result["sources"][name] = numeric(gold, [None if pd.isna(s) else s for s in said], margin)
        elif kind == "celebrity":
            result["sources"][name] = celebrities(gold, [_category(v) for v in values])
        else:
            result["sources"][name] = categorical(gold, [_category(v) for v in values])
    if check is not None and f"crosscheck_{check}" in rows:
        outcome = rows[f"crosscheck_{check}"].astype("string")
        judged = [(w, o == "disagree") for w, o in
                  zip((_is_wrong(c, g, kind, margin) for c, g in zip(crawled_values(rows, field), gold)), outcome)
                  if w is not None and not pd.isna(o) and o in ("agree", "disagree")]
        if judged:
            result["flags"] = {**flag_scores([w for w, _ in judged], [f for _, f in judged]),
                               "error_means": f"differs from gold by more than {margin:g}" if kind == "numeric"
                               else "differs from gold"}
    result["agreement"] = agreement(table, kind)
    result["disagreements"] = disagreements[:DISAGREEMENTS_LISTED]
    result["disagreement_count"] = len(disagreements)
    return result


def flags_on_decisions(frame: pd.DataFrame, decisions: pd.DataFrame, recipe: Recipe) -> dict[str, Any]:
    """Precision of the flags among the flagged faces reviewers decided on: a keep says the
    crawled label was right (a false flag), a relabel of the field that it was wrong."""
    result: dict[str, Any] = {}
    if decisions is None or not len(decisions):
        return result
    by_item = frame.set_index(frame["item_id"].astype(str))
    for field, (check, _) in field_kinds(recipe).items():
        column = f"crosscheck_{check}"
        if column not in by_item:
            continue
        flagged = set(by_item.index[by_item[column].eq("disagree").fillna(False)])
        verdicts: dict[str, bool] = {}
        for d in decisions.to_dict("records"):
            item, name = str(d["item_id"]), _text(d.get("field"))
            if item not in flagged:
                continue
            if d.get("action") == "relabel" and name == field:
                verdicts[item] = True
            elif d.get("action") == "keep" and name in (None, field):
                verdicts.setdefault(item, False)
        if verdicts:
            hits = sum(verdicts.values())
            result[field] = {"reviewed_flags": len(verdicts), "errors": int(hits),
                             "precision": _round(hits / len(verdicts)), "precision_ci": wilson(hits, len(verdicts)),
                             "too_few_to_judge": len(verdicts) < MIN_GROUP}
    return result


def build(manifest: pd.DataFrame, recipe: Recipe, gold_labels: pd.DataFrame, decisions: pd.DataFrame | None = None) -> dict[str, Any]:
    """The whole of reports/validation.json."""
    summary: dict[str, Any] = {
        "gold_labels": int(len(gold_labels)), "gold_faces": int(gold_labels["item_id"].nunique()),
        "gold_sources": {str(k): int(v) for k, v in gold_labels["source"].value_counts().items()},
        "min_group": MIN_GROUP, "fields": {},
        "flags_on_decisions": flags_on_decisions(manifest, decisions, recipe),
    }
    for field in sorted(gold_labels["field"].unique()):
        if field in manifest:
            summary["fields"][str(field)] = field_report(manifest, gold_labels[gold_labels["field"] == field], field, recipe)
    config = recipe.crosscheck.label_from
    if config is not None:
        accuracy, answered = tagger_accuracy(summary["fields"].get(config.field, {}))
        filled = int(manifest.get(f"{config.field}_source", pd.Series(dtype="string")).eq("machine").sum())
        summary["label_from"] = {
            "field": config.field, "min_agreement": config.min_agreement, "tagger_accuracy": _round(accuracy),
            "gold_faces_answered": answered, "filled": filled,
            "says": (f"{filled} missing {config.field} values filled from the autotagger (machine labels, "
                     f"`{config.field}_source`): its accuracy on {answered} gold labels is {accuracy:.1%}, "
                     f"at least the {config.min_agreement:.0%} asked" if filled or (accuracy is not None and answered >= MIN_GROUP
                                                                          and accuracy >= config.min_agreement)
                     else f"no {config.field} value filled from the autotagger: " + (
                         f"its accuracy on {answered} gold labels is {accuracy:.1%}, below the {config.min_agreement:.0%} asked"
                         if accuracy is not None and answered >= MIN_GROUP else
                         f"{answered} gold labels answered by it, fewer than the {MIN_GROUP} needed to measure it")),
        }
    return summary


def measured_flag_precision(summary: dict[str, Any], field: str) -> dict[str, Any] | None:
    """The flags' precision on `field` where enough faces measured it (gold first, then decisions), else None."""
    on_gold = summary.get("fields", {}).get(field, {}).get("flags")
    if on_gold and on_gold.get("precision") is not None and on_gold["flagged"] >= MIN_GROUP:
        return {"precision": on_gold["precision"], "ci": on_gold["precision_ci"], "n": on_gold["flagged"], "on": "gold labels"}
    reviewed = summary.get("flags_on_decisions", {}).get(field)
    if reviewed and not reviewed["too_few_to_judge"]:
        return {"precision": reviewed["precision"], "ci": reviewed["precision_ci"], "n": reviewed["reviewed_flags"],
                "on": "reviewers' decisions"}
    return None


def write(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> dict[str, Any]:
    """Score everything against the dataset's gold labels and write reports/validation.json
    (also without gold, saying so, so the report can tell how to get some)."""
    decisions = gold.decision_table(paths.root)
    table = gold.labels(paths, manifest, sorted(manifest_fields(manifest)), decisions)
    summary = build(manifest, recipe, table, decisions)
    stored = gold.read(paths)
    gone = sorted(set(stored["item_id"].dropna()) - set(manifest["item_id"].astype(str)))
    summary["gold_items_not_in_manifest"] = {"count": len(gone), "items": gone[:DISAGREEMENTS_LISTED]}  # kept in gold.csv
    write_report(paths, "validation", summary)
    return summary


# ---------------------------------------------------------------- what a flag may be said to mean


def _tagger_error(check: str, figures: dict[str, Any], field_gold: dict[str, Any]) -> str | None:
    """The tagger's measured error on a field, in words: on gold where there is enough, else
    against this dataset's own (crawled) labels."""
    tagger = next((v for k, v in field_gold.get("sources", {}).items() if k.startswith("tagger")), None)
    if tagger and not tagger.get("too_few_to_judge"):
        if check == "age" and tagger.get("mae") is not None:
            return f"its mean absolute age error is {tagger['mae']:.1f} years on {tagger['answered']} gold labels"
        if tagger.get("accuracy") is not None:
            return f"it is right on {tagger['accuracy']:.0%} of {tagger['n']} gold labels"
    if figures.get("n", 0) < MIN_GROUP:
        return None
    if check == "age" and figures.get("mae") is not None:
        return f"its mean absolute age error is {figures['mae']:.1f} years against this dataset's own labels ({figures['n']} faces)"
    if figures.get("accuracy") is not None:
        return f"it agrees with {figures['accuracy']:.0%} of this dataset's own labels ({figures['n']} faces)"
    return None


def flag_trust(crosscheck: dict[str, Any], checked: dict[str, Any], recipe: Recipe) -> dict[str, dict[str, Any]]:
    """Per check, what may honestly be said of its flags: their measured precision (gold or
    decisions) when enough faces measured it; until then that the tagger disagrees, with
    the tagger's own measured error beside it; and too few faces to judge when so."""
    out = {}
    for field, (check, _) in field_kinds(recipe).items():
        figures = crosscheck.get("fields", {}).get(check, {}).get("all", {})
        n, flagged = int(figures.get("n", 0)), int(figures.get("disagree", 0))
        measured = measured_flag_precision(checked, field)
        error = _tagger_error(check, figures, checked.get("fields", {}).get(field, {}))
        if measured:
            low, high = measured["ci"] or (None, None)
            text = (f"{measured['precision']:.0%} of {check} flags were label errors (95% interval {low:.0%} to {high:.0%}, "
                    f"{measured['n']} flagged faces checked on {measured['on']})")
        elif n < MIN_GROUP:
            text = (f"too few faces ({n}) compared on {check} to judge the tagger or its flags "
                    f"(at least {MIN_GROUP} are needed)")
        else:
            text = (f"the tagger disagrees with {flagged} of {n} crawled {check} labels; how many of them are label errors "
                    "is not measured yet (review some, or import gold labels)" + (f"; {error}" if error else ""))
        out[check] = {"field": field, "compared": n, "flagged": flagged, "measured": measured, "tagger_error": error,
                      "too_few_to_judge": n < MIN_GROUP, "says": text}
    return out


# ---------------------------------------------------------------- the autotagger as labeller


def tagger_accuracy(report: dict[str, Any]) -> tuple[float | None, int]:
    """The tagger's accuracy on a field's gold labels among the faces it answered for (it
    fills only those), and how many that is: categories right, or ages within the margin."""
    tagger = next((v for k, v in report.get("sources", {}).items() if k.startswith("tagger")), None)
    if not tagger or not tagger.get("answered"):
        return None, 0
    if report["kind"] == "numeric":
        return tagger["within_margin"] * tagger["n"] / tagger["answered"], tagger["answered"]
    confusion = tagger.get("confusion", {})
    right = sum(row.get(name, 0) for name, row in confusion.items())
    return right / tagger["answered"], tagger["answered"]


def label_from(frame: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> pd.DataFrame:
    """`crosscheck.label_from`: fill missing values of its field from the autotagger, only when
    the tagger's measured accuracy on that field's gold labels (at least MIN_GROUP faces)
    reaches `min_agreement`. `<field>_source` says where each value came from: crawled,
    machine (filled here) or reviewer (a relabel)."""
    config = recipe.crosscheck.label_from
    if config is None or config.field not in frame:
        return frame
    out = frame.copy()
    field = config.field
    check, kind = field_kinds(recipe)[field]
    source = pd.Series(pd.NA, index=out.index, dtype="string")
    source[out[field].notna()] = "crawled"
    if "reviewed" in out:  # the decisions that hold for a row (tasks/crosscheck/decisions.py): "relabel FIELD; ..."
        said = out["reviewed"].astype("string").str.split("; ")
        source[said.map(lambda parts: isinstance(parts, list) and f"relabel {field}" in parts)] = "reviewer"
    table = gold.labels(paths, out, sorted(manifest_fields(out)), gold.decision_table(paths.root))
    table = table[table["field"] == field]
    accuracy, answered = tagger_accuracy(field_report(out, table, field, recipe)) if len(table) else (None, 0)
    if accuracy is not None and answered >= MIN_GROUP and accuracy >= config.min_agreement:
        said = sources(out, field, check, recipe)
        tagger = next(values for name, values in said.items() if name.startswith("tagger"))
        if kind == "numeric":
            tagger = tagger.astype("Float64").round().astype("Int64").astype("string")
        fill = out[field].isna() & tagger.notna() & out["status"].eq("kept").fillna(False)
        out.loc[fill, field] = tagger[fill]
        source[fill] = "machine"
    out[f"{field}_source"] = source
    return out
