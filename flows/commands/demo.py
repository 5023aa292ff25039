"""`faceset demo`: the whole pipeline, end to end, on a local demo website.

It needs no setup beyond the install: it serves profile pages built from a folder of
labelled face photos on 127.0.0.1, writes a recipe for them, runs `faceset build` with
the embedded defaults (Prefect's temporary local server, local disk, the local
autotagger) and prints where the dataset, the report and the model are.

`--study` runs another of the users' studies (docs/studies.md) on the same site:
`athletes` (variants, Table 1, the alpha grid) and `validation` (gold labels, the
validation tables, the ResNet-18 grid) in flows/demo_studies.py, `search` in
flows/demo_search.py.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from flows.commands.build import quiet_prefect
from flows.demo_site import DemoServer, build_site, recipe_text
from flows.demo_studies import WRONG_GENDER, on_site
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
    parser.add_argument("--limit", type=int, default=None,
                        help="number of profiles on the demo site (default 300; 150 for --study validation, whose "
                             "ResNet-18 grid trains twelve models)")
    parser.add_argument("--data-root", default="data", help="where datasets are written (default ./data)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="fine-tuning epochs (default 10: the head trains on cached features; 3 for --study "
                             "validation, whose grid trains ResNet-18's last block twelve times)")
    parser.add_argument("--port", type=int, default=8765, help="port of the demo site on 127.0.0.1 (default 8765; "
                        "a stable port keeps item ids and caches valid across runs)")
    parser.add_argument("--rebuild", action="store_true", help="ignore cached stages")
    parser.add_argument("--serve", action="store_true",
                        help="only serve the demo site until Ctrl-C (to try 'faceset recipe new', 'preview' and "
                             "'build' on it step by step, as docs/first-dataset.md does)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Prefect's own log lines and full tracebacks")
    parser.add_argument("--study", choices=("staff", "athletes", "validation", "search"), default="staff",
                        help="'staff' (default): build a dataset from a demo staff directory; 'athletes': the "
                             "original, biased (women 16-35, men 40-70) and balanced variants, unlearning of age over "
                             "alphas, a model trained on the biased variant and both evaluated on the balanced one; "
                             "'validation': the local autotagger's cross-check scored against gold labels of a "
                             "validation sample, and the ResNet-18 grid; 'search': group photos "
                             "per search query with known shares of women, a small model, 'faceset evaluate' and "
                             "'faceset apply --faces each', naive and adjusted shares printed beside the truth "
                             "(docs/studies.md)")
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


def finish(started: float, places: dict[str, Path], next_step: str) -> None:
    """The closing lines of every study: how long it took, where to look, what to try next."""
    print(f"\ndemo finished in {(time.monotonic() - started) / 60:.1f} min")
    width = max(len(name) for name in places) + 1
    for name, place in places.items():
        print(f"  {name + ':':<{width}} {place}")
    print(next_step)


def _share(value: float | None, n: int) -> str:
    return f"{'-':>6}  (n={n})" if value is None else f"{value:6.3f}  (n={n})"


def athletes_study(args: argparse.Namespace, site, started: float) -> int:
    """`--study athletes` (flows/demo_studies.py): Table 1 and the alpha grid."""
    from flows.demo_studies import PAIRS, athletes_study as run

    result = run(site, Path(args.data_root).resolve(), port=args.port, epochs=args.epochs, rebuild=args.rebuild)
    variants = (result["split"] or {}).get("variants", {})
    biased = variants.get("biased", {})
    print(f"\nvariants: original {variants.get('original', {}).get('counts', '')}")
    print(f"  biased (women {PAIRS['female'][0]}-{PAIRS['female'][1]}, men {PAIRS['male'][0]}-{PAIRS['male'][1]}, "
          f"strength {biased.get('strength')}): share of each class in its age range {biased.get('aligned_share')}")
    print(f"  balanced (as many women as men in each age bin): {variants.get('balanced', {}).get('per_cell')}")
    table = result["table"]
    n = table["original"]["n"]
    print(f"\nTable 1: gender accuracy on the balanced variant's test split ({n} faces); demo settings "
          f"(frozen Lite0, {args.epochs} epochs, a 2-point grid, {args.limit} profiles), not the paper's")
    print(f"  {'trained on':<14} {'train faces':>11}  {'balanced test':>17}  {'against the bias':>17}  "
          f"{'unseen in training':>19}")
    for name, row in table.items():
        print(f"  {name:<14} {row['train_images']:>11}  {_share(row['accuracy'], row['n']):>17}  "
              f"{_share(row['against_bias']['accuracy'], row['against_bias']['n']):>17}  "
              f"{_share(row['unseen']['accuracy'], row['unseen']['n']):>19}")
    print("  against the bias: women 40-70 and men 16-35; unseen: faces in neither train/ nor val/ of the model "
          "(the variants are drawn from one pool)")
    unlearn = result["unlearn"] or {}
    print(f"\nalpha grid (unlearning {unlearn.get('attribute')} from the original model's embedding; probe accuracy of "
          f"the age bins on {unlearn.get('evaluated_on')}, majority baseline {unlearn.get('probe_majority_baseline', 0):.3f}):")
    print(f"  {'alpha':>6} {'age probe':>10} {'gender accuracy':>16}")
    for row in unlearn.get("alpha_grid", []):
        print(f"  {row['alpha']:>6g} {row['probe_accuracy']:>10.3f} {row['target_accuracy']:>16.3f}")
    paths = result["paths"]
    finish(started, {"dataset": result["dataset"], "recipe": result["recipe"], "report": paths.report_html,
                     "variants": paths.variants, **{f"evaluation ({name})": row["evaluation"] for name, row in table.items()},
                     "unlearn": paths.models / "unlearn"},
           f"next: apply an unlearned model with `faceset apply {paths.models / 'unlearn'}/alpha_1 IMAGES...`")
    return 0


def validation_study(args: argparse.Namespace, site, started: float) -> int:
    """`--study validation` (flows/demo_studies.py): the validation table and the ResNet-18 grid."""
    from flows.demo_studies import validation_study as run

    result = run(site, Path(args.data_root).resolve(), port=args.port, epochs=args.epochs, rebuild=args.rebuild)
    validation = result["validation"] or {}
    print(f"\nvalidation against {validation.get('gold_faces')} gold faces (the corpus's own labels, standing in "
          f"for a labeller; {result['planted']} profiles on the site state the wrong gender)")
    for field, report in validation.get("fields", {}).items():
        for source, figures in report["sources"].items():
            if "confusion" in figures:
                print(f"  {field}, {source}: accuracy {figures['accuracy']:.3f} (n={figures['n']}); confusion "
                      "(rows gold, columns said): " + "; ".join(f"{g}: {row}" for g, row in figures["confusion"].items()))
                for name, c in figures["classes"].items():
                    print(f"    {name}: precision {c['precision']}, recall {c['recall']} (support {c['support']})")
            elif "mae" in figures:
                print(f"  {field}, {source}: mean absolute error {figures['mae']} years, within {figures['margin']:g} "
                      f"years {figures['within_margin']} (n={figures['n']})")
        flags = report.get("flags")
        if flags:
            print(f"  {field}, the cross-check's flags: {flags['flagged']} flagged, {flags['errors']} crawled errors; "
                  f"precision {flags['precision']}, recall {flags['recall']}")
    finetune = result["finetune"] or {}
    grid = finetune.get("grid", {})
    print(f"\nResNet-18 grid ({len(grid.get('points', []))} points; weights: none, freeze: last, 96 px: ImageNet "
          "weights need the internet, so offline the network starts from random weights and only its last block "
          "and head train)")
    for point in grid.get("points", []):
        print(f"  lr {point['lr']:<6g} momentum {point['momentum']:<4g} batch size {point['batch_size']:<3g} "
              f"val accuracy {point['val_acc']:.3f} ({point['seconds']:.0f} s)")
    test = finetune.get("test") or {}
    if test:
        chosen = grid.get("chosen") or {}
        print(f"  chosen: lr {chosen.get('lr')}, momentum {chosen.get('momentum')}, batch size "
              f"{chosen.get('batch_size')}; {test.get('evaluated_on')} accuracy {test.get('accuracy', 0):.3f} "
              f"({test.get('n')} faces)")
    paths = result["paths"]
    finish(started, {"dataset": result["dataset"], "recipe": result["recipe"], "gold": result["gold_csv"],
                     "validation": paths.report_json("validation"), "report": paths.report_html,
                     "grid": paths.models / "grid.csv", "metrics": result["metrics"]},
           f"next: decide flagged faces with `faceset review {result['dataset']}`; the next build honours them")
    return 0


def main(args: argparse.Namespace) -> int:
    quiet_prefect(args.verbose)
    if args.study == "search":
        args.epochs = args.epochs or 10
        return search_study(args)
    images = find_demo_images(args.images)
    started = time.monotonic()
    wrong = WRONG_GENDER if args.study == "validation" else 0.0
    args.limit = args.limit or (150 if args.study == "validation" else 300)
    args.epochs = args.epochs or (3 if args.study == "validation" else 10)
    site = build_site(images, limit=args.limit, wrong_gender=wrong, distinct_names=args.study != "staff")
    print(f"demo: {len(site.profiles)} profiles built from {images}")
    if args.serve:
        return serve_only(site, args.port)
    if args.study == "athletes":
        return athletes_study(args, site, started)
    if args.study == "validation":
        return validation_study(args, site, started)
    from flows.build import build  # imported late: Prefect is slow to import

    data_root = Path(args.data_root).resolve()
    recipe_path = data_root / "recipes" / "demo-staff.yaml"
    with on_site(site, args.port, recipe_path, lambda url: recipe_text(site, url, epochs=args.epochs)):
        dataset = build(recipe_path, data_root=str(data_root), rebuild=args.rebuild)
    paths = DatasetPaths(dataset)
    finish(started, {"dataset": dataset, "manifest": paths.manifest_csv, "report": paths.report_html,
                     "card": paths.card, "model": paths.models},
           f"next: judge its faces in the browser with `faceset review {dataset}`, or try the other studies "
           "with `faceset demo --study athletes|validation|search` (docs/studies.md)")
    return 0
