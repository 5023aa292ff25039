"""`faceset apply MODEL_DIR INPUT...`: label faces with a model trained by faceset, and report shares per group."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "apply",
        help="label faces with a trained model: predictions per face, and the share of each class per group",
        description="Classify images, folders of images or a built dataset's kept faces with the model 'faceset "
                    "finetune' saved, and report the share of each class per group: counted (naive) and adjusted "
                    "for the model's measured errors, with a 95%% interval (docs/shares.md). When the model was "
                    "trained on faceset's face crops, each image is cropped the same way first; images with no "
                    "usable face keep a row that says why.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="the folder holding model.pt (e.g. <dataset>/models)")
    parser.add_argument("inputs", metavar="INPUT", nargs="+",
                        help="image files, folders of images, or a dataset folder 'faceset build' wrote")
    parser.add_argument("--faces", choices=("one", "each"), default="one",
                        help="'each' classifies every face of each image (group photos); 'one' (default) the one "
                             "face, or the whole image for a model trained on whole images")
    parser.add_argument("--by", nargs="+", default=[], metavar="COLUMN",
                        help="group the shares by these columns: a dataset's manifest columns (e.g. query, source), "
                             "or 'folder' (the folder an image is in) for loose images")
    parser.add_argument("--out", default="applied", metavar="DIR",
                        help="folder for predictions.csv, shares.csv and shares.html (default ./applied)")
    parser.add_argument("--crops", default=None, metavar="DIR",
                        help="also save each classified face crop here as PNG (column 'crop'): sort a sample into "
                             "<class>/ folders by hand and run 'faceset evaluate' on them")
    parser.add_argument("--evaluation", default=None, metavar="NAME",
                        help="adjust with this evaluation of 'faceset evaluate' (default: the newest one, else the "
                             "finetune's held-out split)")
    parser.add_argument("--method", choices=("acc", "pacc"), default=None,
                        help="the adjustment (default pacc when held-out probabilities were kept, else acc)")
    parser.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds of the intervals (default 1000)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    return parser


def main(args: argparse.Namespace) -> int:
    from tasks.finetune.apply import apply_model

    result = apply_model(Path(args.model_dir), args.inputs, Path(args.out), faces=args.faces, by=args.by,
                         evaluation=args.evaluation, method=args.method, rounds=args.rounds, device=args.device,
                         crops=Path(args.crops) if args.crops else None)
    table = result["table"]
    print(f"{result['faces']} faces labelled in {result['images']} images; predictions: {result['files']['predictions']}")
    for status, count in table.loc[table["predicted"].isna(), "status"].value_counts().items():
        print(f"  not labelled ({status}): {count}")
    print(result["note"])
    shares = result["shares"]
    first = shares["class"].iloc[0] if len(shares) else None
    for row in shares[shares["class"] == first].to_dict("records"):
        group = " / ".join(str(row[c]) for c in args.by) if args.by else "all"
        adjusted = (f", adjusted {row['adjusted']:.1%} ({row['low']:.1%} to {row['high']:.1%})"
                    if "adjusted" in row else "")
        print(f"  {group}: {row['faces']} faces, share of {first} naive {row['naive']:.1%}{adjusted}")
    print(f"shares: {result['files']['csv']} and {result['files']['html']}")
    return 0
