"""`faceset evaluate`: a model measured on labelled images it never saw, stored beside it, preferred by apply."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from builders import utkface_tree

from flows.cli import main
from tasks.core.errors import FacesetError
from tasks.core.recipe import FinetuneConfig
from tasks.finetune.pipeline import finetune_tree
from tasks.finetune.shares import load_calibration

CONFIG = FinetuneConfig(model="tf_efficientnet_lite0", weights="lite0", freeze="head", epochs=2, image_size=64)


@pytest.fixture(scope="module")
def trained(utkface_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    tree = utkface_tree(utkface_dir, root / "tree", {"train": 5, "val": 3, "test": 4}, seed=8)
    finetune_tree(tree, root / "model", CONFIG, log=None)
    other = utkface_tree(utkface_dir, root / "other", {"test": 6}, seed=9, splits=("test",))
    return tree, root / "model", other


@pytest.mark.slow
def test_evaluate_stores_metrics_and_probabilities_and_apply_prefers_them(trained, tmp_path, capsys):
    tree, model_dir, other = trained
    # a hand-labelled set laid out <group>/<class>/: two photographers
    for number, path in enumerate(sorted((other / "test").glob("*/*.jpg"))):
        target = tmp_path / "labelled" / ("studio" if number % 2 else "street") / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    assert main(["evaluate", str(model_dir), str(tmp_path / "labelled"), "--name", "hand"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((model_dir / "evaluations" / "hand.json").read_text())
    rows = pd.read_csv(model_dir / "evaluations" / "hand.csv")
    assert result["n"] == len(rows) == 12 and set(result["per_group"]["group"]["groups"]) == {"studio", "street"}
    assert result["accuracy"] == pytest.approx((rows["predicted"] == rows["class"]).mean())
    assert sum(map(sum, result["confusion_matrix"]["matrix"])) == 12
    assert rows[["p_female", "p_male"]].sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert "accuracy by group" in printed and "evaluations/hand.json" in printed
    calibration = load_calibration(model_dir, ["female", "male"])
    assert "independent evaluation 'hand'" in calibration.source and len(calibration) == 12
    assert main(["apply", str(model_dir), str(tree / "test"), "--out", str(tmp_path / "out"), "--rounds", "50"]) == 0
    assert "independent evaluation 'hand'" in capsys.readouterr().out
    # the model trained again (a rebuild): the evaluation measured another model and is not used
    saved = (model_dir / "model.pt").read_bytes()
    (model_dir / "model.pt").write_bytes(saved + b"\0")
    try:
        assert "independent evaluation" not in load_calibration(model_dir, ["female", "male"]).source
        with pytest.raises(FacesetError, match="measured an earlier model"):
            load_calibration(model_dir, ["female", "male"], evaluation="hand")
    finally:
        (model_dir / "model.pt").write_bytes(saved)
    # without an evaluation: the finetune's own test split
    shutil.rmtree(model_dir / "evaluations")
    fallback = load_calibration(model_dir, ["female", "male"])
    assert "the finetune's test split" in fallback.source and fallback.probs is not None and len(fallback) == 8


@pytest.mark.slow
def test_a_split_tree_is_evaluated_on_its_test_split_with_its_metadata_groups(trained, capsys):
    tree, model_dir, _ = trained
    assert main(["evaluate", str(model_dir), str(tree), "--name", "again"]) == 0
    result = json.loads((model_dir / "evaluations" / "again.json").read_text())
    assert result["labelled"].startswith("the test/ split") and result["n"] == 8
    assert "race" in result["per_group"]
    # the same images as the finetune's own evaluation: the same accuracy
    assert result["accuracy"] == pytest.approx(json.loads((model_dir / "test_metrics.json").read_text())["accuracy"])
    shutil.rmtree(model_dir / "evaluations")


@pytest.mark.slow
def test_evaluate_refuses_folders_that_are_not_the_models_classes(trained, tmp_path, capsys):
    _, model_dir, other = trained
    (tmp_path / "odd" / "cats").mkdir(parents=True)
    shutil.copyfile(next((other / "test" / "female").glob("*.jpg")), tmp_path / "odd" / "cats" / "a.jpg")
    assert main(["evaluate", str(model_dir), str(tmp_path / "odd")]) == 2
    error = capsys.readouterr().err
    assert "cats are not classes of the model (female, male)" in error and "Traceback" not in error
    assert main(["evaluate", str(model_dir), str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
