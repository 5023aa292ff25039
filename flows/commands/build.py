"""`faceset build RECIPE`: run the build flow of one recipe, with progress bars per stage."""

from __future__ import annotations

import argparse
import os
import sys

from tasks.core.recipe import STAGES


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "build",
        help="build the dataset of a recipe (cached: an unchanged re-run does nothing, a killed run resumes)",
        description="Run every stage of a recipe as one Prefect flow. Stages whose code, recipe section and "
                    "input are unchanged are reused; run the same command again after a crash to resume.",
    )
    parser.add_argument("recipe", help="the recipe file, e.g. datasets/staff-majors.yaml")
    parser.add_argument("--data-root", default="data", metavar="DIR|s3://bucket/prefix",
                        help="where datasets live (default: data); the dataset goes to <data-root>/<name>/")
    parser.add_argument("--rebuild", action="store_true", help="ignore every cache and run every stage again")
    parser.add_argument("--from", dest="from_stage", choices=STAGES, metavar="STAGE",
                        help=f"run again from this stage on, ignoring its cache and those after it ({', '.join(STAGES)})")
    parser.add_argument("--recrawl", action="store_true",
                        help="crawl the sites again for new images; later stages only process what changed")
    parser.add_argument("--runner", choices=("default", "dask"), default="default",
                        help="where per-image batches run: local processes (default) or a Dask cluster")
    parser.add_argument("--dask-address", metavar="ADDR",
                        help="address of an existing Dask scheduler (tcp://host:8786); default: a local cluster")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the stages up to dedupe, then print what the cross-check would cost")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Prefect's log lines")
    return parser


def main(args: argparse.Namespace) -> int:
    # Prefect reads its settings at import: keep its temporary server and logs quiet unless asked.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not args.verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "WARNING")

    from flows import progress
    from flows.build import build
    from tasks.core.paths import DatasetPaths
    from tasks.core.recipe import STAGES as order

    bars = progress.TerminalProgress(list(order)) if sys.stderr.isatty() else progress.Progress()
    with progress.showing(bars):
        root = build(args.recipe, data_root=args.data_root, rebuild=args.rebuild, from_stage=args.from_stage,
                     runner=args.runner, dask_address=args.dask_address, recrawl=args.recrawl, dry_run=args.dry_run)
    paths = DatasetPaths(root)
    print(f"dataset: {root}")
    print(f"manifest: {paths.manifest}")
    if paths.report_html.is_file():
        print(f"report: {paths.report_html}")
    if str(args.data_root).startswith("s3://"):
        print(f"uploaded to: {str(args.data_root).rstrip('/')}/{root.name}/")
    return 0
