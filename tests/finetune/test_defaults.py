"""The defaults: a recipe without finetune settings and the plain `faceset finetune DIR` train the
measured default preset, offline (no connection is even attempted), and say everything they used."""

from __future__ import annotations

import json
import socket

import pytest
import yaml
from builders import make_recipe, utkface_tree

from tasks.core.recipe import DEFAULT_FINETUNE, FinetuneConfig
from tasks.export.card import recipe_block
from tasks.finetune.weights import check_weights


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"a network connection was attempted: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_no_settings_is_the_default_preset_with_offline_weights(offline):
    config = FinetuneConfig()
    assert (config.model, config.weights) == (DEFAULT_FINETUNE["model"], DEFAULT_FINETUNE["weights"])
    assert config.weights in ("lite0", "imdbwiki") and config.budget == "15m"
    check_weights(config)  # the build's preflight: no download, no probe of the download host
    assert offline == []
    # a setting given keeps the rest of the preset; naming a model leaves the preset
    assert FinetuneConfig(epochs=5).pool == DEFAULT_FINETUNE["pool"]
    assert FinetuneConfig(model="resnet18").pool == 1


def test_a_recipe_without_finetune_and_its_card_block_name_every_setting():
    recipe = make_recipe()
    assert recipe.finetune == FinetuneConfig()
    block = yaml.safe_load(recipe_block(recipe))  # the card's recipe block
    assert block["finetune"]["model"] == DEFAULT_FINETUNE["model"] and block["finetune"]["weights"] == DEFAULT_FINETUNE["weights"]
    # the card's block rebuilds the same settings
    assert FinetuneConfig.model_validate(block["finetune"]) == recipe.finetune
    explicit = FinetuneConfig(model="tf_efficientnet_lite0", weights="lite0", epochs=3)
    dumped = explicit.model_dump(mode="json", exclude_defaults=True)
    assert dumped["weights"] == "lite0" and FinetuneConfig.model_validate(dumped) == explicit


@pytest.mark.slow
def test_the_plain_command_trains_offline(utkface_dir, tmp_path, offline, capsys):
    from flows.cli import main

    tree = utkface_tree(utkface_dir, tmp_path / "tree", {"train": 6, "val": 3, "test": 3})
    assert main(["finetune", str(tree), "--budget", "40s"]) == 0
    out = capsys.readouterr().out
    assert out.index("plan for a budget") < out.index(f"fine-tuning {DEFAULT_FINETUNE['model']} (weights "
                                                       f"{DEFAULT_FINETUNE['weights']}")
    saved = json.loads((tree / "finetune" / "recipe.json").read_text())["finetune"]
    assert saved["model"] == DEFAULT_FINETUNE["model"] and saved["weights"] == DEFAULT_FINETUNE["weights"]
    assert saved["pool"] == DEFAULT_FINETUNE["pool"] and saved["budget"] == "40s"
    assert offline == []


def test_on_cuda_every_layer_trains_in_larger_batches_unless_the_recipe_said_otherwise():
    import torch

    from tasks.finetune.device_plan import for_device

    cuda = torch.device("cuda")  # a device object only: the decisions need no GPU to be checked
    config, said = for_device(FinetuneConfig(), cuda)
    assert config.freeze == "none" and config.cached_views == 0
    assert config.grid["batch_size"] == [b * 4 for b in DEFAULT_FINETUNE["grid"]["batch_size"]]
    assert any("mixed precision" in line for line in said) and any("every layer" in line for line in said)
    assert all(m.freeze == "none" for m in config.model_copy(update={"ensemble": []}).members())
    kept, said = for_device(FinetuneConfig(model="resnet18", freeze="head", batch_size=8), cuda)
    assert kept.freeze == "head" and kept.batch_size == 8 and not any("every layer" in line for line in said)
    same, said = for_device(FinetuneConfig(), torch.device("cpu"))
    assert same == FinetuneConfig() and said == []
