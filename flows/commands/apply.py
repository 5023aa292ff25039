"""`faceset apply MODEL_DIR IMAGES...`: label new images with a model trained by faceset."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "apply",
        help="label new images with a trained model: a CSV of predicted class and probabilities",
        description="Classify images (or folders of images) with the model 'faceset finetune' saved. When the "
                    "model was trained on faceset's face crops, each image is cropped the same way first; "
                    "images with no usable face keep a row that says why.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="the folder holding model.pt (e.g. <dataset>/models)")
    parser.add_argument("images", metavar="IMAGES", nargs="+", help="image files or folders")
    parser.add_argument("--out", default="predictions.csv", help="CSV to write (default predictions.csv)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    return parser


def main(args: argparse.Namespace) -> int:
    from tasks.core.atomic import write_csv
    from tasks.finetune.apply import predict_images

    table = predict_images(Path(args.model_dir), args.images, device=args.device)
    out = Path(args.out)
    write_csv(out, table)
    labelled = int(table["predicted"].notna().sum())
    print(f"{labelled} of {len(table)} images labelled; predictions: {out}")
    for status, count in table.loc[table["predicted"].isna(), "status"].value_counts().items():
        print(f"  not labelled ({status}): {count}")
    return 0
