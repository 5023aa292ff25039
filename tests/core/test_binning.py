"""One grouping of a field in every consumer: the report, the card, the cross-check's
per-group metrics and the fine-tune's subgroup accuracy bin ages as the split does, and
each of them says 'too few to judge' of a group smaller than MIN_GROUP."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import build_dataset, make_recipe

from tasks.core.binning import MIN_GROUP, TOO_FEW, UNKNOWN, field_labels, group_labels, label_order, small_groups
from tasks.core.recipe import Recipe
from tasks.crosscheck import metrics
from tasks.export import stage as export
from tasks.finetune import data, evaluate
from tasks.report import stage as report
from tasks.split import stage as split


def consumer_recipe(**split_section: object) -> Recipe:
    """Target label, attributes gender and age, gender checked by the cross-check."""
    return make_recipe("tiny", attributes=("gender", "age"), split={"stratify": ["label"], **split_section},
                       crosscheck={"fields": {"gender": "gender"}, "calibrate": False})


def crosschecked(frame: pd.DataFrame) -> pd.DataFrame:
    """The manifest as the cross-check leaves it: every kept face tagged, the tagger agreeing."""
    frame = frame.copy()
    tagged = frame["status"] == "kept"
    frame["crosscheck"] = pd.Series(pd.NA, index=frame.index, dtype="string").mask(tagged, "agree")
    frame["crosscheck_gender"] = frame["crosscheck"]
    frame["autotag_source"] = frame["crosscheck"].mask(tagged, "local")
    frame["autotag_gender"] = frame["gender"].where(tagged)
    frame["autotag_gender_confidence"] = np.where(tagged, 90.0, np.nan)
    frame["crosscheck_score"] = np.where(tagged, 0.1, np.nan)
    frame["crosscheck_reason"] = pd.NA
    return frame


def report_groups(html: str, field: str) -> list[str]:
    """First-column cells of the report's distribution table of `field`."""
    table = html.split(f"<h3>{field}</h3>", 1)[1].split("</table>", 1)[0]
    return [unescape(cell) for cell in re.findall(r"<tr><td>([^<]*)</td>", table)]


def card_groups(text: str, field: str) -> list[str]:
    """First-column cells of the card's first distribution table of `field`."""
    table = text.split(f"| {field} |", 1)[1].split("\n\n", 1)[0]
    return [line.split("|")[1].strip() for line in table.splitlines()[2:]]


def four_groupings(tmp_path: Path, recipe: Recipe) -> tuple[dict[str, list[str]], pd.DataFrame]:
    """The age groups each consumer shows for one build; for the fine-tune, which sees only
    the test split, each group with its number of test images."""
    frame, paths = build_dataset(tmp_path / "tiny", n=240)
    checked = metrics.build(crosschecked(frame), recipe)  # the cross-check runs before the split
    out = export.run(split.run(frame, recipe, paths), recipe, paths)
    tree, _ = data.read_tree(paths.splits)
    test = tree[tree["split"] == "test"].reset_index(drop=True)
    subgroups = evaluate.per_group(test, np.ones(len(test), dtype=bool), ["age"], recipe.split.bins, reference=tree)
    groups = {
        "report": report_groups(report.overview(out, recipe, paths), "age"),
        "card": card_groups(paths.card.read_text(), "age"),
        "crosscheck": list(checked["fields"]["gender"]["by_attribute"]["age"]),
        "finetune": [f"{g} ({r['n']})" for g, r in subgroups["age"]["groups"].items()],
    }
    return groups, out


def split_groups(out: pd.DataFrame, recipe: Recipe) -> tuple[list[str], list[str]]:
    """The split's age groups, and those of its test images with their counts."""
    rows = out[(out["status"] == "kept") & out["split"].notna()]
    labels = field_labels(rows, "age", recipe, reference=rows)
    test = labels[rows["split"] == "test"].value_counts()
    return (sorted(labels.unique(), key=label_order),
            [f"{g} ({test[g]})" for g in sorted(test.index, key=label_order)])


def test_ages_are_grouped_alike_by_report_card_crosscheck_and_finetune(tmp_path):
    recipe = consumer_recipe()
    groups, out = four_groupings(tmp_path, recipe)
    strata, test = split_groups(out, recipe)
    assert len(strata) == 4 and strata[0].startswith("<") and strata[-1].startswith(">=")  # quartiles, no decades
    assert groups.pop("finetune") == test
    for consumer, shown in groups.items():
        assert shown == strata, consumer


def test_the_recipes_bins_are_used_by_every_consumer(tmp_path):
    recipe = consumer_recipe(bins={"age": [30, 45]})
    groups, out = four_groupings(tmp_path, recipe)
    assert groups.pop("finetune") == split_groups(out, recipe)[1]
    for consumer, shown in groups.items():
        assert shown == ["<30", "30-45", ">=45"], consumer


def test_a_subset_is_grouped_as_its_reference():
    """The test split alone has few distinct ages; grouped with the whole tree as reference
    it still gets the whole tree's quartile bins, not one category per age."""
    whole = pd.Series([str(a) for a in range(20, 60)])
    subset = pd.Series(["21", "33", "47", "58"])
    assert list(group_labels(subset)) == ["21", "33", "47", "58"]  # four numbers alone are categories
    assert list(group_labels(subset, reference=whole)) == ["<30", "30-40", "40-49", ">=49"]  # quartiles of 20-59
    assert list(group_labels(pd.Series(["25", None]), [30])) == ["<30", UNKNOWN]


def test_small_groups_are_those_under_the_minimum():
    assert small_groups({"a": MIN_GROUP - 1, "b": MIN_GROUP, "c": 0}) == ["a", "c"]
    assert small_groups({"a": 5}, minimum=5) == []


def test_every_consumer_says_too_few_to_judge_of_a_small_group(tmp_path):
    recipe = consumer_recipe(bins={"age": [26]})  # '<26': one age of forty, a group far under MIN_GROUP
    frame, paths = build_dataset(tmp_path / "tiny", n=240)
    checked = metrics.build(crosschecked(frame), recipe)["fields"]["gender"]["by_attribute"]["age"]
    assert checked["<26"]["n"] < MIN_GROUP and checked["<26"]["too_few_to_judge"]
    assert checked[">=26"]["n"] >= MIN_GROUP and not checked[">=26"]["too_few_to_judge"]
    out = export.run(split.run(frame, recipe, paths), recipe, paths)
    assert f"{TOO_FEW.capitalize()} (fewer than {MIN_GROUP} images): <26." in paths.card.read_text()
    html = report.overview(out, recipe, paths)
    assert f"Too few to judge (fewer than {MIN_GROUP} images): &lt;26." in html


def test_finetune_leaves_small_groups_out_of_the_largest_gap():
    ages = pd.DataFrame({"age": [20] * 30 + [40] * 30 + [60] * 5})
    correct = np.array([1] * 27 + [0] * 3 + [1] * 15 + [0] * 15 + [0] * 5, dtype=bool)
    result = evaluate.per_group(ages, correct, ["age"], bins={"age": [30, 50]})["age"]
    assert [g["too_few_to_judge"] for g in result["groups"].values()] == [False, False, True]
    # '>=50' (5 images, all wrong) would make the gap 0.9; among groups worth judging it is 0.4
    assert result["largest_gap"] == pytest.approx(
        {"gap": 0.4, "highest": "<30", "lowest": "30-50", "too_few_to_judge": False})
