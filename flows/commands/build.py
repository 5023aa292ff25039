"""`faceset build RECIPE`: run the build flow of one recipe, with a readable console.

The console shows what a person needs: the recipe's warnings, a line per stage as it
starts and ends (flows/progress.py), and a closing summary (kept, flagged, quarantined,
where the report is, what the crawl diagnosis asks to check). Prefect's own log lines go
to the Prefect UI, and to the console only with `-v`; errors are one message with what
to do, and their traceback only with `-v` (flows/cli.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tasks.core.recipe import STAGES

SUMMARY_CHECKS = 5  # crawl diagnosis lines repeated in the closing summary


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
    parser.add_argument("--until", choices=STAGES, metavar="STAGE",
                        help="stop after this stage (e.g. --until crawl to try a recipe's selectors)")
    parser.add_argument("--recrawl", action="store_true",
                        help="crawl the sites again for new images; later stages only process what changed")
    parser.add_argument("--runner", choices=("default", "dask"), default="default",
                        help="where per-image batches run: local processes (default) or a Dask cluster")
    parser.add_argument("--dask-address", metavar="ADDR",
                        help="address of an existing Dask scheduler (tcp://host:8786); default: a local cluster")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the stages up to dedupe, then print what the cross-check would cost")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Prefect's log lines, and the traceback of an error")
    return parser


def quiet_prefect(verbose: bool) -> None:
    """Prefect reads its settings at import: its console handler only shows what is critical
    unless -v. Its loggers keep their level, so the Prefect UI still gets every log line."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL", "CRITICAL")


def summary(root: Path, data_root: str, last: str) -> list[str]:
    """The closing lines: what the dataset holds, where its report is, what to check."""
    from tasks.core import manifest as mf
    from tasks.core.paths import DatasetPaths

    paths = DatasetPaths(root)
    lines = [f"dataset: {root}"]
    if paths.manifest.is_file():
        frame = mf.read(paths.manifest)
        status = frame["status"].value_counts()
        # "disagree": the cross-check's verdict on a row whose label the autotagger doubts (tasks/crosscheck)
        flagged = int((frame["crosscheck"].eq("disagree").fillna(False) & mf.kept(frame)).sum()) if "crosscheck" in frame else 0
        figures = [f"{int(status.get(mf.KEPT, 0))} kept", f"{flagged} flagged for review",
                   *(f"{int(status[s])} {s}" for s in mf.STATUSES if s != mf.KEPT and status.get(s))]
        lines.append(f"rows: {', '.join(figures)}")
        lines.append(f"manifest: {paths.manifest}")
    if last == STAGES[-1] and paths.report_html.is_file():
        lines.append(f"report: {paths.report_html}")
    elif last != STAGES[-1]:
        lines.append(f"stopped after {last} (--until); the stage reports are in {paths.root / 'reports'}")
    if str(data_root).startswith("s3://"):
        lines.append(f"uploaded to: {str(data_root).rstrip('/')}/{root.name}/")
    lines += [f"check: {line}" for line in _checks(paths)]
    return lines


def _checks(paths) -> list[str]:
    """What the crawl diagnosis and the faces stage ask the recipe author to look at."""
    found: list[str] = []
    for stage in ("crawl", "faces"):
        report = paths.report_json(stage)
        if report.is_file():
            data = json.loads(report.read_text(encoding="utf-8"))
            if stage == "crawl":
                found += data.get("diagnosis", [])[:SUMMARY_CHECKS]
            elif no_face := data.get("reasons", {}).get("no face"):
                of = f" of {data['images']}" if data.get("images") else ""
                found.append(f"{no_face}{of} images had no face the detector could find (is the item image "
                             "selector picking portraits? see the faces section of the report)")
    return found


def main(args: argparse.Namespace) -> int:
    quiet_prefect(args.verbose)

    from flows import progress
    from flows.build import Options, build
    from tasks.core.recipe import load_recipe, warnings

    for warning in warnings(load_recipe(args.recipe)):
        print(f"warning: {warning}", file=sys.stderr)
    order = Options(args.recipe, until=args.until, dry_run=args.dry_run).order
    console = progress.TerminalProgress(order) if sys.stderr.isatty() else progress.ConsoleProgress()
    with progress.showing(console):
        root = build(args.recipe, data_root=args.data_root, rebuild=args.rebuild, from_stage=args.from_stage,
                     runner=args.runner, dask_address=args.dask_address, recrawl=args.recrawl, dry_run=args.dry_run,
                     until=args.until)
    print("\n".join(summary(root, args.data_root, order[-1])))
    return 0
