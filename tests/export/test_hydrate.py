"""Hydrate round trip: export a shareable manifest, serve the originals from a real HTTP
server on 127.0.0.1, delete one and alter another, rebuild with `faceset hydrate`."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from builders import make_recipe, picture
from PIL import Image
from torchvision.datasets import ImageFolder

from flows.cli import main as faceset
from tasks.export import stage as export
from tasks.split import stage as split
from tasks.core import manifest as mf
from tasks.faces.stage import save_jpeg
from tasks.vision.detector import crop_face
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe

PEOPLE = 14
LOCAL = ("--allow-private-hosts", "127.0.0.1")  # the test site is on loopback, which hydrate refuses by default


class Recording(SimpleHTTPRequestHandler):
    agents: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        Recording.agents.append(self.headers.get("User-Agent", ""))
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture()
def site(tmp_path):
    """A static web site on 127.0.0.1 serving tmp_path/site; yields (folder, base URL)."""
    folder = tmp_path / "site"
    (folder / "img").mkdir(parents=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Recording, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def build(tmp_path, site_folder, base) -> tuple[pd.DataFrame, DatasetPaths, Recipe]:
    """A dataset built from the site's images: crops cut with the faces stage's own function."""
    recipe = make_recipe("shared", fields=("label", "gender", "age"), attributes=("gender", "age"), base=base,
                         faces={"size": 64}, split={"variants": [{"kind": "balanced", "by": ["gender"]}]})
    paths = DatasetPaths.create(tmp_path / "data" / "shared")
    rows = []
    for i in range(PEOPLE):
        url = f"{base}/img/{i}.png"
        picture(100 + i).save(site_folder / "img" / f"{i}.png")
        data = (site_folder / "img" / f"{i}.png").read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        box = [40, 50, 90, 90]
        face = paths.faces / f"{sha}_cfg.jpg"
        save_jpeg(crop_face(np.asarray(Image.open(site_folder / "img" / f"{i}.png").convert("RGB")),
                            np.array(box, dtype=np.float32), recipe.faces), face)
        rows.append({"item_id": f"item{i:02d}", "source": "north", "page_url": f"{base}/p/{i}", "image_url": url,
                     "crawled_at": "2026-11-20T10:00:00+00:00", "label": ["cs", "econ"][i % 2],
                     "gender": ["female", "male"][(i // 2) % 2], "age": str(30 + i), "sha256": sha,
                     "face_box": json.dumps(box), "face_path": face.relative_to(paths.root).as_posix(), "status": "kept"})
    frame = mf.conform(pd.DataFrame(rows), recipe.field_names)
    return export.run(split.run(frame, recipe, paths), recipe, paths), paths, recipe


def test_hydrate_round_trip_reports_gone_and_altered_images(tmp_path, site, capsys):
    site_folder, base = site
    frame, paths, _ = build(tmp_path, site_folder, base)
    (site_folder / "img" / "3.png").unlink()  # the owner took it down
    picture(999).save(site_folder / "img" / "5.png")  # the URL now serves another picture
    out = tmp_path / "rebuilt"
    Recording.agents.clear()
    assert faceset(["hydrate", str(paths.root / "manifest_share.csv"), str(out), "--delay", "0", *LOCAL]) == 0
    printed = capsys.readouterr().out
    assert f"{PEOPLE - 2} of {PEOPLE} images in place" in printed
    assert "item03: gone (HTTP 404)" in printed and "item05: hash mismatch" in printed
    report = json.loads((out / "hydrate_report.json").read_text())
    assert (report["ok"], report["gone"], report["hash_mismatch"], report["failed"]) == (PEOPLE - 2, 1, 1, 0)
    assert Recording.agents and all("faceset-hydrate" in a and "data@example.org" in a for a in Recording.agents)
    # the same tree as the export, minus the two lost images, and the same crops
    exported = {p.relative_to(paths.root).as_posix() for p in paths.root.glob("*/**/*.jpg")
                if p.parts[len(paths.root.parts)] in ("splits", "variants")}
    rebuilt = {p.relative_to(out).as_posix() for p in out.rglob("*.jpg")}
    assert rebuilt == {p for p in exported if "item03" not in p and "item05" not in p}
    for rel in rebuilt:
        a = np.asarray(Image.open(out / rel), dtype=float)
        b = np.asarray(Image.open(paths.root / rel), dtype=float)
        assert a.shape == b.shape == (64, 64, 3) and np.abs(a - b).mean() < 1.0, rel
    for name in ("train", "val", "test"):
        dataset = ImageFolder(str(out / "splits" / name))
        lines = [json.loads(x) for x in (out / "splits" / name / "metadata.jsonl").read_text().splitlines()]
        assert len(dataset) == len(lines)
        assert all((out / "splits" / name / line["file_name"]).is_file() for line in lines)
        original = {x["file_name"]: x for x in map(json.loads, (paths.splits / name / "metadata.jsonl").read_text().splitlines())}
        assert all(original[line["file_name"]] == line for line in lines)  # same labels and attributes
    # again: nothing is downloaded twice, the problems are reported again
    Recording.agents.clear()
    assert faceset(["hydrate", str(paths.root / "manifest_share.csv"), str(out), "--delay", "0", *LOCAL]) == 0
    assert len(Recording.agents) == 2
    assert json.loads((out / "hydrate_report.json").read_text())["downloaded"] == 0


def test_whole_images_without_crop_are_the_verified_originals(tmp_path, site):
    site_folder, base = site
    frame, paths, _ = build(tmp_path, site_folder, base)
    out = tmp_path / "whole"
    assert faceset(["hydrate", str(paths.root / "manifest_share.csv"), str(out), "--delay", "0", "--no-crop", *LOCAL]) == 0
    files = sorted(out.glob("splits/*/*/*.png"))
    assert len(files) == PEOPLE
    for path in files:
        original = site_folder / "img" / f"{int(path.stem.removeprefix('item'))}.png"
        assert path.read_bytes() == original.read_bytes()


def test_a_manifest_without_hashes_is_refused(tmp_path, capsys):
    bad = tmp_path / "manifest.csv"
    pd.DataFrame({"item_id": ["a"], "image_url": ["http://127.0.0.1/x.jpg"]}).to_csv(bad, index=False)
    assert faceset(["hydrate", str(bad), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{bad} lacks the columns ['class', 'sha256']" in err and "manifest_share.csv" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing downloaded, nothing written
