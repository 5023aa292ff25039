"""Fine-tuning end to end on a tiny tree of real UTKFace faces (gender), Lite0 frozen, offline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from builders import make_recipe, utkface_tree

from tasks.finetune import data, grid, run
from tasks.report.finetune_section import report_section
from tasks.finetune.pipeline import finetune_tree
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import FinetuneConfig

SMALL = {"train": 12, "val": 6, "test": 6}
CONFIG = FinetuneConfig(model="tf_efficientnet_lite0", weights="lite0", freeze="head", epochs=2, image_size=64,
                        grid={"lr": [0.01, 0.001], "momentum": [0.9], "batch_size": [8, 16]}, patience=2)


@pytest.fixture(scope="module")
def trained(utkface_dir, tmp_path_factory):
    """One fine-tuning run shared by the tests of this module (and the apply tests)."""
    root = tmp_path_factory.mktemp("finetune")
    tree = utkface_tree(utkface_dir, root / "tree", SMALL)
    summary = finetune_tree(tree, root / "out", CONFIG, log=None)
    return tree, root / "out", summary


@pytest.mark.slow
def test_outputs_are_written_and_consistent_with_predictions(trained):
    tree, out, summary = trained
    for name in ("model.pt", "class_map.json", "recipe.json", "grid.json", "grid.csv", "metrics_per_epoch.json",
                 "test_metrics.json", "confusion_matrix.json", "confusion_matrix.png", "curves.png", "predictions.csv"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["evaluated_on"] == "test" and metrics["n"] == 2 * SMALL["test"]
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == metrics["n"]
    assert metrics["accuracy"] == pytest.approx((predictions["class"] == predictions["predicted"]).mean())
    matrix = metrics["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == metrics["n"]
    assert sum(matrix[i][i] for i in range(2)) / metrics["n"] == pytest.approx(metrics["accuracy"])
    for index, name in enumerate(["female", "male"]):
        assert metrics["per_class"][name]["support"] == SMALL["test"]
        assert metrics["distribution"][name]["predicted"] == int((predictions["predicted"] == name).sum())
        assert metrics["per_class"][name]["recall"] == pytest.approx(matrix[index][index] / SMALL["test"])
    assert metrics["macro_f1"] == pytest.approx(sum(c["f1"] for c in metrics["per_class"].values()) / 2)
    # subgroups from metadata.jsonl: every test image is in one race group
    race = metrics["per_group"]["race"]
    assert sum(g["n"] for g in race["groups"].values()) == metrics["n"]
    for group in race["groups"].values():
        assert group["ci_low"] <= group["accuracy"] <= group["ci_high"]
    accuracies = [g["accuracy"] for g in race["groups"].values()]
    assert race["largest_gap"]["gap"] == pytest.approx(max(accuracies) - min(accuracies))
    assert json.loads((out / "class_map.json").read_text()) == {"0": "female", "1": "male"}


@pytest.mark.slow
def test_grid_runs_every_point_and_chooses_on_validation(trained):
    _, out, summary = trained
    table = json.loads((out / "grid.json").read_text())
    assert len(table["points"]) == 4 and table["cached_features"] is True
    assert {(p["lr"], p["batch_size"]) for p in table["points"]} == {(0.01, 8), (0.01, 16), (0.001, 8), (0.001, 16)}
    best = max(p["val_acc"] for p in table["points"])
    assert table["chosen"]["val_acc"] == best
    chosen = table["chosen"]["point"]
    history = json.loads((out / "accuracy" / f"point_{chosen:02d}.json").read_text())
    assert history == json.loads((out / "metrics_per_epoch.json").read_text())
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(history[0])
    assert min(h["val_loss"] for h in history) == pytest.approx(table["chosen"]["val_loss"])
    html = report_section(summary, DatasetPaths(out.parent / "dataset"))
    assert "<table>" in html and "Largest gap" in html and "curves.png" in html and "false positives" in html


@pytest.mark.slow
def test_cached_grid_reads_the_images_once_for_all_points(utkface_dir, tmp_path, monkeypatch):
    tree = utkface_tree(utkface_dir, tmp_path / "tree", {"train": 5, "val": 3, "test": 1})
    frame, classes = data.read_tree(tree)
    calls = []
    original = data.loader
    monkeypatch.setattr(data, "loader", lambda *a, **k: calls.append(len(a[0])) or original(*a, **k))
    from tasks.vision.backbones import apply_freeze, build_net
    from tasks.finetune.training import pick_device

    config = CONFIG.model_copy(update={"epochs": 1, "grid": {"lr": [0.01, 0.001], "momentum": [0.9],
                                                             "batch_size": [4]}})
    for use_cache, expected in ((True, 3), (False, 2 * 2)):
        calls.clear()
        net, norm = build_net(config.model, config.weights, len(classes))
        result = grid.run_grid(net, apply_freeze(net, "head"), frame, config, norm, pick_device("cpu"),
                               use_cache=use_cache)
        assert len(result.table) == 2 and result.cached is use_cache
        # cached: train, mirrored train and val read once for all points; uncached: train + val per point
        assert len(calls) == expected
    # cached_views: 0 caches nothing even when asked: fresh crops, train + val read per point
    calls.clear()
    net, norm = build_net(config.model, config.weights, len(classes))
    result = grid.run_grid(net, apply_freeze(net, "head"), frame, config.model_copy(update={"cached_views": 0}), norm,
                           pick_device("cpu"), use_cache=True)
    assert result.cached is False and len(calls) == 2 * 2


@pytest.mark.slow
def test_a_logistic_head_on_the_backbone_alone_weighs_its_features_as_one_block(utkface_dir, tmp_path):
    """head: logistic without face_features: the whole body is one block (it crashed reading
    timm's own `blocks` stages as the block sizes)."""
    from tasks.vision.backbones import apply_freeze, build_net
    from tasks.finetune.training import pick_device

    tree = utkface_tree(utkface_dir, tmp_path / "tree", {"train": 8, "val": 4, "test": 2})
    frame, classes = data.read_tree(tree)
    config = CONFIG.model_copy(update={"head": "logistic"})
    net, norm = build_net(config.model, config.weights, len(classes))
    result = grid.run_grid(net, apply_freeze(net, "head"), frame, config, norm, pick_device("cpu"))
    assert [p["C"] for p in result.table] == list(grid.LOGISTIC_C)
    chosen = result.fits[result.best].best_state  # (suffix), standardize, head: one block of embedding_dim
    assert chosen["1.std"].shape == (net.embedding_dim,)
    weight = (chosen["2.weight"] / chosen["1.std"]).float()  # the standardisation folded into the saved head
    assert torch.allclose(net.head.weight.detach().float(), weight, atol=1e-5)


@pytest.mark.slow
def test_command_line_on_a_tree_without_test_evaluates_on_val(utkface_dir, tmp_path, capsys):
    from flows.cli import main

    tree = utkface_tree(utkface_dir, tmp_path / "tree", {"train": 6, "val": 4}, splits=("train", "val"))
    settings = tmp_path / "settings.yaml"
    settings.write_text("finetune:\n  weights: lite0\n  image_size: 96\n  ensemble: [{image_size: 48}]\n")
    code = main(["finetune", str(tree), "--config", str(settings), "--epochs", "1", "--image-size", "64",
                 "--features-from", "blocks.2", "blocks.3", "--pool", "2", "--tta", "--weight-decay", "0.1", "0.3",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    saved = json.loads((tmp_path / "out" / "recipe.json").read_text())["finetune"]
    assert saved["features_from"] == ["blocks.2", "blocks.3"] and saved["pool"] == 2 and saved["tta"] is True
    assert saved["weights"] == "lite0" and saved["image_size"] == 64  # from the file; the option overrides it
    assert saved["ensemble"] == [{"model": None, "weights": None, "image_size": 48, "pool": None, "features_from": None}]
    assert (tmp_path / "out" / "ensemble" / "member_1" / "model.pt").is_file()
    assert sorted(p["weight_decay"] for p in json.loads((tmp_path / "out" / "grid.json").read_text())["points"]) == [0.1, 0.3]
    metrics = json.loads((tmp_path / "out" / "test_metrics.json").read_text())
    assert metrics["evaluated_on"] == "val" and metrics["n"] == 8
    assert {"accuracy", "macro_f1", "per_class", "per_group"} <= set(metrics)
    assert "race" in metrics["per_group"]
    assert str(tmp_path / "out" / "model.pt") in capsys.readouterr().out


def test_command_line_settings_file_errors_are_sentences(tmp_path, capsys):
    from flows.cli import main

    settings = tmp_path / "settings.yaml"
    settings.write_text("weights: lite0\nensemble: [{}]\nlearning_rate: 0.1\n")
    assert main(["finetune", str(tmp_path), "--config", str(settings)]) == 2
    err = capsys.readouterr().err
    assert "needs image_size, pool or features_from" in err and "learning_rate" in err and "Traceback" not in err
    # a bad option value is a sentence too, not pydantic's report
    assert main(["finetune", str(tmp_path), "--pool", "20"]) == 2
    err = capsys.readouterr().err
    assert "faceset finetune options: the fine-tuning settings are not valid" in err
    assert "key 'pool'" in err and "less than or equal to 8" in err and "pydantic" not in err


def test_one_class_is_skipped_with_a_reason(utkface_dir, tmp_path):
    tree = utkface_tree(utkface_dir, tmp_path / "tree", {"train": 3, "val": 2, "test": 1})
    for split in ("train", "val", "test"):
        shutil.rmtree(tree / split / "male")
    summary = finetune_tree(tree, tmp_path / "out", CONFIG, log=None)
    assert summary["skipped"] and "at least 2 classes" in summary["reason"]
    assert not (tmp_path / "out" / "model.pt").exists()


def test_stage_skips_too_few_images_and_keeps_the_manifest(utkface_dir, tmp_path):
    recipe = make_recipe("tiny", fields=("label", "race"), attributes=("race",),
                         finetune={"weights": "lite0", "min_images": 50})
    paths = DatasetPaths.create(tmp_path / "tiny")
    utkface_tree(utkface_dir, paths.splits, {"train": 3, "val": 2, "test": 1})
    manifest = pd.DataFrame({"item_id": ["a"], "status": ["kept"]})
    result = run(manifest, recipe, paths)
    assert result.equals(manifest)
    figures = json.loads(paths.report_json("finetune").read_text())
    assert figures["skipped"] and "at least 50 training images" in figures["reason"]
    assert "Skipped" in report_section(figures, paths)


def test_standardized_head_folds_into_a_plain_linear_layer():
    """The grid trains heads on standardized cached features; folding must not change a single output."""
    import torch

    features = torch.randn(50, 2, 30) * 20 + 7  # [images, views, features], far from unit scale
    standardize = grid.Standardize(features)
    head = torch.nn.Linear(30, 3)
    inputs = features[:, 0]
    expected = head(standardize(inputs))
    standardize.fold_into(head)
    assert torch.allclose(head(inputs), expected, atol=1e-4)


def test_standardize_does_not_blow_up_a_feature_that_was_constant_in_training():
    import torch

    features = torch.randn(40, 2, 5)
    features[..., 0] = 0.0  # dead in every training image
    standardize = grid.Standardize(features)
    unseen = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])  # the dead feature fires on a validation image
    assert standardize(unseen)[0, 0].abs() < 20  # divided by a tenth of the typical spread at most, not by ~0


@pytest.mark.slow
def test_the_logistic_head_is_fitted_to_the_optimum_of_its_problem(utkface_dir, tmp_path):
    """The default's features, standardised block by block, are small numbers: a loose lbfgs
    tolerance stopped after a few iterations, far from the optimum (docs/benchmarks.md)."""
    from sklearn.linear_model import LogisticRegression

    from tasks.core.recipe import DEFAULT_FINETUNE
    from tasks.vision.backbones import build_net, split_frozen
    from tasks.finetune.training import pick_device

    tree = utkface_tree(utkface_dir, tmp_path / "tree", {"train": 20, "val": 4, "test": 1})
    frame, classes = data.read_tree(tree)
    config = FinetuneConfig(**{**DEFAULT_FINETUNE, "image_size": 96})
    net, norm = build_net(config.model, config.weights, len(classes), features_from=config.features_from,
                          pool=config.pool, face_features=config.face_features)
    prefix, _ = split_frozen(net, "head")
    cache = grid.cache_frozen(prefix, frame, config, norm, pick_device("cpu"))
    standardize = grid.Standardize(cache["train"][0], net.body.feature_blocks)
    c = grid.LOGISTIC_C[-1]  # the weakest regularisation: the most iterations to converge
    grid.fit_logistic(torch.nn.Sequential(standardize, net.head), standardize, net.head, cache, c)

    views, targets = cache["train"]
    with torch.no_grad():
        inputs = standardize(views.float()).reshape(-1, views.shape[-1]).numpy()
    labels = targets.repeat_interleave(views.shape[1]).numpy()
    exact = LogisticRegression(C=c, max_iter=5000, tol=1e-10, class_weight="balanced").fit(inputs, labels)
    fitted = (net.head.weight[1] - net.head.weight[0]).detach().numpy()  # the log-odds of class 1
    # 0.003 of the optimum's length away here; the old tolerance (1e-3) stopped 0.18 away
    assert np.linalg.norm(fitted - exact.coef_[0]) / np.linalg.norm(exact.coef_[0]) < 0.05
