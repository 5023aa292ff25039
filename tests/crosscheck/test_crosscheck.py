"""The cross-check rules, decisions and reports, with a small fake tagger.

The tagger is not the point here (tests/crosscheck/test_autotag.py runs the real one on real faces):
the fake (tests/fakes/taggers.py) answers with fixed opinions per face, so every rule can be checked exactly.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from builders import make_recipe
from fakes.taggers import FakeTagger
from PIL import Image

from tasks.crosscheck import stage as crosscheck
from tasks.core import manifest as mf
from tasks.crosscheck.autotag import Tags
from tasks.core.parallel import process_mapper, serial_mapper
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe, RecipeError
from tasks.report import sections


def cc_recipe(**crosscheck_section) -> Recipe:
    """The test recipe; its crosscheck section is local, gender and age (margin 5), updated with these keys."""
    section = {"autotagger": "local", "fields": {"gender": "gender", "age": {"field": "age", "margin": 5}}}
    section.update(crosscheck_section)
    return make_recipe("cc", fields=("label", "gender", "age", "name"), attributes=("gender", "age"), sources=("site",),
                       crosscheck=section)


def write_face(paths: DatasetPaths, name: str, shade: int = 128) -> str:
    target = paths.faces / name
    Image.fromarray(np.full((64, 64, 3), shade, np.uint8)).save(target, "JPEG")
    return f"faces/{name}"


def manifest_of(paths: DatasetPaths, rows: list[dict]) -> pd.DataFrame:
    records = []
    for i, row in enumerate(rows):
        record = {"item_id": f"id{i}", "source": row.get("source", "site"), "page_url": f"http://127.0.0.1/p{i}.html",
                  "image_url": f"http://127.0.0.1/i{i}.jpg", "status": row.get("status", "kept"),
                  "reason": row.get("reason", pd.NA), "label": row.get("label", "cs"),
                  "gender": row.get("gender"), "age": row.get("age"), "name": row.get("name")}
        if row.get("face", True):
            record["face_path"] = write_face(paths, f"f{i}.jpg", (40 + 10 * i) % 256)
        records.append(record)
    return mf.conform(pd.DataFrame(records), ["label", "gender", "age", "name"])


@pytest.fixture
def paths(tmp_path) -> DatasetPaths:
    return DatasetPaths.create(tmp_path / "ds")


def test_rules_outcomes_reasons_and_untouched_rows(paths):
    frame = manifest_of(paths, [
        {"gender": "female", "age": "34"},              # 0: gender disagrees, confidently
        {"gender": "male", "age": "34"},                # 1: agrees on both
        {"gender": "female", "age": "34"},              # 2: age disagrees
        {"gender": "female", "age": "30"},              # 3: tagger unsure of gender, age agrees
        {"gender": "male", "age": "40", "status": "duplicate", "reason": "duplicate of id1"},  # 4: not kept
        {"gender": "male", "age": "40", "face": False},  # 5: kept but no crop
        {"gender": None, "age": None},                  # 6: nothing crawled
    ])
    tagger = FakeTagger({
        "f0.jpg": Tags(gender="male", gender_confidence=97.2, age=35.0),
        "f1.jpg": Tags(gender="male", gender_confidence=99.0, age=36.0),
        "f2.jpg": Tags(gender="female", gender_confidence=95.0, age=52.4),
        "f3.jpg": Tags(gender="male", gender_confidence=62.0, age=33.0),
        "f6.jpg": Tags(gender="female", gender_confidence=99.0, age=20.0),
    })
    out = crosscheck.run(frame, cc_recipe(), paths, tagger=tagger, mapper=serial_mapper)
    mf.check_invariants(frame, out, "crosscheck")
    by = out.set_index("item_id")
    assert by.loc["id0", "crosscheck"] == "disagree"
    assert by.loc["id0", "crosscheck_reason"] == "gender: crawled female, tagger male (97%)"
    assert by.loc["id1", "crosscheck"] == "agree"
    assert by.loc["id2", "crosscheck"] == "disagree"
    assert by.loc["id2", "crosscheck_reason"] == "age: crawled 34, tagger 52 (margin 5)"
    assert by.loc["id3", "crosscheck_gender"] == "skipped" and "tagger unsure (62% < 90%)" in by.loc["id3", "crosscheck_gender_reason"]
    assert by.loc["id3", "crosscheck"] == "agree"  # its age agrees
    assert pd.isna(by.loc["id4", "crosscheck"]) and by.loc["id4", "status"] == "duplicate"
    assert by.loc["id5", "crosscheck"] == "skipped" and by.loc["id5", "crosscheck_reason"] == "no face crop to check"
    assert by.loc["id6", "crosscheck"] == "skipped"
    assert by.loc["id0", "autotag_gender"] == "male" and by.loc["id0", "autotag_gender_confidence"] == pytest.approx(97.2)
    assert by.loc["id2", "autotag_age"] == pytest.approx(52.4)
    assert (out["status"] == frame["status"]).all()  # flag keeps everyone
    assert sorted(tagger.seen) == ["f0.jpg", "f1.jpg", "f2.jpg", "f3.jpg", "f6.jpg"]

    # A rebuild does not tag faces again, and re-decides with the new recipe.
    again = FakeTagger({})
    out2 = crosscheck.run(out, cc_recipe(fields={"gender": {"field": "gender", "min_confidence": 50}}), paths,
                          tagger=again, mapper=serial_mapper)
    assert again.seen == []
    assert out2.set_index("item_id").loc["id3", "crosscheck"] == "disagree"


def test_drop_quarantines_and_flag_brings_back(paths):
    frame = manifest_of(paths, [{"gender": "female", "age": "34"}, {"gender": "male", "age": "34"}])
    tagger = FakeTagger({"f0.jpg": Tags(gender="male", gender_confidence=97.0, age=34.0),
                         "f1.jpg": Tags(gender="male", gender_confidence=97.0, age=34.0)})
    dropped = crosscheck.run(frame, cc_recipe(on_disagreement="drop"), paths, tagger=tagger, mapper=serial_mapper)
    row = dropped.set_index("item_id").loc["id0"]
    assert row["status"] == "quarantined"
    assert row["reason"] == "autotagger disagrees: gender: crawled female, tagger male (97%)"
    assert dropped.set_index("item_id").loc["id1", "status"] == "kept"
    # Running again keeps the decision stable; switching to flag keeps the face again.
    assert crosscheck.run(dropped, cc_recipe(on_disagreement="drop"), paths, tagger=tagger,
                          mapper=serial_mapper).set_index("item_id").loc["id0", "status"] == "quarantined"
    flagged = crosscheck.run(dropped, cc_recipe(on_disagreement="flag"), paths, tagger=tagger, mapper=serial_mapper)
    assert flagged.set_index("item_id").loc["id0", "status"] == "kept"
    assert flagged.set_index("item_id").loc["id0", "crosscheck"] == "disagree"


def test_autotagger_none_skips_everything(paths):
    frame = manifest_of(paths, [{"gender": "female", "age": "34"}, {"gender": "male", "age": "50"}])
    tagger = FakeTagger({})
    out = crosscheck.run(frame, cc_recipe(autotagger="none"), paths, tagger=tagger, mapper=serial_mapper)
    assert (out["crosscheck"] == "skipped").all() and (out["crosscheck_reason"] == "autotagger: none").all()
    assert tagger.seen == []


def test_age_range_counts_midpoint_and_width_and_labels_map_to_target(paths):
    frame = manifest_of(paths, [
        {"age": "38", "label": "protest"}, {"age": "41", "label": "protest"}, {"age": "30", "label": "portrait"},
    ])
    tagger = FakeTagger({
        "f0.jpg": Tags(age=30.0, age_width=10.0, labels={"Crowd": 93.0}),   # 25-35: 38 is within 5 + 5
        "f1.jpg": Tags(age=30.0, age_width=10.0, labels={"Person": 99.0}),  # 41 is 11 away: disagree
        "f2.jpg": Tags(age=30.0, age_width=4.0, labels={"Protest": 80.0}),  # portrait, but the tagger saw a protest
    })
    recipe = cc_recipe(fields={"age": {"field": "age", "margin": 5}}, labels={"protest": ["Crowd", "Protest"]})
    by = crosscheck.run(frame, recipe, paths, tagger=tagger, mapper=serial_mapper).set_index("item_id")
    assert by.loc["id0", "crosscheck"] == "agree"
    assert by.loc["id0", "crosscheck_label_reason"] == "label: protest, tagger saw Crowd"
    assert by.loc["id1", "crosscheck_age"] == "disagree" and "(margin 10)" in by.loc["id1", "crosscheck_age_reason"]
    assert by.loc["id1", "crosscheck_label_reason"] == "label: crawled protest, tagger saw none of Crowd, Protest"
    assert by.loc["id2", "crosscheck"] == "disagree" and "tagger saw Protest (protest)" in by.loc["id2", "crosscheck_reason"]


def test_report_and_review_page_order_most_likely_errors_first(paths):
    rows, opinions = [], {}
    for i in range(12):
        female = i % 2 == 0
        rows.append({"gender": "female" if female else "male", "age": str(25 + i), "source": "a" if i < 6 else "b"})
        opinions[f"f{i}.jpg"] = Tags(gender="female" if female else "male", gender_confidence=99.0, age=25.0 + i)
    opinions["f3.jpg"] = Tags(gender="female", gender_confidence=91.0, age=28.0)   # crawled male
    opinions["f5.jpg"] = Tags(gender="female", gender_confidence=99.5, age=30.0)   # crawled male, surer
    frame = manifest_of(paths, rows)
    out = crosscheck.run(frame, cc_recipe(), paths, tagger=FakeTagger(opinions), mapper=serial_mapper)
    summary = json.loads(paths.report_json("crosscheck").read_text())
    gender = summary["fields"]["gender"]
    assert gender["all"]["confusion"] == {"female": {"female": 6, "male": 0}, "male": {"female": 2, "male": 4}}
    assert gender["all"]["accuracy"] == pytest.approx(10 / 12, abs=1e-3)
    assert gender["all"]["precision_female"] == pytest.approx(6 / 8, abs=1e-3)
    assert gender["all"]["recall_male"] == pytest.approx(4 / 6, abs=1e-3)
    assert set(gender["by_source"]) == {"a", "b"}
    assert "male" in gender["by_attribute"]["gender"]
    assert summary["fields"]["age"]["all"]["mae"] == 0.0
    assert summary["outcomes"] == {"agree": 10, "disagree": 2, "skipped": 0}
    assert [r["item_id"] for r in summary["review"]] == ["id5", "id3"]
    page = (paths.reports / "review.html").read_text()
    assert page.index("f5.jpg") < page.index("f3.jpg")
    assert "http://127.0.0.1/p5.html" in page and "../faces/f5.jpg" in page
    html = sections.crosscheck(summary, paths)
    assert "Confusion" in html and "review.html" in html
    assert out["crosscheck_score"].notna().all()


def test_calibrated_ages_remove_a_systematic_bias_without_leakage(paths):
    rng = np.random.default_rng(3)
    n = 160
    true = rng.integers(20, 70, n)
    rows = [{"age": str(a), "gender": "female"} for a in true]
    rows[7]["age"] = str(true[7] + 22)  # one planted error
    frame = manifest_of(paths, rows)
    # The tagger squeezes ages towards 40 (as real ones do) and adds noise.
    opinions = {f"f{i}.jpg": Tags(gender="female", gender_confidence=99.0, age=float(40 + 0.5 * (a - 40) + rng.normal(0, 1.0)))
                for i, a in enumerate(true)}
    plain = crosscheck.run(frame, cc_recipe(calibrate=False), paths, tagger=FakeTagger(opinions), mapper=serial_mapper)
    calibrated = crosscheck.run(frame, cc_recipe(), paths, tagger=FakeTagger(opinions), mapper=serial_mapper)
    expected = calibrated["crosscheck_age_expected"].astype(float).to_numpy()
    clean = np.arange(n) != 7
    assert np.abs(expected - true)[clean].mean() < 3.0
    assert np.abs(plain["autotag_age"].astype(float).to_numpy() - true)[clean].mean() > 6.0
    assert plain["crosscheck_age"].eq("disagree").sum() > 40  # the squeezed tagger trips the plain margin
    flagged = calibrated.index[calibrated["crosscheck_age"] == "disagree"]
    assert 7 in flagged and len(flagged) <= 8
    assert calibrated["crosscheck_age_score"].astype(float).idxmax() == 7


def test_recipe_rejects_unknown_checks():
    with pytest.raises(RecipeError, match=r"(?s)cc\.yaml: the recipe is not valid:.*key 'crosscheck\.fields': "
                                          r"crosscheck\.fields can check gender, age and celebrity, not \['mood'\]"):
        cc_recipe(fields={"mood": "label"})


def test_batches_in_worker_processes_give_the_answers_of_one_process(utkface_dir, paths, monkeypatch):
    """The flow maps batches over worker processes with no model inside the work (each
    worker loads its own tagger): real faces tagged that way get the answers the same
    stage gives in one process."""
    monkeypatch.setenv("FACESET_WORKERS", "2")
    labels = pd.read_csv(utkface_dir / "labels.csv").sort_values("file").iloc[::50].head(40)
    for name in labels["file"]:
        shutil.copyfile(utkface_dir / name, paths.faces / name)
    frame = mf.conform(pd.DataFrame({
        "item_id": [f"u{i}" for i in range(len(labels))], "source": "site", "status": "kept",
        "face_path": ["faces/" + f for f in labels["file"]], "label": "x",
        "gender": np.where(labels["gender"] == 1, "female", "male"), "age": labels["age"].astype(str).to_numpy(),
    }), ["label", "gender", "age", "name"])
    sent: list[int] = []
    pool = process_mapper(2)

    def counting(fn, items):
        sent.extend(len(item) for item in items)
        return pool(fn, items)

    pooled = crosscheck.run(frame, cc_recipe(), paths, mapper=counting)
    serial = crosscheck.run(frame, cc_recipe(), paths, mapper=serial_mapper)
    assert len(sent) >= 2 and sum(sent) == len(frame)  # more than one batch: the pool really ran
    assert pooled["autotag_source"].eq("local").all() and pooled["autotag_note"].isna().all()
    for column in ("autotag_gender", "crosscheck", "crosscheck_reason"):
        assert pooled[column].tolist() == serial[column].tolist(), column
    for column in ("autotag_age", "autotag_gender_confidence"):
        assert pooled[column].astype(float).to_numpy() == pytest.approx(serial[column].astype(float).to_numpy(), abs=1e-3)


def test_learned_opinion_from_face_descriptors_finds_planted_errors(paths):
    """With the dedupe stage's descriptors, a model trained out-of-fold on the dataset's
    own labels catches errors the (here useless) tagger cannot."""
    from tasks.core.vectors import encode_vector as encode_descriptor

    rng = np.random.default_rng(5)
    n = 200
    true_age = rng.integers(20, 70, n).astype(float)
    female = rng.random(n) < 0.5
    basis = rng.normal(size=(3, 128))
    vectors = (np.outer((true_age - 45) / 15, basis[0]) + np.outer(np.where(female, 1.0, -1.0), basis[1])
               + 0.3 * rng.normal(size=(n, 128))) / 10
    gender = np.where(female, "female", "male")
    age = true_age.copy()
    gender[11] = "male" if female[11] else "female"   # planted gender error
    age[23] += 25                                      # planted age error
    frame = manifest_of(paths, [{"gender": g, "age": str(int(a))} for g, a in zip(gender, age)])
    frame["face_descriptor"] = [encode_descriptor(v) for v in vectors]
    # A tagger that knows nothing: coin-flip gender at 95%, the same age for everyone.
    opinions = {f"f{i}.jpg": Tags(gender=str(rng.choice(["female", "male"])), gender_confidence=95.0, age=40.0)
                for i in range(n)}
    out = crosscheck.run(frame, cc_recipe(), paths, tagger=FakeTagger(opinions), mapper=serial_mapper)
    assert out.loc[11, "crosscheck_gender"] == "disagree"
    assert "learned chance of error" in out.loc[11, "crosscheck_gender_reason"]
    assert out["crosscheck_gender"].eq("disagree").sum() <= 5   # the tagger's coin flips are not flagged
    assert out.loc[23, "crosscheck_age"] == "disagree"
    assert out["crosscheck_age_score"].astype(float).idxmax() == 23
    assert set(out["crosscheck_score"].astype(float).nlargest(2).index) == {11, 23}


def test_a_second_age_model_sharpens_the_learned_age(paths):
    """`autotag_second_age` (crosscheck.embeddings: true) is one more input of the learned
    age: with a second model that ages faces better than the tagger, the expected ages get
    closer to the truth, and the reason a reviewer reads shows both models' ages."""
    from tasks.core.vectors import encode_vector as encode_descriptor

    rng = np.random.default_rng(8)
    n = 200
    true_age = rng.integers(20, 70, n).astype(float)
    frame = manifest_of(paths, [{"gender": "female", "age": str(int(a))} for a in true_age])
    frame["face_descriptor"] = [encode_descriptor(v) for v in rng.normal(size=(n, 128)) / 10]  # no age in them
    opinions = {f"f{i}.jpg": Tags(gender="female", gender_confidence=99.0, age=float(a + rng.normal(0, 9)))
                for i, a in enumerate(true_age)}
    out = crosscheck.run(frame, cc_recipe(), paths, tagger=FakeTagger(opinions), mapper=serial_mapper)
    with_second = out.assign(autotag_second_age=pd.array(true_age + rng.normal(0, 3, n), dtype="Float64"))
    again = crosscheck.flag(with_second, cc_recipe())

    def error(result: pd.DataFrame) -> float:
        return float(np.abs(result["crosscheck_age_expected"].astype(float).to_numpy() - true_age).mean())

    assert error(again) < 0.7 * error(out)
    assert "second model" in again.loc[0, "crosscheck_age_reason"] and "second model" not in out.loc[0, "crosscheck_age_reason"]


def test_learned_age_is_out_of_fold():
    """A face's expected age never depends on its own label, even through the refit that
    leaves the worst-fit training rows out: a grossly changed label leaves its own
    expectation exactly as it was, while it does reach other rows (it trains their models)."""
    from tasks.crosscheck.calibration import learned_age

    rng = np.random.default_rng(8)
    n = 150
    true = rng.uniform(20, 70, n)
    features = np.outer((true - 45) / 15, rng.normal(size=16)) / 4 + 0.05 * rng.normal(size=(n, 16))
    tagger = 40 + 0.5 * (true - 40) + rng.normal(0, 3, n)
    crawled = true.round()
    before = learned_age(tagger, crawled, features)
    for row in (3, 77):
        changed = crawled.copy()
        changed[row] += 30
        after = learned_age(tagger, changed, features)
        assert after[row] == before[row]
        assert not np.allclose(np.delete(after, row), np.delete(before, row))


def test_age_spread_grows_with_the_expected_age():
    """Older faces are harder to age: the same gap counts for less at 70 than at 25."""
    from tasks.crosscheck.calibration import spread_of

    rng = np.random.default_rng(2)
    expected = rng.uniform(20, 75, 2000)
    crawled = expected + rng.normal(0, 1, 2000) * (2 + 0.1 * (expected - 20))
    spread = spread_of(expected, crawled)
    young, old = spread[expected < 30].mean(), spread[expected > 65].mean()
    assert 1.8 < young < 4.0 and 5.0 < old < 8.5


def test_embeddings_opt_in_fills_lite0_vectors_for_new_and_earlier_faces(paths):
    """`crosscheck.embeddings: true` embeds every checked face once (Lite0 vector and the
    second age model's age), earlier-tagged ones too, and again where a stored embedding
    has another width (an earlier version's) or the second age is missing."""
    from tasks.core.vectors import decode_vectors as decode, encode_vector as encode
    from tasks.crosscheck.embeddings import DIM

    frame = manifest_of(paths, [{"gender": "female", "age": "34"}, {"gender": "male", "age": "50"}])
    opinions = {f"f{i}.jpg": Tags(gender="female", gender_confidence=99.0, age=34.0) for i in range(2)}
    plain = crosscheck.run(frame, cc_recipe(), paths, tagger=FakeTagger(opinions), mapper=serial_mapper)
    assert plain["face_embedding"].isna().all()
    tagger = FakeTagger(opinions)
    out = crosscheck.run(plain, cc_recipe(embeddings=True), paths, tagger=tagger, mapper=serial_mapper)
    vectors = decode(out["face_embedding"])
    assert vectors is not None and vectors.shape == (2, DIM) and np.isfinite(vectors).all()
    assert not np.allclose(vectors[0], vectors[1])  # two different crops, two embeddings
    assert plain["autotag_second_age"].isna().all()
    ages = out["autotag_second_age"].astype(float)
    assert ages.between(0, 100).all() and ages.nunique() == 2
    again = crosscheck.run(out, cc_recipe(embeddings=True), paths, tagger=tagger, mapper=serial_mapper)
    assert len(tagger.seen) == 2 and again["face_embedding"].tolist() == out["face_embedding"].tolist()
    older = out.copy()
    older.loc[older.index[0], "face_embedding"] = encode(np.zeros(1280, np.float32))  # the last-layer kind
    renewed = crosscheck.run(older, cc_recipe(embeddings=True), paths, tagger=tagger, mapper=serial_mapper)
    assert len(tagger.seen) == 3 and renewed["face_embedding"].tolist() == out["face_embedding"].tolist()
    older = out.copy()
    older.loc[older.index[1], "autotag_second_age"] = pd.NA  # tagged before the second model existed
    renewed = crosscheck.run(older, cc_recipe(embeddings=True), paths, tagger=tagger, mapper=serial_mapper)
    assert len(tagger.seen) == 4 and renewed["autotag_second_age"].astype(float).tolist() == pytest.approx(ages.tolist())


def test_report_names_what_the_ages_were_learned_from():
    from tasks.crosscheck.metrics import calibration_mode
    from tasks.core.vectors import encode_vector as encode
    from tasks.crosscheck.embeddings import DIM

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"face_embedding": [encode(rng.normal(size=DIM).astype(np.float32)) for _ in range(120)],
                          "crosscheck_age_expected": pd.array(rng.uniform(20, 60, 120), dtype="Float64")})
    recipe = cc_recipe(embeddings=True)
    assert calibration_mode(frame, recipe) == "ages learned from this dataset's labels and Lite0 image embeddings (cross-fitted)"
    frame["autotag_second_age"] = pd.array(rng.uniform(20, 60, 120), dtype="Float64")
    assert calibration_mode(frame, recipe) == ("ages learned from this dataset's labels and Lite0 image embeddings "
                                               "and a second age model (cross-fitted)")
