"""The default's face features and logistic head: trained offline on real UTKFace crops, saved,
and loaded again by `faceset apply` and `faceset evaluate`; settings that cannot work are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from builders import utkface_tree
from PIL import Image

from tasks.core.recipe import DEFAULT_FINETUNE, FinetuneConfig, RecipeError, finetune_settings
from tasks.finetune.apply import classify, load_models
from tasks.finetune.evaluate import evaluate_folder
from tasks.finetune.pipeline import finetune_tree
from tasks.finetune.grid import LOGISTIC_C
from tasks.vision.face_features import WithFaceFeatures


def test_face_features_and_the_logistic_head_need_frozen_features():
    with pytest.raises(RecipeError, match="face_features .* need freeze: head"):
        finetune_settings({"model": "tf_efficientnet_lite0", "freeze": "last", "face_features": ["agegender"]}, "a test")
    with pytest.raises(RecipeError, match="head: logistic is fitted on cached frozen features"):
        finetune_settings({"model": "tf_efficientnet_lite0", "head": "logistic", "cached_views": 0}, "a test")
    with pytest.raises(RecipeError, match="face_features"):
        finetune_settings({"face_features": ["vggface"]}, "a test")
    # leaving the preset's frozen backbone drops what needs it, and says so in the saved settings
    unfrozen = FinetuneConfig(freeze="last")
    assert unfrozen.head == "sgd" and unfrozen.face_features == []


def test_the_age_and_gender_outputs_follow_the_backbone_features(utkface_dir):
    from tasks.finetune import data
    from tasks.vision.backbones import build_net

    net, norm = build_net("tf_efficientnet_lite0", "lite0", 2, features_from=["blocks.2"], pool=1,
                          face_features=["agegender"])
    assert isinstance(net.body, WithFaceFeatures) and net.body.feature_blocks[1] == 82
    files = sorted(utkface_dir.glob("*.jpg"))[:2]
    with Image.open(files[0]) as a, Image.open(files[1]) as b:
        images = torch.stack([data.eval_transform(160, norm, 1.0)(i.convert("RGB")) for i in (a, b)])
    with torch.no_grad():
        out = net.body.eval()(images)
    assert out.shape == (2, net.embedding_dim)
    ages = out[:, -81:].exp().sum(1)  # the age network's log-probabilities: a distribution per face
    assert torch.allclose(ages, torch.ones(2), atol=1e-3) and torch.isfinite(out).all()


@pytest.mark.slow
def test_the_default_trains_on_real_faces_and_apply_and_evaluate_load_it(utkface_dir, tmp_path):
    assert DEFAULT_FINETUNE["face_features"] == ["agegender"] and DEFAULT_FINETUNE["head"] == "logistic"
    tree = utkface_tree(utkface_dir, tmp_path / "tree", {"train": 12, "val": 6, "test": 6})
    summary = finetune_tree(tree, tmp_path / "model", FinetuneConfig(budget=None), log=None)
    assert [p["C"] for p in summary["grid"]["points"]] == list(LOGISTIC_C)
    assert summary["test"]["n"] == 12 and summary["test"]["accuracy"] >= 0.5
    settings = json.loads((tmp_path / "model" / "recipe.json").read_text())
    saved = settings["finetune"]
    assert saved["face_features"] == ["agegender"] and saved["head"] == "logistic"
    assert "CC0-1.0" in settings["face_features"]["agegender"]  # the networks' terms travel with the model
    models, checkpoint = load_models(tmp_path / "model")
    assert isinstance(models[0][0].body, WithFaceFeatures)
    # apply reproduces the finetune's own test probabilities
    test_files = sorted((tree / "test").rglob("*.jpg"))
    crops = []
    for path in test_files:
        with Image.open(path) as image:
            crops.append(image.convert("RGB"))
    probs = classify(models, crops, torch.device("cpu"))
    targets = np.array([checkpoint["classes"].index(p.parent.name) for p in test_files])
    assert float((probs.argmax(1) == targets).mean()) == pytest.approx(summary["test"]["accuracy"], abs=1e-9)
    result = evaluate_folder(tmp_path / "model", tree / "test")
    assert result["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-9)
