"""`faceset labels import DATASET_DIR FILE.csv`: add a labeller's hand labels to a built dataset as gold.

Gold labels are what the validation tables (reports/validation.json, report.html) score
the crawled labels, the autotagger and the cross-check's flags against (docs/validation.md).
Rows are matched to faces by `item_id`, `sha256`, `page_url` or image file name; rows
that match no face (or several) are listed and nothing is stored for them. The labels
are appended to `<dataset>/gold.csv`; the next `faceset build` re-runs the cross-check
on and writes the tables, without crawling or tagging again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from tasks.core.errors import FacesetError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "labels", help="import hand labels (gold) into a built dataset",
        description="Gold labels: faces labelled by hand, against which crawled labels, autotaggers and flags are "
                    "scored (docs/validation.md).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("import", help="append the labels of a CSV file to <dataset>/gold.csv")
    add.add_argument("dataset", metavar="DATASET_DIR", help="a built dataset (the folder holding manifest.parquet)")
    add.add_argument("file", metavar="FILE.csv", help="one row per face: item_id, sha256, page_url or file, then one "
                     "column per field (or 'field' and 'value' columns); optional 'labeller' and 'labelled_at'")
    add.add_argument("--labeller", default=None, help="who labelled (default: the file's name); a 'labeller' column wins")
    return parser


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FacesetError(f"no such file: {path}", "give the path of a CSV file of labels")
    try:
        return pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise FacesetError(f"{path} is not a readable CSV file: {exc}",
                           "save it as CSV (UTF-8, comma-separated, a header row naming the columns)") from exc


def main(args: argparse.Namespace) -> int:
    from tasks.core import gold
    from tasks.core import manifest as mf
    from tasks.core.paths import DatasetPaths
    from tasks.core.decisions import manifest_fields
    from tasks.core.text import terminal

    paths = DatasetPaths(Path(args.dataset).resolve())
    if not paths.manifest.is_file():
        raise FacesetError(f"{args.dataset} has no manifest.parquet", "give the folder of a dataset `faceset build` made")
    source = Path(args.file)
    table = _read(source)
    manifest = mf.read(paths.manifest)
    fields = sorted(manifest_fields(manifest))
    result = gold.import_table(table, manifest, fields, labeller=args.labeller or source.stem, source=f"import {source.name}")
    if len(result.labels):
        gold.append(paths, result.labels)
    faces = result.labels["item_id"].nunique()
    print(f"added {len(result.labels)} gold labels on {faces} faces to {gold.gold_path(paths)}"
          + (" (matched by " + ", ".join(f"{k}: {n}" for k, n in result.matched_by.items()) + ")" if result.matched_by else ""))
    if result.unmatched:
        print(f"{len(result.unmatched)} rows not used:")
        for entry in result.unmatched:
            print(terminal(f"  line {entry['line']}: {entry['reason']}" + (f"  {entry['row']}" if entry["row"] else "")))
    print("run `faceset build` again to write the validation tables (reports/validation.json); nothing is crawled again")
    return 0 if len(result.labels) or not len(table) else 1
