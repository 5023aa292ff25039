"""Validation figures against gold, checked against a hand computation on a small planted example,
and gold labels imported from a labeller's CSV through `faceset labels import`.

Every expected number below is worked out by hand in the comments, from the table of faces
at the top of each test; the code computes them with scikit-learn, statsmodels and krippendorff.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from builders import make_recipe
from fakes.taggers import FakeTagger
from PIL import Image

from tasks.core import gold
from tasks.core import manifest as mf
from tasks.core.decisions import Decision, append as append_decisions
from tasks.core.parallel import serial_mapper
from tasks.core.paths import DatasetPaths
from tasks.crosscheck import stage as crosscheck
from tasks.crosscheck import validation
from tasks.crosscheck.autotag import Tags
from tasks.export import card
from tasks.report import sections

Z = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


def recipe():
    return make_recipe("val", fields=("label", "gender", "age", "name"), attributes=("gender", "age"), sources=("site",),
                       crosscheck={"autotagger": "local", "calibrate": False,
                                   "fields": {"gender": "gender", "age": {"field": "age", "margin": 5}}})


# Eight faces with gender gold; four with age gold.
#   face  gold    crawled  tagger    flag (crosscheck_gender)
#   0     female  female   female    agree
#   1     female  female   male      disagree
#   2     female  male     female    disagree   <- crawled label wrong
#   3     female  female   (none)    skipped
#   4     male    male     male      agree
#   5     male    male     male      agree
#   6     male    female   male      disagree   <- crawled label wrong
#   7     male    male     female    disagree
GOLD_GENDER = ["female"] * 4 + ["male"] * 4
CRAWLED = ["female", "female", "male", "female", "male", "male", "female", "male"]
TAGGER = ["female", "male", "female", None, "male", "male", "male", "female"]
FLAGS = ["agree", "disagree", "disagree", "skipped", "agree", "agree", "disagree", "disagree"]
#   face  gold age  crawled  tagger   flag (crosscheck_age)
#   0     30        30       35       agree
#   1     40        48       41       disagree   <- crawled off by 8 > margin 5: wrong
#   2     50        50       (none)   skipped
#   3     60        61       70       disagree
GOLD_AGE = [30, 40, 50, 60]
CRAWLED_AGE = ["30", "48", "50", "61", None, None, None, None]
TAGGER_AGE = [35.0, 41.0, None, 70.0, None, None, None, None]
AGE_FLAGS = ["agree", "disagree", "skipped", "disagree", None, None, None, None]


def planted() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = pd.DataFrame({
        "item_id": [f"id{i}" for i in range(8)], "status": "kept", "label": "cs", "gender": CRAWLED, "age": CRAWLED_AGE,
        "autotag_gender": TAGGER, "autotag_age": pd.array(TAGGER_AGE, dtype="Float64"), "autotag_source": "local",
        "crosscheck_gender": FLAGS, "crosscheck_age": AGE_FLAGS,
    })
    labels = [{"item_id": f"id{i}", "field": "gender", "value": g, "labeller": "ann", "labelled_at": "2026-12-01",
               "source": "import gold.csv"} for i, g in enumerate(GOLD_GENDER)]
    labels += [{"item_id": f"id{i}", "field": "age", "value": str(a), "labeller": "ann", "labelled_at": "2026-12-01",
                "source": "import gold.csv"} for i, a in enumerate(GOLD_AGE)]
    return frame, pd.DataFrame(labels).astype("string")


def test_figures_equal_a_hand_computation():
    frame, labels = planted()
    summary = validation.build(frame, recipe(), labels)
    gender = summary["fields"]["gender"]

    # Crawled against gold: right on faces 0,1,3,4,5,7 = 6 of 8.
    # Confusion (rows gold, columns crawled): female -> female 3 (0,1,3), male 1 (2); male -> male 3 (4,5,7), female 1 (6).
    crawled = gender["sources"]["crawled"]
    assert crawled["confusion"] == {"female": {"female": 3, "male": 1}, "male": {"female": 1, "male": 3}}
    assert crawled["accuracy"] == 0.75
    assert crawled["accuracy_ci"] == pytest.approx(wilson_by_hand(6, 8), abs=1e-4)
    # female: precision 3 of the 4 said female, recall 3 of the 4 gold female, F1 2·.75·.75/1.5 = .75; male the same.
    assert crawled["classes"]["female"]["precision"] == 0.75 and crawled["classes"]["female"]["recall"] == 0.75
    assert crawled["classes"]["male"]["f1"] == 0.75
    assert crawled["classes"]["female"]["recall_ci"] == pytest.approx(wilson_by_hand(3, 4), abs=1e-4)
    low, high = crawled["classes"]["female"]["f1_ci"]
    assert low < 0.75 < high
    # Cohen's kappa: observed 6/8 = .75; chance .5·.5 + .5·.5 = .5; kappa = (.75 - .5) / (1 - .5) = .5.
    assert crawled["kappa"] == pytest.approx(0.5)

    # The tagger: right on 0,2,4,5,6 = 5 of 8; face 3 (no answer) counts against it, not as skipped.
    # Confusion: female -> female 2 (0,2), male 1 (1), (no answer) 1 (3); male -> male 3 (4,5,6), female 1 (7).
    tagger = gender["sources"]["tagger local"]
    assert tagger["confusion"] == {"female": {"female": 2, "male": 1, "(no answer)": 1},
                                   "male": {"female": 1, "male": 3, "(no answer)": 0}}
    assert tagger["accuracy"] == 0.625 and tagger["answered"] == 7
    # female: precision 2 of 3 said female; recall 2 of 4 gold female (the miss counts). male: 3/4 and 3/4.
    assert tagger["classes"]["female"]["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert tagger["classes"]["female"]["recall"] == 0.5
    assert tagger["classes"]["female"]["precision_ci"] == pytest.approx(wilson_by_hand(2, 3), abs=1e-4)
    assert tagger["classes"]["male"]["precision"] == 0.75 and tagger["classes"]["male"]["recall"] == 0.75
    # kappa: observed 5/8; chance: gold female .5 × tagger female 3/8 + gold male .5 × tagger male 4/8 + 0 × 1/8
    # = 28/64; kappa = (40/64 - 28/64) / (1 - 28/64) = 12/36 = 1/3.
    assert tagger["kappa"] == pytest.approx(1 / 3, abs=1e-4)

    # Flags: wrong crawled labels are faces 2 and 6; flagged (disagree) 1, 2, 6, 7 (3 skipped is not flagged).
    # Precision 2/4, recall 2/2.
    flags = gender["flags"]
    assert (flags["flagged"], flags["errors"], flags["flagged_errors"]) == (4, 2, 2)
    assert flags["precision"] == 0.5 and flags["recall"] == 1.0
    assert flags["precision_ci"] == pytest.approx(wilson_by_hand(2, 4), abs=1e-4)
    assert flags["too_few_to_judge"] is True  # 4 flags: far fewer than MIN_GROUP

    # Ages, margin 5. Crawled: errors 0, 8, 0, 1 -> MAE 9/4 = 2.25; within the margin 3 of 4.
    age = summary["fields"]["age"]
    assert age["sources"]["crawled"]["mae"] == 2.25 and age["sources"]["crawled"]["within_margin"] == 0.75
    # Tagger: answered 3, errors 5, 1, 10 -> MAE 16/3; within the margin 35 and 41 only, of all 4 (the miss counts): .5.
    assert age["sources"]["tagger local"]["mae"] == pytest.approx(16 / 3, abs=0.01)
    assert age["sources"]["tagger local"]["within_margin"] == 0.5
    assert age["sources"]["tagger local"]["within_margin_ci"] == pytest.approx(wilson_by_hand(2, 4), abs=1e-4)
    # Age flags: face 1 (crawled 48, gold 40) is the one error; flagged 1 and 3 -> precision 1/2, recall 1/1.
    assert age["flags"]["precision"] == 0.5 and age["flags"]["recall"] == 1.0


def test_gold_faces_the_cross_check_never_judged_are_left_out_of_the_flags():
    """A gold label can name a face the cross-check has no outcome for (it was not kept in this
    build): the flag figures leave it out instead of failing on the missing value."""
    frame, labels = planted()
    frame["crosscheck_gender"] = pd.array(FLAGS[:6] + [None, None], dtype="string")
    flags = validation.build(frame, recipe(), labels)["fields"]["gender"]["flags"]
    # Faces 6 and 7 drop out: flagged 1 and 2, wrong crawled label 2 only -> precision 1/2, recall 1/1.
    assert (flags["flagged"], flags["errors"], flags["flagged_errors"]) == (2, 1, 1)


def test_krippendorff_alpha_and_disagreements_by_hand():
    # Two labellers on four faces: a f/f, b m/m, c f/m, d m/m; one more face labelled by ann alone.
    rows = [("a", "ann", "female"), ("a", "bob", "female"), ("b", "ann", "male"), ("b", "bob", "male"),
            ("c", "ann", "female"), ("c", "bob", "male"), ("d", "ann", "male"), ("d", "bob", "male"), ("e", "ann", "male")]
    table = pd.DataFrame(rows, columns=["item_id", "labeller", "value"])
    # Coincidences over the 8 pairable values: female 3, male 5; the one disagreeing face gives o(f,m) = o(m,f) = 1.
    # Nominal alpha = 1 - (n - 1)·Σ o(c≠k) / Σ n_c·n_k (c≠k) = 1 - 7·2 / (2·3·5) = 1 - 14/30 = 16/30.
    found = validation.agreement(table, "categorical")
    assert found["alpha"] == pytest.approx(16 / 30, abs=1e-4) and found["faces"] == 4
    assert found["labellers"] == ["ann", "bob"]
    truth, disagreements = validation.consensus(table, "categorical")
    assert disagreements == [{"item_id": "c", "labels": {"ann": "female", "bob": "male"}, "gold": None}]
    assert "c" not in truth.index and truth["e"] == "male"  # a tie has no gold; a single label is gold


def write_face(paths: DatasetPaths, name: str, shade: int) -> str:
    Image.fromarray(np.full((32, 32, 3), shade, np.uint8)).save(paths.faces / name, "JPEG")
    return f"faces/{name}"


def built(paths: DatasetPaths, n: int) -> pd.DataFrame:
    records = [{"item_id": f"id{i}", "source": "site", "page_url": f"http://127.0.0.1/p{i}.html",
                "image_url": f"http://127.0.0.1/img/person{i}.jpg", "sha256": f"{i:064x}", "status": "kept",
                "label": "cs", "gender": "female" if i % 2 else "male", "age": str(20 + i), "name": f"p{i}",
                "face_path": write_face(paths, f"f{i}.jpg", 40 + i)} for i in range(n)]
    return mf.conform(pd.DataFrame(records), ["label", "gender", "age", "name"])


def test_labels_import_matches_lists_and_scores(tmp_path):
    paths = DatasetPaths.create(tmp_path / "ds")
    frame = built(paths, 6)
    mf.write(frame, paths.manifest)
    labels = tmp_path / "coder.csv"
    labels.write_text(
        "item_id,sha256,page_url,file,gender,age,colour\n"
        "id0,,,,male,20,red\n"                                     # by item_id
        f",{1:064x},,,female,21,\n"                                # by sha256
        ",,http://127.0.0.1/p2.html,,female,,\n"                   # by page_url (crawled male: an error)
        ",,,person3.jpg,=HYPERLINK(\"x\"),23,\n"                   # by file name; a formula cell
        "nobody,,,,male,30,\n"                                     # matches no face
        "id5,,,,,,\n", encoding="utf-8")                           # no label at all
    done = subprocess.run([sys.executable, "-m", "flows.cli", "labels", "import", str(paths.root), str(labels),
                           "--labeller", "ann"], capture_output=True, text=True, cwd=validation.__file__.rsplit("/tasks/", 1)[0])
    assert done.returncode == 0, done.stderr
    assert "added 7 gold labels on 4 faces" in done.stdout
    assert "item_id 'nobody' matches no face" in done.stdout and "line 6" in done.stdout
    assert "line 7: no label in the row" in done.stdout and "colour" in done.stdout
    assert "item_id: 1" in done.stdout and "sha256: 1" in done.stdout and "page_url: 1" in done.stdout and "file: 1" in done.stdout
    stored = gold.read(paths)
    assert list(stored.columns) == list(gold.COLUMNS) and len(stored) == 7
    assert stored.loc[stored["item_id"].eq("id3") & stored["field"].eq("gender"), "value"].item() == '=HYPERLINK("x")'
    assert "'=HYPERLINK" in gold.gold_path(paths).read_text()  # a spreadsheet shows it as text
    # Append-only: a second import adds rows and keeps the first ones.
    labels.write_text("item_id,gender\nid4,male\n", encoding="utf-8")
    assert subprocess.run([sys.executable, "-m", "flows.cli", "labels", "import", str(paths.root), str(labels)],
                          capture_output=True, text=True, cwd=validation.__file__.rsplit("/tasks/", 1)[0]).returncode == 0
    again = gold.read(paths)
    assert len(again) == 8 and again.iloc[:7].equals(stored) and again.iloc[7]["labeller"] == "coder"

    # The cross-check scores the crawled labels and the tagger against them: reports/validation.json.
    tagger = FakeTagger({f"f{i}.jpg": Tags(gender="female" if i % 2 else "male", gender_confidence=99.0, age=20.0 + i)
                         for i in range(6)})
    crosscheck.run(frame, recipe(), paths, tagger=tagger, mapper=serial_mapper)
    report = json.loads(paths.report_json("validation").read_text())
    assert report["gold_faces"] == 5 and report["gold_sources"] == {"import coder.csv": 8}
    gender = report["fields"]["gender"]["sources"]["crawled"]
    # gold: id0 male, id1 female, id2 female, id3 '=hyperlink("x")', id4 male; crawled id2 male: 3 of 5 right.
    assert gender["n"] == 5 and gender["accuracy"] == pytest.approx(3 / 5)
    assert report["fields"]["age"]["sources"]["crawled"]["mae"] == 0.0
    html = sections.crosscheck(json.loads(paths.report_json("crosscheck").read_text()), paths)
    assert "5 hand-labelled faces (8 labels; import coder.csv: 8)" in html
    assert html.count("too few to judge") >= 4  # 5 gold faces: counts shown, rates withheld
    assert "hyperlink(&#34;x&#34;)" in html and "hyperlink(\"x\")" not in html  # escaped (gold values are casefolded)


def test_decisions_on_the_validation_sample_are_gold(tmp_path):
    paths = DatasetPaths.create(tmp_path / "ds")
    frame = built(paths, 4)
    gold.write_sample(paths, ["id0", "id1"])
    append_decisions(paths.root, [
        Decision("id0", "keep", "", "", "ann", "2026-12-03T10:00:00+00:00"),
        Decision("id1", "relabel", "gender", "male", "ann", "2026-12-03T10:01:00+00:00"),
        Decision("id2", "relabel", "gender", "male", "ann", "2026-12-03T10:02:00+00:00"),  # not in the sample: not gold
    ])
    table = gold.labels(paths, frame, ["gender", "age"], gold.decision_table(paths.root))
    got = {(r.item_id, r.field): r.value for r in table.itertuples()}
    assert got == {("id0", "gender"): "male", ("id0", "age"): "20", ("id1", "gender"): "male"}
    assert set(table["source"]) == {gold.SAMPLE_SOURCE}


@pytest.mark.parametrize("least, fills", [(0.95, True), (0.97, False)])
def test_label_from_fills_only_when_the_tagger_is_right_often_enough_on_gold(tmp_path, least, fills):
    # 40 faces, gender crawled for id0..id29 and missing for id30..id39. The tagger is right on every face but id0.
    # Gold for id0..id24: the tagger is right on 24 of the 25 it answered, 96%: enough for 95%, not for 97%.
    paths = DatasetPaths.create(tmp_path / "ds")
    frame = built(paths, 40)
    truth = frame["gender"].copy()
    frame.loc[30:, "gender"] = pd.NA
    opinions = {f"f{i}.jpg": Tags(gender=("male" if truth[i] == "female" else "female") if i == 0 else truth[i],
                                  gender_confidence=99.0, age=20.0 + i) for i in range(40)}
    gold.append(paths, pd.DataFrame({"item_id": [f"id{i}" for i in range(25)], "field": "gender",
                                     "value": list(truth[:25]), "labeller": "ann", "labelled_at": "2026-12-03",
                                     "source": "import ann.csv"}))
    append_decisions(paths.root, [Decision("id27", "relabel", "gender", "male", "bob", "2026-12-03T11:00:00+00:00")])
    chosen = make_recipe("val", fields=("label", "gender", "age", "name"), attributes=("gender", "age"), sources=("site",),
                         crosscheck={"autotagger": "local", "calibrate": False, "fields": {"gender": "gender"},
                                     "label_from": {"field": "gender", "min_agreement": least}})
    out = crosscheck.run(frame, chosen, paths, tagger=FakeTagger(opinions), mapper=serial_mapper).set_index("item_id")
    report = json.loads(paths.report_json("validation").read_text())["label_from"]
    assert report["tagger_accuracy"] == pytest.approx(0.96) and report["gold_faces_answered"] == 25
    assert (out.loc["id0":"id26", "gender_source"] == "crawled").all() and out.at["id27", "gender_source"] == "reviewer"
    missing = out.loc[[f"id{i}" for i in range(30, 40)]]
    if fills:
        assert (missing["gender_source"] == "machine").all() and list(missing["gender"]) == list(truth[30:])
        assert report["filled"] == 10 and report["says"].startswith("10 missing gender values filled from the autotagger")
    else:
        assert missing["gender"].isna().all() and missing["gender_source"].isna().all()
        assert report["filled"] == 0 and "96.0%, below the 97% asked" in report["says"]
    assert ("Machine labels: 10 missing gender values" in card.crosscheck(out.reset_index(), chosen, paths)) is fills


@pytest.mark.slow
def test_imported_gold_re_runs_the_cross_check_on_only(tmp_path, monkeypatch):
    """A real flow run (fake crawl to dedupe, the real cross-check, split and export): gold labels
    imported after a build are scored by the next one, which re-runs no stage before the cross-check."""
    import collections

    from fakes import flow_stages as fakes
    from flows.build import build

    log = tmp_path / "calls.log"
    monkeypatch.setenv("FACESET_TEST_LOG", str(log))
    monkeypatch.setenv("FACESET_TEST_SITE", str(tmp_path / "site.json"))
    fakes.write_site(tmp_path / "site.json", 12)
    recipe_file = fakes.write_recipe(tmp_path)
    root = build(recipe_file, data_root=tmp_path / "data", stages="fakes.flow_stages:reviewed_stages")
    kept = pd.read_parquet(root / "manifest.parquet").query("status == 'kept'")
    # The labeller agrees with the site on every face but the first.
    labels = tmp_path / "gold.csv"
    rows = [(item, "econ" if (i == 0) == (label == "cs") else "cs") for i, (item, label) in enumerate(zip(kept["item_id"], kept["label"]))]
    labels.write_text("item_id,label\n" + "".join(f"{item},{value}\n" for item, value in rows), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "flows.cli", "labels", "import", str(root), str(labels)],
                          capture_output=True, text=True, cwd=validation.__file__.rsplit("/tasks/", 1)[0])
    assert done.returncode == 0, done.stderr
    log.write_text("")
    build(recipe_file, data_root=tmp_path / "data", stages="fakes.flow_stages:reviewed_stages")
    calls = collections.Counter(line.split()[0] for line in log.read_text().splitlines())
    assert not {"crawl", "fetch", "faces-row", "dedupe"} & set(calls) and calls["report"] == 1
    report = json.loads((root / "reports" / "validation.json").read_text())
    crawled = report["fields"]["label"]["sources"]["crawled"]
    assert crawled["n"] == len(kept) and crawled["accuracy"] == pytest.approx((len(kept) - 1) / len(kept), abs=1e-4)
    log.write_text("")
    build(recipe_file, data_root=tmp_path / "data", stages="fakes.flow_stages:reviewed_stages")
    assert log.read_text() == ""  # nothing new: everything cached


def test_rekognition_celebrities_and_scene_labels_as_the_books_tables():
    chosen = make_recipe("val", fields=("label", "gender", "age", "name"), sources=("site",),
                         crosscheck={"autotagger": "rekognition", "fields": {"celebrity": "name"},
                                     "labels": {"protest": ["Protest", "Crowd"]}})
    # Celebrities, gold A..E; the tagger names A, B, X and nobody twice. Recognised 3, right 2:
    # precision 2/3 (over the faces it named), recall 2/5 (over every gold face: the misses count).
    # Scene labels, gold protest, protest, calm, calm; the tagger saw Protest, nothing, Crowd (90 >= 50), nothing:
    # it says protest for faces 0 and 2. protest: precision 1/2, recall 1/2; no face is called calm.
    frame = pd.DataFrame({"item_id": [f"id{i}" for i in range(5)], "status": "kept",
                          "name": ["A", "B", "C", "D", "E"], "label": ["protest", "protest", "calm", "calm", pd.NA],
                          "autotag_celebrity": ["A", "B", "X", None, None], "autotag_source": "rekognition",
                          "autotag_labels": ['{"Protest": 95.0}', None, '{"Crowd": 90.0}', '{"Crowd": 20.0}', None]})
    labels = pd.DataFrame([(f"id{i}", "name", n) for i, n in enumerate("ABCDE")]
                          + [(f"id{i}", "label", v) for i, v in enumerate(["protest", "protest", "calm", "calm"])],
                          columns=["item_id", "field", "value"]).assign(labeller="ann", labelled_at="", source="import")
    summary = validation.build(frame, chosen, labels)
    names = summary["fields"]["name"]["sources"]["tagger rekognition"]
    assert (names["n"], names["recognised"], names["correct"]) == (5, 3, 2)
    assert names["precision"] == pytest.approx(2 / 3, abs=1e-4) and names["recall"] == pytest.approx(0.4)
    assert names["recall_ci"] == pytest.approx(wilson_by_hand(2, 5), abs=1e-4)
    scenes = summary["fields"]["label"]["sources"]["tagger rekognition scene labels"]
    assert scenes["confusion"] == {"calm": {"calm": 0, "protest": 1, "(no answer)": 1},
                                   "protest": {"calm": 0, "protest": 1, "(no answer)": 1}}
    assert scenes["classes"]["protest"]["precision"] == 0.5 and scenes["classes"]["protest"]["recall"] == 0.5
    assert scenes["classes"]["calm"]["recall"] == 0.0
