"""bench_recipe_new: how much of a site the recipe `faceset recipe new` suggests reaches, unedited.

On each site shape of tests/sites/shapes.py (real UTKFace faces on 127.0.0.1), and on
two shapes the tests never use (other markup and class names: `unseen_static`, a grid of
articles with table labels; `unseen_js`, a listing built by JavaScript), it times
`recipe new`, then runs the suggested recipe as written through a real crawl (the build
flow `--until crawl`: Scrapy, Chromium where the recipe renders) and counts the people
reached and the portraits picked right (the image URL the crawl took for a person is that
person's photo). Baseline, in the same run: the same follow steps with the plain image
selector `img` (every image of the page), i.e. what a recipe without portrait detection
takes: the share of its images that are portraits.

    .venv/bin/python benchmarks/bench_recipe_new.py [--people 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from results_file import write_results  # noqa: E402
from sites import shapes  # noqa: E402
from sites.server import FixtureServer  # noqa: E402


def crawl(recipe: dict, folder: Path) -> pd.DataFrame:
    from flows.build import build

    path = folder / "recipe.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))
    root = build(path, data_root=folder / "data", until="crawl")
    return pd.read_parquet(root / ".faceset" / "stages" / "crawl.parquet")


def score(frame: pd.DataFrame, site: shapes.ShapeSite, server: FixtureServer) -> tuple[float, float, float]:
    """(share of people reached, share whose portrait was picked right, share of rows that are portraits)."""
    key = "name" if site.shape == "team" else "page_url"
    photo = {(p.name if site.shape == "team" else server.url(f"/people/{p.pid}.html")): server.url(p.photo)
             for p in site.people}
    taken: dict[str, set[str]] = {}
    for k, url in zip(frame[key], frame["image_url"]):
        taken.setdefault(k, set()).add(url)
    reached = sum(k in taken for k in photo) / len(photo)
    right = sum(taken.get(k) == {url} for k, url in photo.items()) / len(photo)
    portraits = sum(url in set(photo.values()) for url in frame["image_url"]) / max(1, len(frame))
    return reached, right, portraits


def one(shape: str, people: int, utkface: Path) -> dict:
    from flows.commands.recipe import face_count
    from tasks.core.recipe import FacesConfig
    from tasks.crawl.suggest import suggest

    site = shapes.build(shape, utkface, n=people, per_page=5)
    server = FixtureServer(site.routes).start()
    try:
        started = time.monotonic()
        found = suggest(server.url("/"), "bench@example.org", face_count(FacesConfig()), delay=0)
        seconds = time.monotonic() - started
        recipe = yaml.safe_load(found.text)
        with tempfile.TemporaryDirectory() as tmp:
            reached, right, portraits = score(crawl(recipe, Path(tmp) / "suggested"), site, server)
            recipe["sources"][0]["item"]["image"] = "img"
            b_reached, b_right, b_portraits = score(crawl(recipe, Path(tmp) / "plain"), site, server)
    finally:
        server.stop()
    return {"shape": shape, "unseen": shape in shapes.UNSEEN, "people": people, "recipe_new_s": round(seconds, 2),
            "pages_read": len(found.pages), "reached": reached, "right_portrait": right, "rows_portraits": portraits,
            "plain_img_right": b_right, "plain_img_rows_portraits": b_portraits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    utkface = Path(os.environ.get("FACESET_CORPUS", REPO.parent / "shared" / "corpus")) / "utkface"
    from prefect.testing.utilities import prefect_test_harness

    rows = []
    with prefect_test_harness(server_startup_timeout=180):
        for shape in (*shapes.SHAPES, *shapes.UNSEEN):
            rows.append(one(shape, args.people, utkface))
            r = rows[-1]
            print(f"{shape:<14} recipe new {r['recipe_new_s']:5.1f} s ({r['pages_read']} pages)  reached "
                  f"{r['reached']:6.1%}  right portrait {r['right_portrait']:6.1%}  rows that are portraits "
                  f"{r['rows_portraits']:6.1%}  | plain `img`: right {r['plain_img_right']:6.1%}, rows that are "
                  f"portraits {r['plain_img_rows_portraits']:6.1%}", flush=True)
    write_results("recipe_new", {"people_per_site": args.people, "sites": rows})


if __name__ == "__main__":
    main()
