"""The "done means" check of issue #16: the image-search study, end to end, on a site the tests never saw.

A maintainer runs it (`python benchmarks/search_study_check.py [--seed N] [--budget 10m]`,
about 20-25 minutes on a quiet 2-core machine, most of it the fine-tune) after changing
the crawl of rendered pages, the faces stage's per-face mode, finetune, evaluate or apply.
It shares no code with tests/sites/ or flows/demo_search.py:

1. It generates, in a temp folder, a new image-search site and serves it on 127.0.0.1:
   `/images?tbm=isch&q=<query>` shows a grid of thumbnails, each linking to
   `/imgres?imgurl=<percent-encoded original>&imgrefurl=...`, where the original's own URL
   has a query string (`/media/<id>.jpg?w=1280&h=960`); the first results are in the HTML,
   the next ones come from a JSON endpoint while the visitor scrolls, until a "Show more
   results" button appears, which loads the rest. Each query has a planted share of women;
   each result is a 1280x960 group photo (tasks/faces/group_photos.py) of 1-6 adult UTKFace
   faces (../shared/corpus), 40-200 px wide, on a UKBench photo, every box and gender known.
2. It runs the real `faceset build` (a subprocess) with a recipe for it (queries, scroll,
   click, the `item.image` regex, `faces: {each: true, min_face_px: 40}`) and measures face
   recall: the share of planted faces that are a face row whose box has IoU >= 0.5 with
   them, overall and by width. It must be at least 95%.
3. It fine-tunes a gender model with the real `faceset finetune` (default settings, or
   `--budget`) on an ImageFolder tree of other UTKFace faces (none of them on the site),
   each pasted alone on a photo and cropped as the faces stage crops, then runs `faceset
   evaluate` on a "hand-labelled" sample of the site's own face rows (their labels taken
   from the planted truth, as the Pew team labelled a sample of its study's faces).
4. It runs `faceset apply MODEL --faces each --by query` on the built dataset and compares,
   per query, the naive and the adjusted share of women with the truth (the planted share
   among the faces on the site). The adjusted shares must be within 4 points of the truth
   on average, and closer than the naive ones.

It prints the seed, every figure and a verdict, writes benchmarks/results/search_study.json,
and exits 1 when the done-means is not met.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_file import write_results  # noqa: E402
from tasks.faces.group_photos import background, chip_face, compose, iou, matched  # noqa: E402

CORPUS = Path(os.environ.get("FACESET_CORPUS", REPO.parent / "shared" / "corpus"))
FACESET = [sys.executable, "-m", "flows.cli"]
# Planted share of women per query: from mostly women to mostly men, one query of two words.
QUERIES = {"nurse": 0.88, "receptionist": 0.8, "teacher": 0.68, "doctor": 0.45, "ceo": 0.22,
           "software engineer": 0.12}
CANVAS = (1280, 960)
SIDES = (40, 200)  # face widths pasted, uniform
SIZE_BINS = [(40, 60), (60, 100), (100, 150), (150, 201)]
FIRST, SCROLL_BATCH, SCROLL_UNTIL, CLICK_BATCH = 10, 8, 34, 12  # results in the HTML, per scroll, ..., per click
MIN_RECALL, MAX_MAE = 0.95, 4.0


# ---------------------------------------------------------------- the faces


def read_faces() -> pd.DataFrame:
    """UTKFace's labels.csv with the path of each file."""
    folder = CORPUS / "utkface"
    frame = pd.read_csv(folder / "labels.csv")
    frame["path"] = [folder / f for f in frame["file"]]
    frame["gender"] = np.where(frame["gender"] == 1, "female", "male")
    return frame[[p.is_file() for p in frame["path"]]].reset_index(drop=True)


class Pool:
    """Faces drawn without reuse, by gender, only those whose own face the detector finds
    (so every pasted face has a known box)."""

    def __init__(self, faces: pd.DataFrame, rng: random.Random) -> None:
        self.left = {g: list(faces.loc[faces["gender"] == g, "path"]) for g in ("female", "male")}
        for paths in self.left.values():
            rng.shuffle(paths)
        self.used: set[Path] = set()

    def draw(self, gender: str) -> Path:
        while True:
            path = self.left[gender].pop()
            if chip_face(path) is not None:
                self.used.add(path)
                return path


@dataclass
class Photo:
    """One search result: its id, query, rank, the JPEG, and its faces (box [x, y, w, h], gender)."""

    id: str
    query: str
    rank: int
    jpeg: bytes
    thumb: bytes
    faces: list[dict] = field(default_factory=list)


def jpeg_bytes(rgb: np.ndarray, quality: int = 90, side: int | None = None) -> bytes:
    import io

    image = Image.fromarray(rgb)
    if side:
        image.thumbnail((side, side))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def make_photos(pool: Pool, backgrounds: list[Path], photos_per_query: int, rng: random.Random,
                np_rng: np.random.Generator) -> list[Photo]:
    """Every query's results: group photos of 1-6 faces, each a woman with the query's planted share."""
    out = []
    for query, women in QUERIES.items():
        for rank in range(photos_per_query):
            count = rng.randint(1, 6)
            genders = ["female" if rng.random() < women else "male" for _ in range(count)]
            paths = [pool.draw(g) for g in genders]
            sides = [rng.randint(*SIDES) for _ in genders]
            canvas = background(rng.choice(backgrounds), CANVAS)
            for _ in range(20):  # compose skips a face it finds no room for: place them all, or try again
                photo = compose(paths, sides, canvas, np_rng)
                if len(photo.boxes) == len(paths):
                    break
            else:
                raise RuntimeError(f"could not place {len(paths)} faces on one photo")
            faces = [{"box": list(box), "gender": g, "file": p.name} for box, g, p in zip(photo.boxes, genders, paths)]
            out.append(Photo(f"{rng.getrandbits(48):012x}", query, rank, jpeg_bytes(photo.rgb, 92),
                             jpeg_bytes(photo.rgb, 80, 256), faces))
    return out


# ---------------------------------------------------------------- the site

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title} - Picture search</title>
<style>body{{font-family:sans-serif;margin:0}} #grid{{margin:0 12px}}
div.rg{{display:inline-block;width:46%;height:300px;margin:6px;vertical-align:top}}
img.rg-img{{max-width:100%;max-height:250px}} input.show-more{{display:none;margin:20px}} #end{{display:none}}</style>
</head><body><form action="/images"><input name="q" value="{title}"><input type="hidden" name="tbm" value="isch"></form>
<div id="grid">{tiles}</div>
<input type="button" class="show-more" value="Show more results"><p id="end">Looks like you've reached the end</p>
<script>
const Q = {query_js}, TOTAL = {total}, SCROLL_UNTIL = {scroll_until};
let shown = {first}, loading = false;
function tile(r) {{
  const div = document.createElement('div'); div.className = 'rg';
  div.innerHTML = '<a class="rg-link" href="' + r.href + '"><img class="rg-img" src="' + r.thumb + '"></a>'
    + '<div class="rg-meta"><span class="rg-host">' + r.host + '</span> ' + r.title + '</div>';
  return div;
}}
function update() {{
  const more = document.querySelector('input.show-more');
  if (shown >= TOTAL) {{ more.style.display = 'none'; document.getElementById('end').style.display = 'block'; }}
  else if (shown >= SCROLL_UNTIL) {{ more.style.display = 'inline-block'; }}
}}
async function load(num) {{
  loading = true;
  const answer = await fetch('/async/isch?q=' + encodeURIComponent(Q) + '&start=' + shown + '&num=' + num);
  const results = await answer.json();
  await new Promise(done => setTimeout(done, 150));
  const grid = document.getElementById('grid');
  for (const r of results) grid.appendChild(tile(r));
  shown += results.length; loading = false; update();
}}
window.addEventListener('scroll', () => {{
  if (loading || shown >= SCROLL_UNTIL || shown >= TOTAL) return;
  if (window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 100) load({scroll_batch});
}});
document.querySelector('input.show-more').addEventListener('click', () => {{ if (!loading) load({click_batch}); }});
update();
</script></body></html>"""
TILE = ('<div class="rg"><a class="rg-link" href="{href}"><img class="rg-img" src="{thumb}"></a>'
        '<div class="rg-meta"><span class="rg-host">{host}</span> {title}</div></div>')


class Site:
    """The search site: its routes, served on 127.0.0.1 by a threaded server."""

    def __init__(self, photos: list[Photo]) -> None:
        self.photos = photos
        self.by_query = {q: [p for p in photos if p.query == q] for q in QUERIES}
        self.by_id = {p.id: p for p in photos}
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                status, kind, body = site.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def original(self, photo: Photo) -> str:
        return f"{self.base}/media/{photo.id}.jpg?w={CANVAS[0]}&h={CANVAS[1]}"

    def result(self, photo: Photo) -> dict:
        href = (f"/imgres?imgurl={quote(self.original(photo), safe='')}"
                f"&imgrefurl={quote(f'{self.base}/story/{photo.id}', safe='')}&docid={photo.id}")
        return {"href": href, "thumb": f"/thumbs/{photo.id}.jpg", "host": f"news{photo.rank % 7}.example",
                "title": html.escape(f"{photo.query} at work {photo.rank}")}

    def answer(self, raw: str) -> tuple[int, str, bytes]:
        parts = urlsplit(raw)
        args = {k: v[0] for k, v in parse_qs(parts.query).items()}
        media = re.fullmatch(r"/(media|thumbs)/([0-9a-f]+)\.jpg", parts.path)
        if parts.path == "/robots.txt":
            return 200, "text/plain", b"User-agent: *\nAllow: /\n"
        if media and media.group(2) in self.by_id:
            photo = self.by_id[media.group(2)]
            return 200, "image/jpeg", photo.jpeg if media.group(1) == "media" else photo.thumb
        if parts.path == "/images" and args.get("q") in self.by_query:
            query = args["q"]
            hits = self.by_query[query]
            tiles = "".join(TILE.format(**self.result(p)) for p in hits[:FIRST])
            page = PAGE.format(title=html.escape(query), tiles=tiles, query_js=json.dumps(query), total=len(hits),
                               first=FIRST, scroll_until=SCROLL_UNTIL, scroll_batch=SCROLL_BATCH,
                               click_batch=CLICK_BATCH)
            return 200, "text/html; charset=utf-8", page.encode()
        if parts.path == "/async/isch" and args.get("q") in self.by_query:
            start, num = int(args.get("start", 0)), int(args.get("num", 10))
            hits = self.by_query[args["q"]][start:start + num]
            return 200, "application/json", json.dumps([self.result(p) for p in hits]).encode()
        return 404, "text/html", b"<h1>not found</h1>"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_recipe(site: Site, folder: Path) -> Path:
    """The recipe a researcher would write for this site."""
    import yaml

    recipe = {
        "name": "search-study", "description": "issue 16's done-means check", "contact": "check@example.org",
        "crawl": {"delay": 0, "concurrency": 4, "autothrottle": False, "timeout": 20, "retries": 1,
                  "render_workers": 2},
        "sources": [{
            "name": "pictures",
            "start_urls": [site.base + "/images?tbm=isch&q={query}"],
            "queries": list(QUERIES),
            "render": True, "wait_for": "div.rg",
            "scroll": 10, "click": "input.show-more", "max_clicks": 10,
            "item": {"each": "div.rg",
                     "image": {"css": "a.rg-link::attr(href)", "regex": "imgurl=([^&]+)"},
                     "fields": {"host": {"css": "span.rg-host::text"}}},
        }],
        "target": "query",
        "faces": {"each": True, "min_face_px": 40},
        "crosscheck": {"autotagger": "none"},
        "split": {"stratify": ["query"]},
        "finetune": "none",
    }
    path = folder / "search-study.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------- running faceset


def faceset(args: list[str], log: Path) -> float:
    """Run the faceset CLI; its output goes to `log` (and its tail to the console on failure). Seconds taken."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        done = subprocess.run([*FACESET, *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    text = log.read_text(encoding="utf-8", errors="replace")
    if done.returncode != 0:
        print(text[-4000:])
        raise RuntimeError(f"faceset {args[0]} failed ({done.returncode}); its output: {log}")
    print("  " + "\n  ".join(text.strip().splitlines()[-12:]), flush=True)
    return time.perf_counter() - started


def photo_of(url: str) -> str | None:
    found = re.search(r"/media/([0-9a-f]+)\.jpg", str(url))
    return found.group(1) if found else None


def recall(manifest: pd.DataFrame, photos: list[Photo]) -> tuple[dict, pd.DataFrame]:
    """Each planted face: whether a face row of its photo has a box of IoU >= 0.5 with it, and that row."""
    rows = manifest[manifest["parent_id"].notna() & manifest["face_box"].notna()].copy()
    rows["photo"] = rows["image_url"].map(photo_of)
    found = []
    for photo in photos:
        mine = rows[rows["photo"] == photo.id]
        boxes = [json.loads(b) for b in mine["face_box"]]
        match = matched([f["box"] for f in photo.faces], boxes)
        for face, m in zip(photo.faces, match):
            row = mine.iloc[m] if m is not None else None
            found.append({"photo": photo.id, "query": photo.query, "gender": face["gender"], "side": face["box"][2],
                          "found": m is not None, "item_id": None if row is None else row["item_id"],
                          "status": None if row is None else row["status"],
                          "face_path": None if row is None else row["face_path"]})
    table = pd.DataFrame(found)
    by_size = {}
    for low, high in SIZE_BINS:
        part = table[(table["side"] >= low) & (table["side"] < high)]
        by_size[f"{low}-{high - 1} px"] = {"faces": len(part), "recall": round(float(part["found"].mean()), 4)}
    planted = {(p.id, i) for p in photos for i in range(len(p.faces))}
    extra = len(rows[rows["photo"].notna()]) - int(table["found"].sum())
    summary = {"faces": len(planted), "found": int(table["found"].sum()), "recall": round(float(table["found"].mean()), 4),
               "by_width": by_size, "face_rows": len(rows), "face_rows_matching_no_planted_face": extra,
               "found_faces_by_status": table.loc[table["found"], "status"].value_counts().to_dict()}
    return summary, table


def training_tree(faces: pd.DataFrame, root: Path, backgrounds: list[Path], rng: random.Random,
                  np_rng: np.random.Generator) -> dict:
    """train/val/test/<gender>/ of UTKFace faces not on the site (ages 13 and up), each pasted alone
    at a random width of 40-200 px on a 640x480 photo and cropped by the faces stage's own per-face
    code and settings, saved as the stage saves crops: the model learns the crops it will see."""
    from tasks.core.recipe import FacesConfig
    from tasks.faces.stage import JPEG_QUALITY
    from tasks.finetune.apply import every_face

    config = FacesConfig(each=True, min_face_px=40)
    counts: dict[str, int] = {}
    rows = faces.sample(frac=1, random_state=rng.randint(0, 2**31)).to_dict("records")
    for number, row in enumerate(rows):
        split = "train" if number % 20 < 14 else "val" if number % 20 < 17 else "test"
        photo = compose([row["path"]], [rng.randint(*SIDES)], background(rng.choice(backgrounds), (640, 480)), np_rng)
        if not photo.boxes:
            continue
        found, _ = every_face(photo.rgb, config)
        best = max(found, key=lambda f: iou(json.loads(f["face_box"]), photo.boxes[0]), default=None)
        if best is None or iou(json.loads(best["face_box"]), photo.boxes[0]) < 0.5:
            continue
        folder = root / split / row["gender"]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(best["crop"]).save(folder / f"{Path(row['file']).stem}.jpg", "JPEG", quality=JPEG_QUALITY)
        counts[f"{split}/{row['gender']}"] = counts.get(f"{split}/{row['gender']}", 0) + 1
    return counts


def hand_labelled(table: pd.DataFrame, dataset: Path, out: Path, n: int, rng: random.Random) -> dict:
    """A random sample of `n` of the site's kept face rows, filed under their planted gender."""
    kept = table[table["found"] & (table["status"] == "kept")]
    sample = kept.sample(n=min(n, len(kept)), random_state=rng.randint(0, 2**31))
    for row in sample.to_dict("records"):
        (out / row["gender"]).mkdir(parents=True, exist_ok=True)
        source = dataset / row["face_path"]
        shutil.copyfile(source, out / row["gender"] / f"{row['item_id']}{source.suffix}")
    return sample["gender"].value_counts().to_dict()


def error_rates(table: pd.DataFrame, predictions: pd.DataFrame, evaluation: dict) -> dict:
    """The rates the adjustment divides by, as the hand-labelled sample measured them and as they
    are over every applied face (from the planted truth): their gap is the adjustment's own error."""
    joined = table.dropna(subset=["item_id"]).merge(predictions[["item_id", "predicted"]], on="item_id")
    matrix = dict(zip(evaluation["confusion_matrix"]["labels"], evaluation["confusion_matrix"]["matrix"]))
    labels = evaluation["confusion_matrix"]["labels"]

    def as_female(row: list[int]) -> float:
        return row[labels.index("female")] / sum(row)

    return {"hand_labelled": {"faces": evaluation["n"], "female_as_female": round(as_female(matrix["female"]), 4),
                              "male_as_female": round(as_female(matrix["male"]), 4)},
            "all_applied": {"faces": len(joined),
                            "female_as_female": round(float((joined.loc[joined["gender"] == "female", "predicted"]
                                                             == "female").mean()), 4),
                            "male_as_female": round(float((joined.loc[joined["gender"] == "male", "predicted"]
                                                           == "female").mean()), 4)}}


# ---------------------------------------------------------------- the study


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--photos", type=int, default=43, help="result photos per query (3.5 faces each on average)")
    parser.add_argument("--labelled", type=int, default=300, help="site faces in the hand-labelled set")
    parser.add_argument("--budget", default=None, help="passed to faceset finetune (default: its default settings)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="work here and keep it (default: a temp folder)")
    args = parser.parse_args()
    if not (CORPUS / "utkface" / "labels.csv").is_file():
        print(f"needs the corpus at {CORPUS} (UTKFace faces and UKBench photos)")
        return 2
    started = time.perf_counter()
    print(f"seed {args.seed}; load average at start {os.getloadavg()}", flush=True)
    rng, np_rng = random.Random(args.seed), np.random.default_rng(args.seed)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="faceset-search-study-"))
    if args.keep and work.exists() and any(work.iterdir()):
        print(f"--keep {work}: the folder is not empty; name a new or empty one")
        return 2
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    faces = read_faces()
    backgrounds = sorted((CORPUS / "dedup" / "imagededup" / "base_images").glob("*.jpg"))
    adults = faces[(faces["age"] >= 18) & (faces["age"] <= 80)]
    step = time.perf_counter()
    pool = Pool(adults, rng)
    photos = make_photos(pool, backgrounds, args.photos, rng, np_rng)
    truth = {q: float(np.mean([f["gender"] == "female" for p in photos if p.query == q for f in p.faces]))
             for q in QUERIES}
    per_query = {q: sum(len(p.faces) for p in photos if p.query == q) for q in QUERIES}
    timings["site"] = time.perf_counter() - step
    print(f"site: {len(photos)} result photos, {sum(per_query.values())} faces; per query {per_query}", flush=True)

    site = Site(photos)
    try:
        recipe = write_recipe(site, work)
        print(f"faceset build {recipe} (site {site.base})", flush=True)
        timings["build"] = faceset(["build", str(recipe), "--data-root", str(work / "data")], work / "build.log")
    finally:
        site.stop()
    dataset = work / "data" / "search-study"
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    images = manifest[manifest["parent_id"].isna()]
    crawled = {q: int((images["query"] == q).sum()) for q in QUERIES}
    found, table = recall(manifest, photos)
    print(f"crawled images per query {crawled} (on the site: {args.photos} each)")
    print(f"face recall: {found['found']}/{found['faces']} = {found['recall']:.1%}; by width "
          + ", ".join(f"{k} {v['recall']:.1%} (n={v['faces']})" for k, v in found["by_width"].items()), flush=True)

    step = time.perf_counter()
    others = faces[~faces["path"].isin(pool.used) & (faces["age"] >= 13)]
    tree = training_tree(others, work / "gender_tree", backgrounds, rng, np_rng)
    timings["training_tree"] = time.perf_counter() - step
    print(f"training tree (faces not on the site): {tree}", flush=True)
    model = work / "model"
    finetune_args = ["finetune", str(work / "gender_tree"), "--out", str(model)]
    finetune_args += ["--budget", args.budget] if args.budget else []
    print("faceset finetune TREE --out MODEL" + (f" --budget {args.budget}" if args.budget else ""), flush=True)
    timings["finetune"] = faceset(finetune_args, work / "finetune.log")
    test_metrics = json.loads((model / "test_metrics.json").read_text()) if (model / "test_metrics.json").is_file() else {}

    labelled = hand_labelled(table, dataset, work / "hand_labelled", args.labelled, rng)
    print(f"faceset evaluate on {labelled} hand-labelled site faces", flush=True)
    timings["evaluate"] = faceset(["evaluate", str(model), str(work / "hand_labelled"), "--name", "hand_labelled"],
                                  work / "evaluate.log")
    evaluation = json.loads((model / "evaluations" / "hand_labelled.json").read_text())

    print("faceset apply MODEL DATASET --faces each --by query", flush=True)
    timings["apply"] = faceset(["apply", str(model), str(dataset), "--faces", "each", "--by", "query",
                                "--out", str(work / "applied")], work / "apply.log")
    shares = pd.read_csv(work / "applied" / "shares.csv")
    rates = error_rates(table, pd.read_csv(work / "applied" / "predictions.csv"), evaluation)
    table.to_csv(work / "planted_faces.csv", index=False)
    women = shares[shares["class"] == "female"].set_index("query")
    kept_truth = table[table["status"] == "kept"].groupby("query")["gender"].apply(lambda g: float((g == "female").mean()))
    rows = []
    for query in QUERIES:
        row = women.loc[query]
        rows.append({"query": query, "faces_on_site": per_query[query], "faces_applied": int(row["faces"]),
                     "truth": round(truth[query], 4), "truth_of_kept_faces": round(float(kept_truth[query]), 4),
                     "naive": round(float(row["naive"]), 4), "adjusted": round(float(row["adjusted"]), 4),
                     "low": round(float(row["low"]), 4), "high": round(float(row["high"]), 4)})
    result = pd.DataFrame(rows)
    mae = {k: round(100 * float((result[k] - result["truth"]).abs().mean()), 2) for k in ("naive", "adjusted")}
    covered = int(((result["low"] <= result["truth"]) & (result["truth"] <= result["high"])).sum())
    print("\nshare of women per query (points)")
    print(f"{'query':18s} {'faces':>5s} {'truth':>6s} {'naive':>6s} {'adjusted':>8s} {'95% interval':>14s}")
    for r in rows:
        print(f"{r['query']:18s} {r['faces_applied']:5d} {100 * r['truth']:6.1f} {100 * r['naive']:6.1f} "
              f"{100 * r['adjusted']:8.1f}   {100 * r['low']:5.1f}-{100 * r['high']:4.1f}")
    print(f"mean absolute error: naive {mae['naive']} points, adjusted {mae['adjusted']} points; "
          f"truth inside the interval for {covered}/{len(rows)} queries")
    print(f"model: held-out accuracy {test_metrics.get('accuracy')}, on the {evaluation['n']} hand-labelled site faces "
          f"{evaluation['accuracy']:.3f}; women read as women / men read as women: hand-labelled sample "
          f"{rates['hand_labelled']['female_as_female']:.3f} / {rates['hand_labelled']['male_as_female']:.3f}, "
          f"all {rates['all_applied']['faces']} applied faces {rates['all_applied']['female_as_female']:.3f} / "
          f"{rates['all_applied']['male_as_female']:.3f}")
    met = {"recall_at_least_95": found["recall"] >= MIN_RECALL, "adjusted_within_4_points": mae["adjusted"] <= MAX_MAE,
           "adjusted_closer_than_naive": mae["adjusted"] < mae["naive"]}
    total = time.perf_counter() - started
    load = os.getloadavg()
    print(f"done-means {'MET' if all(met.values()) else 'NOT MET'}: {met}; {total / 60:.1f} min, "
          f"load average at the end {load}")
    write_results("search_study", {
        "seed": args.seed, "queries": QUERIES, "photos_per_query": args.photos, "faces_per_query": per_query,
        "crawled_images_per_query": crawled, "face_recall": found,
        "training_tree": tree, "finetune": {"settings": "default" if not args.budget else f"--budget {args.budget}",
                                            "held_out_accuracy": test_metrics.get("accuracy"),
                                            "model": test_metrics.get("model")},
        "hand_labelled": {"faces": labelled, "accuracy": evaluation["accuracy"],
                          "per_class": evaluation["per_class"], "confusion": evaluation["confusion_matrix"]},
        "error_rates": rates, "shares": rows, "mae_points": mae, "truth_inside_interval": covered, "done_means": met,
        "seconds": {k: round(v, 1) for k, v in timings.items()} | {"total": round(total, 1)},
        "machine": {"cpus": os.cpu_count(), "load_average_end": [round(x, 2) for x in load],
                    "python": platform.python_version(), "platform": platform.platform()},
    })
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
