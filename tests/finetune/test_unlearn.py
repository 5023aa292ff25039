"""Joint learning and unlearning on a synthetic set with a planted attribute.

Shape (circle or square) is the target; the background tint (warm or cool) is the
attribute, independent of the shape and trivially visible. Without unlearning a linear
probe reads the tint from the embedding almost perfectly; unlearning must make that
clearly harder while the shape stays learnable.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from tasks.finetune import data
from tasks.vision.backbones import apply_freeze, build_net
from tasks.finetune.training import Hyper, pick_device
from tasks.finetune.apply import load_model
from tasks.finetune.unlearn import confusion_loss, run_unlearning
from tasks.core.recipe import FinetuneConfig, UnlearnConfig

TINTS = {"warm": (200, 120, 60), "cool": (60, 120, 200)}


def planted_tree(root: Path, per_cell: dict[str, int], seed: int = 0) -> Path:
    rng = random.Random(seed)
    for split, count in per_cell.items():
        lines = []
        for shape in ("circle", "square"):
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for tint, colour in TINTS.items():
                for index in range(count):
                    jitter = tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in colour)
                    image = Image.new("RGB", (64, 64), jitter)
                    draw = ImageDraw.Draw(image)
                    size, x, y = rng.randint(16, 26), rng.randint(14, 50), rng.randint(14, 50)
                    box = (x - size // 2, y - size // 2, x + size // 2, y + size // 2)
                    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=(240, 240, 240))
                    name = f"{tint}_{index}.png"
                    image.save(folder / name)
                    lines.append(json.dumps({"file_name": f"{shape}/{name}", "label": shape, "tint": tint}))
        (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_confusion_loss_is_lowest_for_uniform_predictions():
    uniform = torch.zeros(4, 2)
    confident = torch.tensor([[5.0, -5.0]] * 4)
    assert confusion_loss(uniform) == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert confusion_loss(confident) > confusion_loss(uniform)


@pytest.mark.slow
def test_unlearning_hides_the_planted_attribute_from_a_linear_probe(tmp_path):
    tree = planted_tree(tmp_path / "tree", {"train": 24, "val": 4, "test": 16})
    frame, classes = data.read_tree(tree)
    config = FinetuneConfig(model="tf_efficientnet_lite0", weights="lite0", freeze="head", image_size=64)
    unlearn = UnlearnConfig(attribute="tint", alpha=[3.0, 0.3])
    hyper = Hyper(lr=0.01, momentum=0.9, batch_size=16, epochs=30, step_size=100, gamma=0.5, patience=3, seed=1)

    def make_net():
        net, _ = build_net(config.model, config.weights, len(classes))
        return net, apply_freeze(net, config.freeze)

    _, norm = build_net(config.model, config.weights, len(classes))
    result = run_unlearning(frame, classes, config, unlearn, norm, hyper, make_net, pick_device("cpu"),
                            tmp_path / "unlearn", log=None)
    without, with_ = result["runs"]["without unlearning"], result["runs"]["with unlearning (alpha 3)"]
    assert result["evaluated_on"] == "test" and result["probe_majority_baseline"] == pytest.approx(0.5)
    assert without["probe_accuracy"] >= 0.85
    assert with_["probe_accuracy"] <= without["probe_accuracy"] - 0.2
    assert with_["target_accuracy"] >= 0.7
    assert Path(result["plot"]).is_file()
    # the alpha grid: no unlearning, then each alpha, each probed; more alpha hides more
    grid = result["alpha_grid"]
    assert [row["alpha"] for row in grid] == [0.0, 0.3, 3.0]
    assert grid[2]["probe_accuracy"] <= grid[0]["probe_accuracy"] - 0.2
    # each unlearned model is saved and, rebuilt, predicts what the run measured
    checkpoint = torch.load(grid[2]["model"], weights_only=True)
    assert Path(grid[2]["model"]).parent.name == "alpha_3" and checkpoint["unlearn"]["alpha"] == 3.0
    unlearned, saved = load_model(Path(grid[2]["model"]))  # as `faceset apply` loads any model
    assert saved["unlearn"]["alpha"] == 3.0
    test = frame[frame["split"] == "test"]
    transform = data.eval_transform(config.image_size, norm, config.eval_crop)
    with torch.no_grad():
        predicted = torch.cat([unlearned(x).argmax(1) for x, _ in data.loader(test, transform, 16, shuffle=False)])
    assert float((predicted.numpy() == test["target"].to_numpy()).mean()) == pytest.approx(with_["target_accuracy"])
