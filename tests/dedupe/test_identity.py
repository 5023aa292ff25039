"""Identity grouping: no chaining, names corroborate, thresholds checked per race group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import make_recipe, utk_sample
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tasks.dedupe import group
from tasks.dedupe import identity
from tasks.core.manifest import conform
from tasks.core.vectors import encode_vector



def along_axis(*positions: float) -> np.ndarray:
    """128-d descriptors on one line, so pair distances are the differences of positions."""
    out = np.zeros((len(positions), 128), dtype=np.float32)
    out[:, 0] = positions
    return out


def test_average_linkage_does_not_chain() -> None:
    """a-b and b-c are close, a-c is not: union-find would make one person of three."""
    labels = identity.group_people(along_axis(0.0, 0.40, 0.82), threshold=0.45)
    assert labels[0] == labels[1] != labels[2]
    chain = along_axis(*[0.3 * k for k in range(10)])  # every neighbour 0.3 apart
    labels = identity.group_people(chain, threshold=0.45)
    assert pd.Series(labels).value_counts().max() <= 2


def test_same_name_corroborates_up_to_the_name_threshold() -> None:
    pair = along_axis(0.0, 0.55)
    assert len(set(identity.group_people(pair, 0.45))) == 2
    assert len(set(identity.group_people(pair, 0.45, ["ann lee", "ann lee"], 0.6))) == 1
    assert len(set(identity.group_people(pair, 0.45, ["ann lee", "bo chen"], 0.6))) == 2
    assert len(set(identity.group_people(along_axis(0.0, 0.7), 0.45, ["x", "x"], 0.6))) == 2
    assert identity.normalise_name("  Ann   LEE ") == "ann lee" and identity.normalise_name(pd.NA) is None


def test_cluster_sets_person_groups_and_duplicates_inherit_them() -> None:
    """Fake descriptors: the model is not the point; the table logic is."""
    desc = along_axis(0.0, 0.2, 2.0, 0.0)
    frame = conform(pd.DataFrame({
        "item_id": ["a", "b", "c", "d"], "status": "kept", "source": "s",
        "sha256": ["1", "2", "3", "1"],  # d is a byte copy of a
        "phash": ["0f0f0f0f0f0f0f0f", "f0f0f0f0f0f0f0f0", "00ff00ff00ff00ff", "0f0f0f0f0f0f0f0f"],
        "hash_kind": "face", "face_descriptor": [encode_vector(v) for v in desc],
        "face_box": ["[0,0,100,100]", "[0,0,90,90]", "[0,0,90,90]", "[0,0,50,50]"],
    }), ["label", "name"])
    out = group.cluster(frame, make_recipe("test-set", fields=("label", "name"))).set_index("item_id")
    assert out.loc["d", "reason"] == "duplicate of a"
    assert out.loc["a", "person_group"] == out.loc["b", "person_group"] == out.loc["d", "person_group"] == "a"
    assert out.loc["c", "person_group"] == "c"
    assert (out["status"] != "quarantined").all()  # identity never removes an image


@pytest.fixture(scope="module")
def describer() -> identity.DlibDescriber:
    return identity.DlibDescriber()


def describe_file(describer: identity.DlibDescriber, path: Path) -> np.ndarray | None:
    image = Image.open(path).convert("RGB")
    image.thumbnail((640, 640))
    return describer(np.asarray(image)).descriptor


@pytest.mark.slow
def test_deepface_identity_pairs(photos_dir: Path, describer: identity.DlibDescriber) -> None:
    """Real model on the deepface pairs: 0.6 separates same and different people there."""
    pairs = pd.read_csv(photos_dir / "deepface" / "master.csv")
    files = sorted(set(pairs["file_x"]) | set(pairs["file_y"]))
    vectors = {f: describe_file(describer, photos_dir / "deepface" / f) for f in files}
    assert sum(v is not None for v in vectors.values()) >= 0.9 * len(files)
    pairs = pairs[[vectors[x] is not None and vectors[y] is not None for x, y in zip(pairs["file_x"], pairs["file_y"])]]
    dist = np.array([np.linalg.norm(vectors[x] - vectors[y]) for x, y in zip(pairs["file_x"], pairs["file_y"])])
    same = (pairs["Decision"] == "Yes").to_numpy()
    assert (dist[same] < 0.6).mean() >= 0.95 and (dist[~same] >= 0.6).mean() >= 0.95
    # grouping at the strict threshold never joins a "No" pair
    names = [f for f in files if vectors[f] is not None]
    labels = dict(zip(names, identity.group_people(np.stack([vectors[f] for f in names]), 0.45)))
    joined = np.array([labels[x] == labels[y] for x, y in zip(pairs["file_x"], pairs["file_y"])])
    assert not joined[~same].any()
    assert joined[same].mean() >= 0.3  # the strict threshold alone still finds many same-person pairs


@pytest.mark.slow
def test_threshold_per_race_group_on_different_people(utkface_dir: Path, describer: identity.DlibDescriber) -> None:
    """UTKFace faces are all different people: measure what each threshold would merge."""
    files = utk_sample(utkface_dir, 20, seed=3)
    races = pd.Series([int(f.name.split("_")[2]) for f in files])
    vectors = [describe_file(describer, f) for f in files]
    ok = [v is not None for v in vectors]
    desc, races = np.stack([v for v in vectors if v is not None]), races[ok].reset_index(drop=True)
    labels = identity.group_people(desc, 0.45)
    rates = pd.DataFrame(identity.merge_rates(desc, labels, races, 0.45)).set_index("group")
    loose = pd.DataFrame(identity.merge_rates(desc, labels, races, 0.6)).set_index("group")
    print("\njoin rate at 0.45:", rates["pair_join_rate"].round(4).to_dict(),
          "\njoin rate at 0.6:", loose["pair_join_rate"].round(4).to_dict(),
          "\nfaces merged at 0.45:", rates["faces_merged"].round(3).to_dict())
    assert (rates["pair_join_rate"] <= 0.05).all()
    assert (loose["pair_join_rate"] >= rates["pair_join_rate"]).all()
    assert (rates["faces_merged"] <= 0.3).all()  # Asian faces merge most even at 0.45: reported per group
    assert pd.Series(labels).value_counts().max() <= 3
    # union-find at 0.6 (the usual threshold) chains far more faces into one "person"
    i, j, _ = identity.pairwise_within(desc, 0.6)
    _, comp = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(len(desc),) * 2), directed=False)
    assert pd.Series(comp).value_counts().max() > pd.Series(labels).value_counts().max()
