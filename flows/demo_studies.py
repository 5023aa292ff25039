"""Studies of docs/studies.md run on the demo site: `faceset demo --study athletes|validation`.

Each study crawls the demo site's profile pages (flows/demo_site.py) with its own recipe
through `faceset build`, then does what the study does after the build, with the same code
the commands run:

- athletes: the recipe builds the original split, the biased variant by age ranges
  (women 16-35, men 40-70) and the balanced one, and trains with unlearning of age over a
  list of alphas; then a model is trained on the biased variant (`faceset finetune`) and
  both models are measured on the balanced variant (`faceset evaluate`): the study's Table 1.
- validation: the cross-check tags every face with the local autotagger; a seeded sample
  of faces gets gold labels (`faceset labels import`), taken from the corpus's own labels,
  where the study would have people label them; the next build scores the crawled labels,
  the autotagger and the flags against them (reports/validation.json) and trains the
  book's ResNet-18 grid.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from flows.demo_site import DEMO_FINETUNE, DemoServer, DemoSite, Profile, recipe_text
from tasks.core.atomic import write_text

Log = Callable[[str], None]

# The athlete-profile study's design (docs/studies.md, section 2).
AGE_BINS = [0, 20, 30, 40, 50, 60, 120]
PAIRS = {"female": (16, 35), "male": (40, 70)}
ALPHAS = [0.3, 1, 3]
# The book's ResNet-18 grid (docs/studies.md, section 3).
RESNET_GRID = "{lr: [0.0005, 0.001, 0.005], momentum: [0.7, 0.9], batch_size: [4, 16]}"
WRONG_GENDER = 0.05  # share of the validation study's profiles whose page states the other gender
GOLD_SAMPLE = 100  # faces in the validation sample (all kept faces when fewer)
GOLD_LABELLER = "corpus truth (demo)"


@contextmanager
def on_site(site: DemoSite, port: int, recipe_path: Path, recipe: Callable[[str], str],
            log: Log = print) -> Iterator[DemoServer]:
    """The demo site served on 127.0.0.1 (another port when `port` is taken), with the recipe
    `recipe(site_url)` written to `recipe_path`, for the builds run inside the block."""
    try:
        server = DemoServer(site, port=port)
    except OSError:
        log(f"demo: port {port} is taken, using a free port (caches from earlier runs will not apply)")
        server = DemoServer(site)
    with server:
        recipe_path.parent.mkdir(parents=True, exist_ok=True)
        write_text(recipe_path, recipe(server.url))
        log(f"demo: site on {server.url}, recipe {recipe_path}")
        yield server


# ---------------------------------------------------------------- athletes


def athletes_sections(epochs: int) -> dict[str, str]:
    """The athlete study's recipe sections: gender with age, both variants, unlearning over alphas."""
    pairs = ", ".join(f"{c}: [{lo}, {hi}]" for c, (lo, hi) in PAIRS.items())
    return {
        "attributes": " [age]",
        "crosscheck": " {autotagger: none}",
        "split": f"""
  train: 0.6
  val: 0.2
  test: 0.2
  stratify: [gender]
  seed: 13
  bins: {{age: {AGE_BINS}}}
  variants:
    - {{kind: biased, attribute: age, strength: 0.9, pairs: {{{pairs}}}}}
    - {{kind: balanced, by: [gender], within: [age]}}""",
        "finetune": DEMO_FINETUNE.format(epochs=epochs) + f"\n  unlearn: {{attribute: age, alpha: {ALPHAS}}}",
    }


def _trained_on(tree: Path) -> set[str]:
    """Item ids of a split tree's train/ and val/ images (a model learnt or chose on them)."""
    return {p.stem for split in ("train", "val") for p in (tree / split).glob("*/*.jpg")}


def _against_bias(row: pd.Series) -> bool:
    """A face the biased variant's pairing does not predict: its age outside its class's range
    and inside the other class's (a woman of 40-70, a man of 16-35)."""
    others = [r for c, r in PAIRS.items() if c != row["class"]]
    return any(lo <= row["age"] <= hi for lo, hi in others) and not (
        PAIRS[row["class"]][0] <= row["age"] <= PAIRS[row["class"]][1])


def table_row(evaluation: dict[str, Any], trained: set[str]) -> dict[str, Any]:
    """One row of Table 1: accuracy on the balanced test split, on its faces against the bias,
    and on its faces the model never saw in training or validation (the variants are drawn
    from one pool, so a balanced test face can be a training face of another variant)."""
    rows = pd.read_csv(evaluation["probabilities"])
    rows["correct"] = rows["class"] == rows["predicted"]
    rows["age"] = pd.to_numeric(rows.get("age"), errors="coerce")
    against = rows[rows.apply(_against_bias, axis=1)]
    unseen = rows[~rows["path"].map(lambda p: Path(p).stem).isin(trained)]
    return {"n": len(rows), "accuracy": float(rows["correct"].mean()),
            "against_bias": {"n": len(against), "accuracy": float(against["correct"].mean()) if len(against) else None},
            "unseen": {"n": len(unseen), "accuracy": float(unseen["correct"].mean()) if len(unseen) else None}}


def athletes_study(site: DemoSite, data_root: Path, *, port: int, epochs: int, rebuild: bool,
                   log: Log = print) -> dict[str, Any]:
    """Build the athlete study's dataset on the demo site, train on its biased variant and
    evaluate both models on the balanced variant; returns Table 1, the alpha grid and the files."""
    from flows.build import build  # imported late: Prefect is slow to import
    from tasks.core.atomic import read_json
    from tasks.core.paths import DatasetPaths, ModelPaths
    from tasks.core.recipe import load_recipe
    from tasks.finetune.evaluate import evaluate_folder
    from tasks.finetune.pipeline import finetune_tree

    recipe_path = data_root / "recipes" / "demo-athletes.yaml"
    sections = athletes_sections(epochs)
    with on_site(site, port, recipe_path, lambda url: recipe_text(site, url, "demo-athletes", epochs, sections), log):
        dataset = build(recipe_path, data_root=str(data_root), rebuild=rebuild)
    paths, recipe = DatasetPaths(dataset), load_recipe(recipe_path)
    biased, balanced = paths.tree("split_biased"), paths.tree("split_balanced")
    models = {"original": paths.models, "biased": paths.root / "models-biased"}
    log(f"demo athletes: faceset finetune {biased} --out {models['biased']} (the recipe's settings, no unlearning)")
    finetune_tree(biased, models["biased"], recipe.finetune.model_copy(update={"unlearn": None}),
                  attributes=recipe.attributes, bins=recipe.split.bins,
                  crop_faces=recipe.faces.model_dump(mode="json") if recipe.faces else None, log=log)
    table = {}
    for name, model_dir in models.items():
        log(f"demo athletes: faceset evaluate {model_dir} {balanced}")
        evaluation = evaluate_folder(model_dir, balanced, name="balanced")
        tree = paths.splits if name == "original" else biased
        table[name] = {**table_row(evaluation, _trained_on(tree)), "train_images": len(list((tree / "train").glob("*/*.jpg"))),
                       "evaluation": str(ModelPaths(model_dir).evaluation_json("balanced"))}
    unlearn = read_json(ModelPaths(paths.models).unlearn_json, "no unlearning figures")
    return {"dataset": dataset, "paths": paths, "table": table, "unlearn": unlearn,
            "split": read_json(paths.report_json("split"), "no split report"),
            "models": models, "recipe": recipe_path}


# ---------------------------------------------------------------- validation


def validation_sections(epochs: int) -> dict[str, str]:
    """The validation study's recipe sections: the local autotagger's cross-check and the book's
    ResNet-18 grid, trained offline: ImageNet weights would need the internet, so ResNet-18
    starts from random weights (`weights: none`) and, to fit a demo on two cores, only its last
    block and head are trained, on cached features of 96-pixel crops (`freeze: last`)."""
    return {
        "finetune": f"""
  model: resnet18
  weights: none  # ImageNet weights need the internet once: offline, ResNet-18 starts from random weights
  freeze: last  # the last block and the head train, on cached features: a demo's budget on two cores
  image_size: 96
  eval_crop: 1.0
  epochs: {epochs}
  grid: {RESNET_GRID}""",
    }


def gold_from_truth(site: DemoSite, manifest: pd.DataFrame, size: int = GOLD_SAMPLE, seed: int = 13) -> pd.DataFrame:
    """A validation sample of kept faces (seeded) with their gold gender and age, as a labeller's
    CSV would give them (page_url, gender, age): the corpus's own labels, known for every profile."""
    truth = {p.slug: p.truth for p in site.profiles if p.truth}
    kept = manifest[manifest["status"] == "kept"]
    pages = sorted(u for u in kept["page_url"].astype(str) if u.rsplit("/", 1)[-1].removesuffix(".html") in truth)
    chosen = sorted(random.Random(seed).sample(pages, min(size, len(pages))))
    return pd.DataFrame([{"page_url": url, **truth[url.rsplit("/", 1)[-1].removesuffix(".html")]} for url in chosen])


def validation_study(site: DemoSite, data_root: Path, *, port: int, epochs: int, rebuild: bool,
                     log: Log = print) -> dict[str, Any]:
    """Build up to the cross-check, import gold labels for a validation sample, build again (the
    cross-check on: validation tables, the ResNet-18 grid); returns the figures and the files."""
    from flows.build import build
    from tasks.core import gold
    from tasks.core import manifest as mf
    from tasks.core.atomic import read_json
    from tasks.core.decisions import manifest_fields
    from tasks.core.paths import DatasetPaths, ModelPaths

    recipe_path = data_root / "recipes" / "demo-validation.yaml"
    sections = validation_sections(epochs)
    with on_site(site, port, recipe_path, lambda url: recipe_text(site, url, "demo-validation", epochs, sections), log):
        dataset = build(recipe_path, data_root=str(data_root), rebuild=rebuild, until="crosscheck")
        paths = DatasetPaths(dataset)
        manifest = mf.read(paths.manifest)
        sample = gold_from_truth(site, manifest)
        sample_csv = paths.root / "gold_sample.csv"
        sample.to_csv(sample_csv, index=False)
        imported = gold.import_table(sample, manifest, sorted(manifest_fields(manifest)), labeller=GOLD_LABELLER,
                                     source=f"import {sample_csv.name}")
        if gold.read(paths)["labeller"].eq(GOLD_LABELLER).any():
            log(f"demo validation: the gold labels of an earlier run are kept in {gold.gold_path(paths)}")
        else:
            gold.append(paths, imported.labels)
            log(f"demo validation: faceset labels import {dataset} {sample_csv}: {len(imported.labels)} gold labels "
                f"on {imported.labels['item_id'].nunique()} faces, from the corpus's own labels")
        dataset = build(recipe_path, data_root=str(data_root))
    return {"dataset": dataset, "paths": paths, "gold_csv": gold.gold_path(paths), "sample_csv": sample_csv,
            "validation": read_json(paths.report_json("validation"), "no validation report"),
            "finetune": read_json(paths.report_json("finetune"), "no finetune report"),
            "metrics": ModelPaths(paths.models).test_metrics, "recipe": recipe_path,
            "planted": len(misstated(site))}


def misstated(site: DemoSite) -> set[str]:
    """Slugs of the profiles whose page states another gender than the corpus's labels."""
    return {p.slug for p in site.profiles if p.truth and stated_gender(p) not in (None, p.truth["gender"])}


def stated_gender(profile: Profile) -> str | None:
    """The gender a profile's page states (its bio's first word), None where it states none."""
    return {"She": "female", "He": "male"}.get(profile.bio.split(" ", 1)[0])
