"""`finetune.budget`: the plan is made from a measured cost, printed first, and the run keeps to it."""

from __future__ import annotations

import pytest
from builders import utkface_tree

from tasks.core.recipe import EnsembleMember, FinetuneConfig, RecipeError, budget_seconds, finetune_settings
from tasks.finetune import budget, data
from tasks.finetune.pipeline import finetune_tree

GRID = {"lr": [0.001, 0.005, 0.01], "batch_size": [16, 32], "weight_decay": [0.03, 0.1, 0.3]}


def test_budget_is_a_duration_in_words():
    assert [budget_seconds(b) for b in ("15m", "900s", "1h30m", "90", 45)] == [900, 900, 5400, 90, 45]
    with pytest.raises(RecipeError, match="is not a duration: write e.g. 15m"):
        finetune_settings({"budget": "soon"}, "a test")


def _frame(train: int, val: int, test: int):
    import pandas as pd

    splits = ["train"] * train + ["val"] * val + ["test"] * test
    return pd.DataFrame({"path": [f"{i}.jpg" for i in range(len(splits))], "split": splits, "target": 0})


def _fixed(seconds_per_image: float):
    """A measured cost that does not depend on the machine, so the plan's arithmetic can be checked."""
    calls = []

    def measure(config, frame, classes, device):
        calls.append(config.image_size)
        return seconds_per_image, 0.0
    return measure, calls


def test_a_budget_that_fits_keeps_the_settings_and_measures_each_model_once():
    config = FinetuneConfig(model="tf_efficientnet_lite0", grid=GRID, epochs=20, budget="1h",
                            ensemble=[EnsembleMember(image_size=128)])
    measure, calls = _fixed(0.01)
    plan = budget.plan(_frame(200, 50, 50), ["a", "b"], config, "cpu", measure=measure)
    assert plan.config == config and sorted(calls) == [128, 224]
    assert plan.estimate_seconds < 0.8 * 3600
    assert plan.lines()[0].startswith("plan for a budget of 60.0 min")


def test_a_small_budget_gives_up_members_then_grid_values_then_epochs_in_that_order():
    config = FinetuneConfig(model="tf_efficientnet_lite0", grid=GRID, epochs=20, budget="60s", freeze="last",
                            ensemble=[EnsembleMember(image_size=128), EnsembleMember(image_size=96)])
    plan = budget.plan(_frame(300, 60, 60), ["a", "b"], config, "cpu", measure=_fixed(0.01)[0])
    assert plan.config.ensemble == [] and plan.changes[:2] == ["left out ensemble member 2", "left out ensemble member 1"]
    grid_changes = [c for c in plan.changes if c.startswith("grid")]
    assert grid_changes == ["grid: weight_decay only 0.1", "grid: batch_size only 16", "grid: lr only 0.005"]
    assert plan.config.epochs < 20 and plan.estimate_seconds <= 0.8 * 60
    # 5 epochs of 300 images trained from images and 60 validated, at 10 ms an image, plus the test
    assert plan.estimate_seconds == pytest.approx(plan.config.epochs * 0.01 * (3 * 300 + 60) + 0.01 * 120)


def test_when_features_cost_most_a_cached_view_goes_before_any_grid_point():
    """A frozen model whose passes over the images outweigh training the head from the cache
    (a slow backbone) gives up its mirror view first: a grid point over cached features is cheap."""
    config = FinetuneConfig(model="tf_efficientnet_lite0", grid=GRID, epochs=20, budget="60s", freeze="head",
                            cached_views=2)
    plan = budget.plan(_frame(300, 60, 60), ["a", "b"], config, "cpu", measure=lambda *_: (0.1, 1e-6))
    assert plan.changes[0] == "cached views 2 -> 1 (passes over the images cost most)"
    assert plan.config.cached_views == 1
    cheap_features = budget.plan(_frame(300, 60, 60), ["a", "b"], config, "cpu", measure=lambda *_: (0.001, 1e-3))
    assert cheap_features.config.cached_views == 2 and cheap_features.changes[0].startswith("grid: ")


def test_a_default_run_with_time_to_spare_gains_the_measured_members():
    plan = budget.plan(_frame(100, 30, 30), ["a", "b"], FinetuneConfig(budget="1h"), "cpu", measure=_fixed(0.001)[0])
    assert plan.config.ensemble == budget.EXTRA_MEMBERS
    assert plan.changes[-1] == f"default run: {len(budget.EXTRA_MEMBERS)} of {len(budget.EXTRA_MEMBERS)} measured ensemble members fit the budget"
    tight = budget.plan(_frame(100, 30, 30), ["a", "b"], FinetuneConfig(budget="1s"), "cpu", measure=_fixed(0.1)[0])
    # the default's logistic head uses no grid and no epochs: only the mirror view can go
    assert tight.config.ensemble == [] and tight.config.cached_views == 1 and tight.config.head == "logistic"
    assert any("over the budget: it runs anyway" in c for c in tight.changes)
    assert not any(c.startswith("default run") for c in tight.changes)


@pytest.mark.slow
def test_the_run_stays_within_a_tiny_budget_on_real_faces(utkface_dir, tmp_path):
    tree = utkface_tree(utkface_dir, tmp_path / "tree", {"train": 8, "val": 4, "test": 4})
    lines = []
    summary = finetune_tree(tree, tmp_path / "out", FinetuneConfig(budget="45s"), log=lines.append)
    assert lines[0].startswith("plan for a budget of 0.8 min")
    assert summary["budget"]["seconds_taken"] <= 45
    assert summary["seconds"] <= 45 and summary["test"]["n"] == 8
    frame, _ = data.read_tree(tree)
    assert summary["budget"]["members"] == 1 + len(summary["ensemble"]["members"] if summary["ensemble"] else [])
