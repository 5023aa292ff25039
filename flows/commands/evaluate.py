"""`faceset evaluate MODEL_DIR LABELLED_DIR`: measure a model on labelled images it never saw, and keep the result beside it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained model on a labelled image tree; 'faceset apply' then adjusts shares with it",
        description="Classify the images of an ImageFolder tree (<class>/*.jpg, <group>/<class>/*.jpg, or a "
                    "dataset's splits/ or variants/<name>/ folder, whose test/ split is used) and report accuracy, "
                    "per class, per group and the confusion matrix. The result and every image's probabilities "
                    "are stored in MODEL_DIR/evaluations/<name>.json and .csv; 'faceset apply' prefers this "
                    "independent measure of the model's errors to the finetune's own held-out split.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="the folder holding model.pt (e.g. <dataset>/models)")
    parser.add_argument("labelled", metavar="LABELLED_DIR", help="labelled face images in <class>/ folders")
    parser.add_argument("--name", default=None, help="the evaluation's name (default: the folder's name)")
    parser.add_argument("--labels", default=None, metavar="CSV",
                        help="group columns for the per-group accuracy: a CSV with a 'file' column (path or file "
                             "name) and one column per grouping")
    parser.add_argument("--split", default=None, help="with a split tree: the split to use (default test, else val)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    return parser


def main(args: argparse.Namespace) -> int:
    from tasks.finetune.evaluate import evaluate_folder

    result = evaluate_folder(Path(args.model_dir), Path(args.labelled), name=args.name,
                             labels_csv=Path(args.labels) if args.labels else None, split=args.split,
                             device=args.device)
    print(f"evaluated on {result['labelled']}: {result['n']} images, accuracy {result['accuracy']:.3f}, "
          f"macro F1 {result['macro_f1']:.3f}")
    for name, row in result["per_class"].items():
        print(f"  {name}: recall {row['recall']:.3f}, precision {row['precision']:.3f} ({row['support']} images)")
    for attribute, entry in result["per_group"].items():
        groups = ", ".join(f"{g} {r['accuracy']:.3f} (n={r['n']})" for g, r in entry["groups"].items())
        print(f"  accuracy by {attribute}: {groups}")
    matrix = result["confusion_matrix"]
    print("  confusion (rows true, columns predicted): "
          + "; ".join(f"{c}: {row}" for c, row in zip(matrix["labels"], matrix["matrix"])))
    print(f"stored: {result['probabilities'].removesuffix('.csv')}.json and .csv; 'faceset apply' will use it")
    return 0
