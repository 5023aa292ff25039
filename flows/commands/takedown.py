"""`faceset takedown add URL|PAGE|NAME|IMAGE`: exclude an image from every future build.

The entry goes on `<data-root>/takedowns.json` (shared by all datasets under that data
root unless `--dataset` limits it) and is applied at once to the datasets already built
there: their manifests mark the matches `excluded` (reason `takedown`) and every derived
file is deleted. `faceset takedown list` shows the list.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from tasks.core.errors import FacesetError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "takedown",
        help="exclude an image (by URL, page, name or image file) from every future build",
        description="Keep a list of images people asked to have removed. 'add' takes an image URL, the URL of the "
                    "page it was on, a person's name, or an image file (matched by perceptual hash, also mirrored); "
                    "matching images are removed from the datasets already built and excluded from every later build.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="put an image, page, name or image file on the takedown list")
    add.add_argument("key", metavar="URL|PAGE|NAME|IMAGE", help="an image or page URL, a name, or an image file")
    add.add_argument("--data-root", default="data", metavar="DIR|s3://bucket/prefix",
                     help="the data root whose datasets it applies to (default: data)")
    add.add_argument("--dataset", default=None, metavar="NAME", help="apply to this dataset only (default: all)")
    add.add_argument("--kind", choices=["auto", "url", "name", "image"], default="auto",
                     help="what KEY is (default: an image if it is a file, a URL if it looks like one, else a name)")
    add.add_argument("--note", default="", help="why, or who asked (kept in the list)")
    show = actions.add_parser("list", help="show the takedown list")
    show.add_argument("--data-root", default="data", metavar="DIR|s3://bucket/prefix")
    return parser


def _s3_list(data_root: str) -> tuple[Path, object, str, str, str | None]:
    """Fetch the S3 data root's list into the local mirror of that data root (where builds
    on this machine read it): (mirror folder, client, bucket, key, the list's ETag or None)."""
    from botocore.exceptions import ClientError

    from tasks.core.atomic import atomic_write
    from tasks.core.paths import TAKEDOWNS
    from tasks.core.storage import default_mirror_base, parse_s3_url, s3_client

    bucket, prefix = parse_s3_url(data_root)
    client = s3_client()
    folder = default_mirror_base() / bucket / prefix
    folder.mkdir(parents=True, exist_ok=True)
    key = f"{prefix}{TAKEDOWNS}"
    try:
        got = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:  # a missing list is an empty list; anything else is reported
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise FacesetError(f"cannot read s3://{bucket}/{key}: {exc}", "check the credentials and the bucket") from exc
        return folder, client, bucket, key, None
    body = got["Body"].read()
    atomic_write(folder / TAKEDOWNS, lambda tmp: Path(tmp).write_bytes(body))
    return folder, client, bucket, key, got["ETag"]


def _s3_put(client, bucket: str, key: str, path: Path, etag: str | None) -> bool:
    """Upload the list unless someone changed it in the bucket since it was read (a conditional
    put); False then, so the caller reads it again instead of overwriting their entry."""
    from botocore.exceptions import ClientError

    from tasks.core.locks import refused

    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType="application/json", **condition)
    except ClientError as exc:
        if refused(exc):
            return False
        raise FacesetError(f"cannot write s3://{bucket}/{key}: {exc}", "check the credentials and the bucket") from exc
    return True


def _add_on_s3(args: argparse.Namespace, attempts: int = 5) -> int:
    """Add the entry to the bucket's list, reading it again when another machine changed it meanwhile."""
    from tasks.core import takedown

    for _ in range(attempts):
        root, client, bucket, key, etag = _s3_list(str(args.data_root))
        entry, added = takedown.add(root, takedown.make_entry(args.key, args.kind, args.dataset, args.note))
        if not added or _s3_put(client, bucket, key, takedown.list_path(root), etag):
            print(f"{'added' if added else 'already on the list'}: {entry.kind} {entry.given} "
                  f"({entry.dataset or 'every dataset'} under {args.data_root})")
            print("the datasets there exclude it at their next build, or before a running build ends")
            return 0
    raise FacesetError(f"the takedown list in {args.data_root} kept changing while this command ran",
                       "run the same command again")


def apply_to_built(data_root: Path, dataset: str | None) -> list[tuple[str, int]]:
    """Apply the list to every dataset already built under `data_root`: (name, images removed).

    Each dataset is changed under its build lock: while a build of it runs, this waits for
    it (that build applies the new entry itself before it finishes, see flows/build.py), so
    a build never writes back a manifest that still holds the person.
    """
    from tasks.core import locks
    from tasks.core import manifest as mf
    from tasks.core import takedown
    from tasks.core.paths import DatasetPaths
    from tasks.core.reasons import TAKEDOWN

    done = []
    for folder in sorted(p for p in data_root.iterdir() if p.is_dir()) if data_root.is_dir() else []:
        paths = DatasetPaths(folder.resolve())
        if not paths.manifest.is_file() or (dataset and folder.name != dataset):
            continue
        waiting = functools.partial(print, f"  {folder.name}: a build is running; waiting for it to finish "
                                           "(it removes the image itself before it ends)", flush=True)
        with locks.build_lock(paths, waiting):
            frame = mf.read(paths.manifest)
            before = int(((frame["status"] == mf.EXCLUDED) & (frame["reason"] == TAKEDOWN)).sum())
            out = takedown.apply(frame, paths)
            after = int(((out["status"] == mf.EXCLUDED) & (out["reason"] == TAKEDOWN)).sum())
            if after != before:
                mf.write(out, paths.manifest)
        done.append((folder.name, after - before))
    return done


def main(args: argparse.Namespace) -> int:
    from tasks.core import takedown

    remote = str(args.data_root).startswith("s3://")
    if remote and args.action == "add":
        return _add_on_s3(args)
    root = _s3_list(str(args.data_root))[0] if remote else Path(args.data_root)
    if args.action == "list":
        for entry in takedown.load(root):
            scope = entry.dataset or "all datasets"
            print(f"{entry.added_at}  {entry.kind:5}  {entry.given}  ({scope}){'  ' + entry.note if entry.note else ''}")
        return 0
    entry, added = takedown.add(root, takedown.make_entry(args.key, args.kind, args.dataset, args.note))
    print(f"{'added' if added else 'already on the list'}: {entry.kind} {entry.given} "
          f"({entry.dataset or 'every dataset'} under {args.data_root})")
    for name, removed in apply_to_built(root, args.dataset):
        print(f"  {name}: {removed} image{'s' if removed != 1 else ''} removed now")
    return 0
