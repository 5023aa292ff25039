"""`faceset recipe new START_URL`: a complete, commented recipe suggested from a site's start page.

It reads a handful of pages (robots.txt obeyed, the contact in the User-Agent), finds the
repeated links down to the profiles, the portrait (the image with one face, by the faces
stage's detector) and the fields, and writes a recipe that builds as it is; its comments
show what each selector read and what to check (tasks/crawl/suggest).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.atomic import write_text
from tasks.core.errors import FacesetError
from tasks.core.recipe import FacesConfig

if TYPE_CHECKING:
    from tasks.crawl.suggest.portrait import FaceCount


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("recipe", help="make a recipe: `faceset recipe new START_URL`",
                                   description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    new = actions.add_parser("new", help="suggest a complete recipe from a site's start page",
                             description=__doc__)
    new.add_argument("start_url", help="the page that lists the people (a directory, a team page)")
    new.add_argument("--out", help="where to write the recipe (default: datasets/<site>.yaml)")
    new.add_argument("--render", choices=("auto", "yes", "no"), default="auto",
                     help="read pages in headless Chromium: auto (when the rendered page shows more), yes, no")
    new.add_argument("--contact", default=os.environ.get("FACESET_CONTACT"),
                     help="your e-mail or URL, sent in the User-Agent (default: $FACESET_CONTACT); required")
    new.add_argument("--name", help="the dataset's name (default: from the site's host)")
    new.add_argument("--pages", type=int, default=15, help="pages read at most (default 15)")
    new.add_argument("--delay", type=float, default=1.0, help="seconds between requests, here and in the recipe's crawl: (default 1)")
    new.add_argument("--force", action="store_true", help="overwrite --out when it exists")
    return parser


def face_count(config: FacesConfig) -> "FaceCount":
    """Faces in an image's bytes, as the faces stage decodes and detects them (YuNet). Made here and
    passed in, so the crawl stage's code (and its cache key) does not include the detector."""
    from tasks.crawl.suggest.portrait import Faces
    from tasks.vision.decode import decode_bytes
    from tasks.vision.detector import default_detector, find_faces

    detector = default_detector(config.min_score)

    def count(data: bytes) -> Faces:
        decoded = decode_bytes(data, config)
        if not decoded.ok:
            return Faces(0, why=decoded.reason or "not an image")
        found = find_faces(decoded.rgb, config, detector)
        largest = max((int(min(row[2], row[3])) for row in found), default=0)
        return Faces(len(found), largest, "" if len(found) else "no face")

    return count


def main(args: argparse.Namespace) -> int:
    from tasks.crawl.suggest import suggest
    from tasks.crawl.suggest.writer import dataset_name

    if not args.contact or len(args.contact.strip()) < 3:
        raise FacesetError("recipe new needs a contact: sites see it in the crawler's User-Agent",
                           "pass --contact you@example.org (or set FACESET_CONTACT)")
    name = args.name or dataset_name(args.start_url)
    out = Path(args.out or f"datasets/{name}.yaml")
    if out.exists() and not args.force:
        raise FacesetError(f"{out} exists already", "pass --out with another path, or --force to overwrite it")
    found = suggest(args.start_url, args.contact, face_count(FacesConfig()), args.render, name, delay=args.delay,
                    pages=args.pages)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, found.text)
    plan = found.plan
    print(f"wrote {out}: {len(plan.steps)} follow step(s), image {plan.image!r}, "
          f"fields {', '.join(f.name for f in plan.fields)} ({len(found.pages)} pages read in {found.seconds:.1f} s)")
    print(f"next: check the comments in {out}, then `faceset preview {out}` and `faceset build {out}`",
          file=sys.stderr)
    return 0
