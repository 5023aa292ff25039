"""The IMDB-WIKI WideResNet-16-8 as a fine-tuning backbone (`model: wrn16x8-imdbwiki`), offline,
on real UTKFace crops; and a model with weights that do not fit it is refused in words."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from builders import utkface_tree

from tasks.core.errors import FacesetError
from tasks.core.recipe import FinetuneConfig, RecipeError, finetune_settings
from tasks.finetune.apply import load_model
from tasks.finetune.pipeline import finetune_tree
from tasks.vision import backbones, face_weights, wideresnet

pytestmark = pytest.mark.skipif(not face_weights.WEIGHTS_FILE.is_file(),
                                reason=f"the IMDB-WIKI WideResNet weights are not at {face_weights.WEIGHTS_FILE} "
                                       "(bash scripts/setup.sh fetches them once)")


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_the_module_gives_the_cross_checks_ages_and_its_own_input(utkface_dir):
    """The trainable port computes what the cross-check's inference port computes."""
    from PIL import Image

    from tasks.crosscheck.second_age import WideResNet
    from tasks.finetune import data

    net, norm = backbones.build_net(wideresnet.NAME, "imdbwiki", 2)
    assert norm.mean == (0.0, 0.0, 0.0) and norm.std[0] == pytest.approx(1 / 255)
    transform = data.eval_transform(64, norm, 1.0)
    files = sorted(utkface_dir.glob("*.jpg"))[:4]
    images = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    body = net.body.eval()
    with torch.no_grad():
        out = body(images)
        reference = WideResNet(face_weights.WEIGHTS_FILE).ages(body.prepare(images))
    assert out.shape == (4, body.output_dim) == (4, 512 + 3)
    assert torch.allclose(out[:, -1] * 10, reference, atol=1e-3)  # the expected age, scaled to tens of years
    assert 1 < float(reference.min()) and float(reference.max()) < 100


@pytest.mark.slow
def test_fine_tunes_on_real_faces_offline_and_applies(utkface_dir, tmp_path, offline):
    tree = utkface_tree(utkface_dir, tmp_path / "tree", {"train": 20, "val": 6, "test": 4})
    config = FinetuneConfig(model=wideresnet.NAME, freeze="last", epochs=1, patience=1, cached_views=0,
                            grid={"lr": [0.001]})
    assert config.weights == "imdbwiki" and config.image_size == 64  # its own weights and input size
    before = backbones.build_net(wideresnet.NAME, "imdbwiki", 2)[0].state_dict()
    summary = finetune_tree(tree, tmp_path / "out", config, log=None)
    assert summary["arch"] == wideresnet.NAME and summary["images"] == {"train": 40, "val": 12, "test": 8}
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0 and "race" in summary["test"]["per_group"]
    net, checkpoint = load_model(tmp_path / "out")
    after = net.state_dict()
    # partly fine-tuned: the last blocks changed, the first ones are the pretrained ones
    assert not torch.equal(after["body.blocks.5.conv2.1.weight"], before["body.blocks.5.conv2.1.weight"])
    assert torch.equal(after["body.blocks.0.conv1.1.weight"], before["body.blocks.0.conv1.1.weight"])
    saved = json.loads((tmp_path / "out" / "recipe.json").read_text())
    settings = saved["finetune"]
    assert settings["model"] == wideresnet.NAME and settings["weights"] == "imdbwiki" and settings["image_size"] == 64
    assert "IMDB-WIKI" in saved["pretrained"] and "MIT" in saved["pretrained"] and "non-commercial" in saved["pretrained"]


def test_frozen_grid_caches_the_whole_body_and_freeze_last_splits_it():
    net, _ = backbones.build_net(wideresnet.NAME, "imdbwiki", 2, pool=2)
    assert net.embedding_dim == 4 * 512 + 3
    backbones.apply_freeze(net, "last")
    prefix, suffix = backbones.split_frozen(net, "last")
    images = torch.rand(2, 3, 64, 64) * 255
    net.eval()
    with torch.no_grad():
        assert torch.allclose(suffix(prefix(images)), net.body(images), atol=1e-4)
    trained = {name.split(".")[0] for name, p in net.body.named_parameters() if p.requires_grad}
    assert trained == {"blocks", "readout"}
    assert not any(p.requires_grad for p in net.body.blocks[3].parameters())


@pytest.mark.parametrize("model, weights, says", [
    ("resnet18", "lite0", "weights 'lite0' are tf_efficientnet_lite0's and do not fit model 'resnet18'"),
    ("resnet18", "imdbwiki", "do not fit model 'resnet18'"),
    (wideresnet.NAME, "imagenet", "has no torchvision ImageNet weights"),
    (wideresnet.NAME, "lite0", "do not fit model 'wrn16x8-imdbwiki'"),
])
def test_a_model_and_weights_that_do_not_fit_are_refused(model, weights, says):
    with pytest.raises(RecipeError) as recipe_error:
        finetune_settings({"model": model, "weights": weights}, "a test")
    assert says in str(recipe_error.value)
    with pytest.raises(FacesetError) as build_error:
        backbones.build_net(model, weights, 2)
    assert says in str(build_error.value)


def test_weights_alone_choose_their_model_and_a_model_alone_its_weights():
    assert FinetuneConfig(weights="lite0").model == "tf_efficientnet_lite0"
    assert FinetuneConfig(weights="imdbwiki").model == wideresnet.NAME
    assert FinetuneConfig(model="resnet18").weights == "imagenet"
    assert FinetuneConfig(model="lite0").weights == "lite0"
