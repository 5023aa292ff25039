"""`faceset hydrate SHARED_MANIFEST OUT_DIR`: rebuild a shared dataset's image folders."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "hydrate",
        help="download the images of a shared manifest again, verify them and rebuild the split folders",
        description="Rebuild a dataset shared as manifest_share.csv (URLs, sha256, labels, splits, no images): "
                    "each image is downloaded again, one request at a time with a pause per host, kept only if "
                    "its sha256 matches, cropped to the recorded face, and laid out as splits/<split>/<class>/. "
                    "Images that are gone or have changed are listed at the end and in OUT_DIR/hydrate_report.json. "
                    "Running it again only downloads what is missing. The manifest is treated as untrusted: only "
                    "http(s) URLs on public addresses are requested (redirects included), and every file stays "
                    "inside OUT_DIR.",
    )
    parser.add_argument("manifest", metavar="SHARED_MANIFEST", help="manifest_share.csv of a built dataset")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to rebuild the dataset in")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds between requests to one host (default 1)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds one image may take to download, in all (default 30)")
    parser.add_argument("--allow-private-hosts", metavar="HOST", action="append", default=[],
                        help="a host, address or network (10.1.0.0/16) on your own network that the manifest's URLs "
                             "may reach; repeat for more (default: none, only public addresses)")
    parser.add_argument("--contact", default=None, help="e-mail put in the User-Agent (default: the dataset's contact)")
    parser.add_argument("--no-crop", dest="crop", action="store_false",
                        help="keep whole images instead of cutting the recorded face")
    return parser


def main(args: argparse.Namespace) -> int:
    from tasks.core.paths import HYDRATE_REPORT
    from tasks.core.text import terminal
    from tasks.export.hydrate import hydrate

    report = hydrate(args.manifest, args.out_dir, crop=args.crop, delay=args.delay, timeout=args.timeout,
                     contact=args.contact, allow_private_hosts=tuple(args.allow_private_hosts))
    print(f"{report['ok']} of {report['rows']} images in place under {args.out_dir} "
          f"({report['downloaded']} downloaded now)")
    for column, why in report["refused_folders"].items():
        print(terminal(f"  {column}: not rebuilt: {why}"))
    for kind in ("gone", "hash_mismatch", "failed", "refused"):
        if report[kind]:
            print(f"  {kind.replace('_', ' ')}: {report[kind]}")
    for item, problem in list(report["problems"].items())[:20]:
        print(terminal(f"    {item}: {problem['status']} ({problem['why']}) {problem['url']}"))
    if len(report["problems"]) > 20:
        print(f"    ... and {len(report['problems']) - 20} more in {args.out_dir}/{HYDRATE_REPORT}")
    return 0
