"""`faceset finetune DIR`: fine-tune and evaluate a CNN on any train/val(/test)/<class>/ tree."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tasks.core.paths import DatasetPaths, ModelPaths


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a CNN on a train/val(/test)/<class>/ image tree or a built dataset, and evaluate it",
        description="Transfer learning as in Images as Data: a torchvision (or timm) model with a new final "
                    "layer, SGD with momentum, StepLR and early stopping, the best model chosen on val/ and "
                    "evaluated once on test/ (on val/ when there is no test/). A metadata.jsonl beside the "
                    "images gives accuracy per subgroup.",
    )
    parser.add_argument("directory", metavar="DIR", help="a folder with train/ and val/ (test/ optional), or a built dataset")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="a YAML file of finetune settings (any key of a recipe's finetune: section, e.g. an "
                             "ensemble), or a recipe; the options below override it")
    parser.add_argument("--model", default=None,
                        help="tf_efficientnet_lite0, wrn16x8-imdbwiki (face-pretrained) or a torchvision model name "
                             "(resnet18, resnet50, vgg16, ...); left out with --weights: the measured default "
                             "(docs/recipe-reference.md, finetune)")
    parser.add_argument("--weights", default=None, metavar="lite0|imdbwiki|imagenet|none|PATH",
                        help="pretrained weights (left out: the model's own; lite0 and imdbwiki ship offline, "
                             "imagenet needs the network once)")
    parser.add_argument("--freeze", choices=("head", "last", "none"), default=None,
                        help="train only the new head, the last blocks too, or everything (default head)")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs per grid point (early stopping may end sooner)")
    parser.add_argument("--image-size", type=int, default=None, help="network input side in pixels (default 224)")
    parser.add_argument("--lr", type=float, nargs="+", default=None, help="learning rate(s); several make a grid")
    parser.add_argument("--momentum", type=float, nargs="+", default=None, help="momentum value(s) for the grid")
    parser.add_argument("--batch-size", type=int, nargs="+", default=None, help="batch size(s) for the grid")
    parser.add_argument("--weight-decay", type=float, nargs="+", default=None, help="SGD weight decay value(s) for the grid")
    parser.add_argument("--features-from", nargs="+", default=None, metavar="STAGE",
                        help="take features from these stages instead of the last layer (e.g. blocks.2 blocks.3 "
                             "blocks.4 for lite0, layer3 for ResNets): middle stages transfer better to faces")
    parser.add_argument("--pool", type=int, default=None, help="with --features-from: average each stage to an "
                                                                 "N x N grid (default 1)")
    parser.add_argument("--tta", action="store_true", default=None,
                        help="average each test image's prediction with its mirror image's")
    parser.add_argument("--eval-crop", type=float, default=None,
                        help="share of the image side kept at evaluation (default 0.875; 1 keeps the whole face crop)")
    parser.add_argument("--budget", default=None, metavar="TIME",
                        help="how long the fine-tune may take, e.g. 15m or 900s: grid size, ensemble members and "
                             "epochs are chosen from a cost per image measured on this machine (the plan is printed "
                             "first; the default settings come with 15m)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--out", default=None, help="where the model and metrics go (default DIR/models for a built "
                                                   "dataset, else DIR/finetune)")
    return parser


def _dataset_info(directory: Path) -> dict:
    """A built dataset's manifest_share.json (faces settings, attributes), or nothing."""
    about = DatasetPaths(directory).share_json
    return json.loads(about.read_text(encoding="utf-8")) if about.is_file() else {}


def main(args: argparse.Namespace) -> int:
    from tasks.finetune.pipeline import finetune_tree
    from tasks.finetune.data import locate_splits
    from tasks.core.recipe import finetune_settings, load_finetune_settings

    settings = {"model": args.model, "weights": args.weights, "freeze": args.freeze, "epochs": args.epochs,
                "budget": args.budget,
                "image_size": args.image_size, "pool": args.pool, "tta": args.tta, "eval_crop": args.eval_crop,
                "features_from": args.features_from[0] if args.features_from and len(args.features_from) == 1
                else args.features_from}
    grid = {"lr": args.lr, "momentum": args.momentum, "batch_size": args.batch_size, "weight_decay": args.weight_decay}
    base = load_finetune_settings(args.config).model_dump() if args.config else {}
    if args.model or args.weights:  # the file's resolved pair gives way to the one named here
        base = {k: v for k, v in base.items() if k not in ("model", "weights") or not (args.model or args.weights)}
        base = {**base, "image_size": None} if args.model and args.image_size is None else base
    config = finetune_settings({**base, **{k: v for k, v in settings.items() if v is not None},
                                "grid": {**base.get("grid", {}), **{k: v for k, v in grid.items() if v}}},
                               "faceset finetune options" + (f" and {args.config}" if args.config else ""))
    directory = Path(args.directory)
    splits = locate_splits(directory)
    built = splits != directory
    info = _dataset_info(directory) if built else {}
    out = Path(args.out) if args.out else DatasetPaths(directory).models if built else directory / "finetune"
    summary = finetune_tree(splits, out, config, attributes=info.get("attributes"), device=args.device,
                            crop_faces=info.get("faces"))
    if summary.get("skipped"):
        print(f"nothing trained: {summary['reason']}")
        return 1
    test = summary["test"]
    print(f"{test['evaluated_on']} accuracy {test['accuracy']:.3f}, macro F1 {test['macro_f1']:.3f} "
          f"({test['n']} images)")
    for attribute, groups in test["per_group"].items():
        gap = groups["largest_gap"]
        judged = "" if not gap["too_few_to_judge"] else "; too few images per group to judge"
        print(f"  {attribute}: largest accuracy gap {gap['gap']:.3f} ({gap['highest']} vs {gap['lowest']}){judged}")
    print(f"model: {summary['model']}")
    print(f"metrics: {ModelPaths(out).test_metrics}")
    return 0
