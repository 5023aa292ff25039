"""`faceset review DATASET_DIR`: review a built dataset's faces, and bring decisions in and out.

Without options it serves the review app (tasks/review/) on 127.0.0.1; every decision
goes to `<dataset>/decisions.csv`, which the next `faceset build` honours. `--import FILE`
adds a decisions CSV or a Label Studio JSON export to that file, `--export-label-studio
FILE.json` writes Label Studio tasks; both print what they did and exit (docs/review.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks.core.errors import FacesetError

SHOWN = 20  # problems printed; the rest are counted


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "review",
        help="review a built dataset's faces in the browser; import or export review decisions",
        description="Serve a local web app over a built dataset: decide keep, drop, relabel, not a face or "
                    "same/different person; decisions go to DATASET_DIR/decisions.csv and the next build honours "
                    "them. --import and --export-label-studio exchange decisions with other tools and exit.",
    )
    parser.add_argument("dataset_dir", metavar="DATASET_DIR", type=Path, help="a built dataset (data/<name>)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (default: 8765)")
    parser.add_argument("--sample", type=int, default=None, metavar="N", help="draw a random validation sample of N faces")
    parser.add_argument("--stratify", default=None, metavar="FIELD", help="draw the sample stratified by FIELD")
    exchange = parser.add_mutually_exclusive_group()
    exchange.add_argument("--import", dest="import_file", type=Path, default=None, metavar="FILE",
                          help="add the decisions of FILE (a decisions CSV or a Label Studio JSON export), then exit")
    exchange.add_argument("--export-label-studio", dest="export_file", type=Path, default=None, metavar="FILE.json",
                          help="write Label Studio tasks (crawled labels, the autotagger's opinion as predictions), "
                               "then exit")
    parser.add_argument("--image-root", default=None, metavar="URL",
                        help="with --export-label-studio: the images are URL/<face crop path> (default: the original "
                             "image URLs)")
    return parser


def _listed(title: str, lines: list[str]) -> None:
    from tasks.core.text import terminal

    if not lines:
        return
    print(f"{title} ({len(lines)}):")
    for line in lines[:SHOWN]:
        print(terminal(f"  {line}"))
    if len(lines) > SHOWN:
        print(f"  ... and {len(lines) - SHOWN} more")


def main(args: argparse.Namespace) -> int:
    from tasks.core import decisions

    folder: Path = args.dataset_dir
    if not (folder / "manifest.parquet").is_file():
        raise FacesetError(f"{folder} is not a built dataset (it has no manifest.parquet)",
                           "give the dataset's folder, e.g. data/<recipe name>, after faceset build")
    if args.import_file is not None:
        result = decisions.import_file(folder, args.import_file)
        print(f"{args.import_file}: {result.added} decision{'s' if result.added != 1 else ''} added to "
              f"{decisions.path_of(folder)} ({result.source}); {result.already} already there")
        _listed("not added, fix and import again", result.problems)
        _listed("added, but the build cannot honour them as they are", result.warnings)
        return 1 if result.problems and not result.added else 0
    if args.export_file is not None:
        count = decisions.export_label_studio(folder, args.export_file, image_root=args.image_root)
        print(f"{count} Label Studio tasks written to {args.export_file}; labelling interface in "
              f"{decisions.config_path(args.export_file)}")
        return 0
    from tasks.review.app import serve

    serve(folder, args.host, args.port, args.sample, args.stratify)
    return 0
