"""`faceset preview RECIPE [--pages N]`: what each selector reads on a few pages, as preview.html.

Per follow step the links matched on each page read, per item page the image (with the
faces found in it) and every field's raw text, regex, map and parsed value, and why
anything matched nothing (tasks/crawl/preview.py). Nothing is stored but the page.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks.core.recipe import load_recipe


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("preview", help="show what a recipe reads on a few pages (preview.html)",
                                   description=__doc__)
    parser.add_argument("recipe", help="the recipe file")
    parser.add_argument("--pages", type=int, default=3, help="pages read per step and source (default 3)")
    parser.add_argument("--out", default="preview.html", help="where to write the page (default preview.html)")
    return parser


def main(args: argparse.Namespace) -> int:
    from flows.commands.recipe import face_count
    from tasks.core.recipe import FacesConfig
    from tasks.crawl.preview import preview

    recipe = load_recipe(args.recipe)
    sources = preview(recipe, Path(args.out), face_count(recipe.faces or FacesConfig()), pages=max(1, args.pages))
    items = sum(len(s.items) for s in sources)
    with_face = sum(item.faces == 1 for s in sources for item in s.items)
    print(f"wrote {args.out}: {items} items read, {with_face} with one face; open it in a browser")
    return 0
