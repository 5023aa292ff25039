"""The next build honours decisions.csv: a real flow run (fake crawl, fetch, faces and dedupe; the real
cross-check, split and export) where decisions appended after a build re-run the cross-check and the
stages after it only, and the dataset on disk shows them: dropped faces in no split folder, relabelled
faces in their new class folder, identity decisions in the split's grouping, and decisions about rows
that do not exist reported."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pandas as pd
import pytest

from builders import make_recipe
from fakes import flow_stages as fakes
from flows.build import build
from tasks.core import decisions as d
from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.core.reasons import AUTOTAGGER_DISAGREES
from tasks.crosscheck import decisions as honouring
from tasks.report import sections

STAGES = "fakes.flow_stages:reviewed_stages"
AT = "2026-12-03T09:00:00+00:00"


def test_keep_restores_a_face_the_tagger_dropped_and_the_latest_decision_on_a_field_holds(tmp_path: Path) -> None:
    recipe = make_recipe(crosscheck={"fields": {"gender": {"field": "gender"}}, "on_disagreement": "drop"})
    frame = mf.conform(pd.DataFrame({
        "item_id": ["a", "b", "c"], "status": ["quarantined", "kept", "quarantined"],
        "reason": [AUTOTAGGER_DISAGREES + "gender: crawled female, tagger male (97%)", pd.NA, "no face"],
        "crosscheck": ["disagree", "disagree", pd.NA], "gender": ["female", "male", "male"], "label": "cs"}),
        recipe.field_names)
    paths = DatasetPaths(tmp_path)
    d.append(tmp_path, [d.Decision("a", d.KEEP, "", "", "ann", AT, "it is her"),
                        d.Decision("b", d.RELABEL, "gender", "female", "ann", AT),
                        d.Decision("b", d.KEEP, "gender", "", "bob", "2026-12-03T10:00:00+00:00"),
                        d.Decision("c", d.DROP, "", "", "ann", AT)])  # already out for having no face
    out = honouring.honour(frame, recipe, paths).set_index("item_id")
    assert out.at["a", "status"] == "kept" and pd.isna(out.at["a", "reason"])
    assert out.at["a", "crosscheck"] == "disagree"  # the tagger's verdict stays for scoring against gold
    assert out.at["b", "gender"] == "male" and out.at["b", "reviewed"] == "keep gender"  # bob's later keep holds
    assert (out.at["c", "status"], out.at["c", "reason"]) == ("quarantined", "no face")
    assert list(honouring.unsettled(out.reset_index())["item_id"]) == []
    summary = honouring.summary(out.reset_index(), recipe, paths)
    assert summary["labels_changed"] == {} and summary["applied"] == {"drop": 1, "keep": 2}
    assert summary["problems"] == ["reviewers disagree on b gender: ann: relabel gender=female; bob: keep; "
                                   "the latest (bob) holds"]


def test_the_report_says_how_many_labels_people_changed_per_field_and_reviewer(tmp_path: Path) -> None:
    decided = {"holding": 3, "applied": {"relabel": 2, "drop": 1}, "labels_changed_total": 2, "excluded": 1,
               "labels_changed": {"age": {"ann": 1, "<b>bob</b>": 1}}, "problems": ["no item zz in this dataset"]}
    html = str(sections.crosscheck({"autotagger": "local", "decisions": decided}, DatasetPaths(tmp_path)))
    assert "Reviewers changed 2 labels and excluded 1 faces" in html
    assert "<td>age</td><td>ann</td><td class=n>1</td>" in html and "&lt;b&gt;bob&lt;/b&gt;" in html
    assert "<li>no item zz in this dataset</li>" in html


def files_of(root: Path, item: str) -> list[str]:
    """Where an item's image lies in the exported trees (splits/ and variants/)."""
    return sorted(p.relative_to(root).as_posix() for tree in ("splits", "variants") for p in root.glob(f"{tree}/**/{item}.*"))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_rebuild_honours_decisions_from_the_cross_check_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FACESET_TEST_LOG", str(log))
    monkeypatch.setenv("FACESET_TEST_SITE", str(tmp_path / "site.json"))
    fakes.write_site(tmp_path / "site.json", 24)
    recipe = fakes.write_recipe(tmp_path)
    root = build(recipe, data_root=tmp_path / "data", stages=STAGES)
    before = pd.read_parquet(root / "manifest.parquet").set_index("name")
    kept = before[before["status"] == "kept"]
    item = kept["item_id"].to_dict()
    dropped, not_face, relabelled = item["person 0"], item["person 1"], item["person 4"]
    assert kept.at["person 4", "label"] == "cs" and files_of(root, dropped) and files_of(root, not_face)
    # persons 8 and 9 look alike (one descriptor group); 12 is another person whom a reviewer says is 8
    assert kept.at["person 8", "person_group"] == kept.at["person 9", "person_group"] != kept.at["person 12", "person_group"]
    d.append(root, [
        d.Decision(dropped, d.DROP, "", "", "ann", AT, "a poster, not the person"),
        d.Decision(not_face, d.NOT_FACE, "", "", "bob", AT),
        d.Decision(relabelled, d.RELABEL, "label", "econ", "ann", AT, "econ department page"),
        d.Decision(item["person 8"], d.DIFFERENT_PERSON, "", item["person 9"], "ann", AT),
        d.Decision(item["person 8"], d.SAME_PERSON, "", item["person 12"], "bob", AT),
        d.Decision("0000000000000000", d.DROP, "", "", "ann", AT, "a row since gone"),
    ])
    log.write_text("")
    build(recipe, data_root=tmp_path / "data", stages=STAGES)

    calls = collections.Counter(line.split()[0] for line in log.read_text().splitlines())
    assert not {"crawl", "fetch", "faces-row", "dedupe"} & set(calls)  # nothing crawled, fetched or detected again
    assert calls["finetune"] == 1 and calls["report"] == 1  # the stages after the cross-check ran again
    after = pd.read_parquet(root / "manifest.parquet").set_index("name")
    assert after.at["person 0", "status"] == "excluded" and after.at["person 0", "reason"] == "reviewer: a poster, not the person"
    assert after.at["person 1", "status"] == "excluded" and after.at["person 1", "reason"] == "reviewer: not a face"
    assert files_of(root, dropped) == [] and files_of(root, not_face) == []
    assert after.at["person 4", "label"] == "econ" and after.at["person 4", "label_crawled"] == "cs"
    assert files_of(root, relabelled) == [f"splits/{after.at['person 4', 'split']}/econ/{relabelled}.jpg"]
    groups = after["person_group"]
    assert groups["person 8"] == groups["person 12"] != groups["person 9"]
    assert after.at["person 8", "split"] == after.at["person 12", "split"]
    assert after.at["person 9", "person_group_descriptor"] == before.at["person 9", "person_group"]
    assert after.at["person 4", "reviewed"] == "relabel label" and after.at["person 4", "reviewed_by"] == "ann"

    decided = json.loads((root / "reports" / "crosscheck.json").read_text())["decisions"]
    assert decided["labels_changed"] == {"label": {"ann": 1}} and decided["excluded"] == 2
    assert decided["applied"] == {"different_person": 1, "drop": 1, "not_face": 1, "relabel": 1, "same_person": 1}
    assert decided["unknown_items"] == ["0000000000000000"]
    assert any("no item 0000000000000000" in p for p in decided["problems"])
    card = (root / "DATASET_CARD.md").read_text()
    assert "Reviewers changed **1** labels and excluded **2** faces" in card
    assert d.read(root)[0][-1].note == "a row since gone"  # the file keeps it for a later crawl

    log.write_text("")
    build(recipe, data_root=tmp_path / "data", stages=STAGES)  # nothing new decided: everything cached
    assert log.read_text() == ""
