"""`faceset demo`: the whole pipeline, end to end, on a local demo website.

It needs no setup beyond the install: it serves profile pages built from a folder of
labelled face photos on 127.0.0.1, writes a recipe for them, runs `faceset build` with
the embedded defaults (Prefect's temporary local server, local disk, the local
autotagger) and prints where the dataset, the report and the model are.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from flows.commands.build import quiet_prefect
from flows.demo_site import DemoServer, build_site, recipe_text
from tasks.core.atomic import write_text
from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths

REPO = Path(__file__).resolve().parents[2]


def find_demo_images(explicit: str | None) -> Path:
    """The --images folder, else the shared UTKFace corpus beside the repository."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise FacesetError(f"--images {explicit}: no such folder", "give a folder of face photos with a labels.csv")
        return path
    candidates = [os.environ.get("FACESET_DEMO_IMAGES"), REPO.parent / "shared" / "corpus" / "utkface",
                  Path.cwd().parent / "shared" / "corpus" / "utkface"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise FacesetError(
        "no demo photos found: the demo looks for ../shared/corpus/utkface beside the repository",
        "pass --images DIR, a folder of face photos with a labels.csv (a 'file' column and one column per label)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help="run the whole pipeline on a local demo website",
                                   description=__doc__)
    parser.add_argument("--images", help="folder of labelled face photos with a labels.csv (default: the UTKFace corpus)")
    parser.add_argument("--limit", type=int, default=300, help="number of profiles on the demo site (default 300)")
    parser.add_argument("--data-root", default="data", help="where datasets are written (default ./data)")
    parser.add_argument("--epochs", type=int, default=10,
                        help="fine-tuning epochs (default 10: the head trains on cached features)")
    parser.add_argument("--port", type=int, default=8765, help="port of the demo site on 127.0.0.1 (default 8765; "
                        "a stable port keeps item ids and caches valid across runs)")
    parser.add_argument("--rebuild", action="store_true", help="ignore cached stages")
    parser.add_argument("--serve", action="store_true",
                        help="only serve the demo site until Ctrl-C (to try 'faceset recipe new', 'preview' and "
                             "'build' on it step by step, as docs/first-dataset.md does)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Prefect's own log lines and full tracebacks")
    parser.add_argument("--study", choices=("staff", "search"), default="staff",
                        help="'staff' (default): build a dataset from a demo staff directory; 'search': group photos "
                             "per search query with known shares of women, a small model, 'faceset evaluate' and "
                             "'faceset apply --faces each', naive and adjusted shares printed beside the truth")
    return parser


def search_study(args: argparse.Namespace) -> int:
    """`--study search` (flows/demo_search.py): the shares of women per query, naive and adjusted, beside the truth."""
    from flows.demo_search import run_study

    images = find_demo_images(args.images)
    out = Path(args.data_root).resolve() / "demo-search"
    started = time.monotonic()
    result = run_study(images, out, epochs=args.epochs)
    table = result["table"]
    print(f"\nshare of women per query ({(time.monotonic() - started) / 60:.1f} min); {result['note']}")
    print(f"  {'query':<16} {'truth':>6} {'naive':>6} {'adjusted':>9}  95% interval   faces")
    for query, row in table.iterrows():
        print(f"  {query:<16} {row['truth']:6.1%} {row['naive']:6.1%} {row['adjusted']:9.1%}  "
              f"{row['low']:5.1%} to {row['high']:5.1%}  {int(row['faces'])}")
    naive, adjusted = (table["naive"] - table["truth"]).abs().mean(), (table["adjusted"] - table["truth"]).abs().mean()
    print(f"  mean absolute error: naive {naive:.1%}, adjusted {adjusted:.1%}")
    print(f"  shares: {result['files']['html']}")
    return 0


def serve_only(site, port: int) -> int:
    """`--serve`: the demo site alone, until Ctrl-C or SIGTERM (the CLI turns both into KeyboardInterrupt)."""
    with DemoServer(site, port=port) as server:
        print(f"demo: site on {server.url} (Ctrl-C stops it)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("demo: site stopped")
    return 0


def main(args: argparse.Namespace) -> int:
    quiet_prefect(args.verbose)
    if args.study == "search":
        return search_study(args)
    images = find_demo_images(args.images)
    started = time.monotonic()
    site = build_site(images, limit=args.limit)
    print(f"demo: {len(site.profiles)} profiles built from {images}")
    if args.serve:
        return serve_only(site, args.port)
    from flows.build import build  # imported late: Prefect is slow to import

    data_root = Path(args.data_root).resolve()
    recipe_path = data_root / "recipes" / "demo-staff.yaml"
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = DemoServer(site, port=args.port)
    except OSError:
        print(f"demo: port {args.port} is taken, using a free port (caches from earlier runs will not apply)")
        server = DemoServer(site)
    with server:
        write_text(recipe_path, recipe_text(site, server.url, epochs=args.epochs))
        print(f"demo: site on {server.url}, recipe {recipe_path}")
        dataset = build(recipe_path, data_root=str(data_root), rebuild=args.rebuild)
    minutes = (time.monotonic() - started) / 60
    print(f"\ndemo finished in {minutes:.1f} min")
    paths = DatasetPaths(dataset)
    print(f"  dataset:  {dataset}")
    print(f"  manifest: {paths.manifest_csv}")
    print(f"  report:   {paths.report_html}")
    print(f"  card:     {paths.card}")
    print(f"  model:    {paths.models}")
    print(f"next: judge its faces in the browser with `faceset review {dataset}`, or try the shares study "
          "with `faceset demo --study search`")
    return 0
