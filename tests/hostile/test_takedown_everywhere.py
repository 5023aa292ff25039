"""A takedown leaves no trace of the person in any file of the dataset, state and caches included.

A dataset is built (fake stages: real files, manifests, stage manifests, row caches, review
page, predictions), a person is taken down with `faceset takedown add`, and the dataset is
built again. Every file is then searched for the person's item_id, image and page URL, name
and image sha256 (Parquet files through pandas, the rest as bytes). What may remain is the
row itself in the manifests, as a tombstone: its item_id, status `excluded`, reason
`takedown`, source and dates, nothing else. Before the fix the stage manifests and row caches
kept the whole row, the manifest kept the name, URLs and hash, and the fetch cache the image.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from fakes import flow_stages as fakes

from flows.cli import main as faceset
from tasks.core import manifest as mf
from tasks.core.takedown import TOMBSTONE

FAKES = "fakes.flow_stages:stages"
MANIFESTS = ".parquet", ".csv"


def _tokens(row: pd.Series) -> dict[str, str]:
    return {c: str(row[c]) for c in ("item_id", "image_url", "page_url", "name", "sha256") if pd.notna(row.get(c))}


def _table(path: Path) -> pd.DataFrame | None:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.name == "manifest.csv":
        return pd.read_csv(path, dtype=str)
    return None


def traces(root: Path, row: pd.Series) -> list[str]:
    """Each file under `root` that names or shows the person of `row`, with what it holds of them."""
    tokens = _tokens(row)
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        table = _table(path)
        if table is not None and "item_id" in table.columns:
            tombstone = table["item_id"] == tokens["item_id"]
            others = table.loc[tombstone, [c for c in table.columns if c not in TOMBSTONE]]
            if tombstone.any() and (others.notna().to_numpy().any() or set(table.loc[tombstone, "status"]) != {"excluded"}):
                found.append(f"{path.relative_to(root)}: the row is not a bare tombstone")
            text = table[~tombstone].astype(str).to_csv()
        else:
            text = path.read_bytes().decode("latin-1")
        named = [kind for kind, token in tokens.items() if token in text or token in path.name]
        if named:
            found.append(f"{path.relative_to(root)}: {', '.join(named)}")
    return found


def test_a_takedown_and_a_rebuild_leave_no_file_that_names_or_shows_the_person(tmp_path, monkeypatch, prefect_server):
    from flows.build import build

    monkeypatch.setenv("FACESET_TEST_SITE", str(tmp_path / "site.json"))
    monkeypatch.setenv("FACESET_WORKERS", "1")
    fakes.write_site(tmp_path / "site.json", 40)
    recipe = fakes.write_recipe(tmp_path)
    data = tmp_path / "data"
    root = build(recipe, data_root=data, stages=FAKES)
    frame = mf.read(root / "manifest.parquet")
    tested = frame[(frame["split"] == "test") & mf.kept(frame)]
    person = tested.iloc[0]
    before = traces(root, person)
    for place in ("manifest.parquet", "manifest.csv", ".faceset/stages/crawl.parquet", ".faceset/rows/faces",
                  "images/", "faces/", "splits/test/", "reports/review.html", "models/predictions.csv"):
        assert any(t.startswith(place) for t in before), (place, before)  # the search finds each kind of trace

    assert faceset(["takedown", "add", person["name"], "--kind", "name", "--data-root", str(data)]) == 0
    build(recipe, data_root=data, stages=FAKES)

    assert traces(root, person) == []
    after = mf.read(root / "manifest.parquet").set_index("item_id")
    assert (after.loc[person["item_id"], "status"], after.loc[person["item_id"], "reason"]) == ("excluded", "takedown")
    other = frame[mf.kept(frame) & (frame["name"] != person["name"])].iloc[0]
    assert traces(root, other), "another person's files must stay"
    list_file = json.loads((data / "takedowns.json").read_text())
    assert person["sha256"] in list_file["entries"][0]["extra"]["sha256s"]  # kept in the list, outside the dataset


def test_a_gallery_of_an_earlier_run_is_not_left_beside_the_new_ones(tmp_path):
    """A class with mistakes before a takedown and none after it: its old gallery (which may
    show the person) must not stay in models/galleries/."""
    import numpy as np
    from PIL import Image

    from tasks.finetune import evaluate

    face = tmp_path / "face.png"
    Image.new("RGB", (20, 20), (200, 0, 0)).save(face)
    frame = pd.DataFrame({"path": [str(face), str(face)], "target": [0, 1]})
    evaluate.galleries(frame, np.array([[0.2, 0.8], [0.1, 0.9]]), ["cat", "dog"], tmp_path / "g")
    assert (tmp_path / "g" / "cat_false_negatives.png").is_file()
    evaluate.galleries(frame, np.array([[0.8, 0.2], [0.1, 0.9]]), ["cat", "dog"], tmp_path / "g")  # no mistake now
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == []


def test_the_crawl_and_fetch_records_logs_and_page_cache_forget_the_person(tmp_path):
    """The state real crawls and fetches leave under .faceset/: records, logs, Scrapy's page cache."""
    from tasks.core import takedown
    from tasks.core.paths import DatasetPaths

    paths = DatasetPaths.create(tmp_path / "data" / "ds")
    rows = [{"item_id": f"id{i}", "source": "s", "page_url": f"http://127.0.0.1/p/{i}.html",
             "image_url": f"http://127.0.0.1/i/{i}.jpg", "name": f"Person {i}", "status": "kept"} for i in range(2)]
    frame = mf.conform(pd.DataFrame(rows), ["name"])
    crawl, fetch = paths.state_folder("crawl"), paths.state_folder("fetch")
    for folder in (crawl / "httpcache" / "people" / "ab" / "ab1", crawl / "httpcache" / "people" / "cd" / "cd2", fetch):
        folder.mkdir(parents=True)
    (crawl / "crawl.log").write_text("".join(f"Crawled (200) <GET {r['page_url']}>\n" for r in rows))
    (fetch / "results.jsonl").write_text("".join(json.dumps({"item_id": r["item_id"], "url": r["image_url"]}) + "\n"
                                                 for r in rows))
    (crawl / "httpcache" / "people" / "ab" / "ab1" / "meta").write_text(repr({"url": rows[0]["page_url"]}))
    (crawl / "httpcache" / "people" / "cd" / "cd2" / "meta").write_text(repr({"url": rows[1]["page_url"]}))

    out = takedown.apply(frame, paths, [takedown.make_entry("http://127.0.0.1/p/0.html")])

    assert list(out["status"]) == ["excluded", "kept"]
    assert traces(paths.root, frame.iloc[0]) == []
    assert (crawl / "httpcache" / "people" / "cd" / "cd2" / "meta").is_file()  # another person's page stays
    assert "id1" in (fetch / "results.jsonl").read_text() and "1.html" in (crawl / "crawl.log").read_text()


def test_a_real_crawl_after_a_takedown_never_requests_the_page_and_keeps_nothing_of_it(tmp_path):
    """A takedown by page URL, then the next real crawl and download of the same site: the page
    linked from the index is declined before it is requested (so neither it nor its image reach
    the page cache, the logs or the reports), and no file of the dataset names the person."""
    from sites.hostile import image, index, profile, recipe, serve

    from tasks.core import takedown
    from tasks.core.paths import DatasetPaths
    from tasks.crawl import stage as crawl
    from tasks.fetch import stage as fetch

    people = {f"/people/{i}.html": profile(f"Person Number{i}", f"/img/{i}.jpg") for i in range(3)}
    site = serve({"/index.html": index(list(people)), **people, **{f"/img/{i}.jpg": image(i) for i in range(3)}})
    data = tmp_path / "data"
    paths = DatasetPaths.create(data / "ds")
    try:
        spec = recipe([site.url("/index.html")])
        frame = fetch.run(crawl.run(mf.empty(spec.field_names), spec, paths, timeout=60), spec, paths, timeout=60)
        person = frame.set_index("name").loc["Person Number1"].copy()
        person["name"] = "Person Number1"
        assert traces(paths.root, person)  # the first crawl stored the page, the image and the row

        assert faceset(["takedown", "add", site.url("/people/1.html"), "--kind", "url", "--data-root", str(data)]) == 0
        frame = takedown.apply(frame, paths)  # as the build does after each network stage
        site.clear_log()
        frame = takedown.apply(crawl.run(frame, spec, paths, timeout=60), paths)
        frame = fetch.run(frame, spec, paths, timeout=60)
    finally:
        site.stop()
    requested = site.paths()
    assert "/index.html" in requested and "/people/0.html" in requested  # the site was crawled again
    assert "/people/1.html" not in requested and "/img/1.jpg" not in requested
    assert traces(paths.root, person) == []
    assert (frame["status"] == mf.KEPT).sum() == 2
    report = json.loads(paths.report_json("crawl").read_text())
    assert report["errors"] == [] and report["rows_total"] == 3
