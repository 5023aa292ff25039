"""The demo website: real HTTP on 127.0.0.1, profile pages carrying UTKFace labels as prose."""

from __future__ import annotations

import collections
import csv
import io
import shutil
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path

import pytest
import yaml
from builders import UTKFACE_RACES
from PIL import Image

from flows.commands.demo import find_demo_images
from flows.demo_site import DemoServer, build_site, recipe_text
from tasks.core.errors import FacesetError
from tasks.core.recipe import parse_recipe


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_site_serves_directory_profiles_and_portraits(utkface_dir: Path) -> None:
    site = build_site(utkface_dir, limit=30)
    assert len(site.profiles) == 34  # 30 photos + 4 deliberately bad entries
    with DemoServer(site) as server:
        status, index = fetch(server.url + "/index.html")
        assert status == 200 and b"/staff/1.html" in index
        status, first = fetch(server.url + "/staff/1.html")
        assert first.count(b"class='staff'") == 24 and b"pager-next" in first
        status, second = fetch(server.url + "/staff/2.html")
        assert second.count(b"class='staff'") == 10 and b"pager-next" not in second
        status, page = fetch(server.url + "/people/p00001.html")
        assert status == 200 and b"img class='portrait' src='../img/p00001.jpg'" in page
        assert b"Born " in page and (b"She " in page or b"He " in page)
        status, jpeg = fetch(server.url + "/img/p00001.jpg")
        image = Image.open(io.BytesIO(jpeg))
        assert image.format == "JPEG" and image.width > 200 and len(jpeg) > 5000
        assert fetch(server.url + "/img/missing.jpg")[0] == 404
        assert fetch(server.url + "/img/broken.jpg")[1].startswith(b"<html>")
        assert b"Disallow" in fetch(server.url + "/robots.txt")[1]
    assert "/people/p00001.html" in server.requests


def test_profile_labels_match_the_labels_csv(utkface_dir: Path, tmp_path: Path) -> None:
    """Twelve adult UTKFace photos: the profiles carry exactly their race, gender and age."""
    with (utkface_dir / "labels.csv").open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if 18 <= int(r["age"]) <= 80][:12]
    for row in rows:
        shutil.copyfile(utkface_dir / row["file"], tmp_path / row["file"])
    with (tmp_path / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "age", "gender", "race"])
        writer.writeheader()
        writer.writerows(rows)
    site = build_site(tmp_path, extras=False)
    assert site.utkface and len(site.profiles) == len(rows)
    pronoun = {"1": "She", "0": "He"}  # UTKFace: gender 0 male, 1 female
    shown = collections.Counter((p.fields["race"], p.bio.split()[0]) for p in site.profiles)
    assert shown == collections.Counter((UTKFACE_RACES[r["race"]], pronoun[r["gender"]]) for r in rows)
    # "Born <year>": the age in labels.csv, give or take the birthday
    ages = sorted(date.today().year - int(p.fields["born"].removeprefix("Born ")) for p in site.profiles)
    expected = sorted(int(r["age"]) for r in rows)
    assert all(e <= a <= e + 1 for a, e in zip(ages, expected)), (ages, expected)


def test_demo_recipe_is_valid(utkface_dir: Path) -> None:
    site = build_site(utkface_dir, limit=8)
    recipe = parse_recipe(yaml.safe_load(recipe_text(site, "http://127.0.0.1:9")), Path("demo.yaml"))
    assert recipe.target == "gender" and recipe.attributes == ["age", "race"]
    assert recipe.sources[0].item.fields["gender"].parse == "pronoun"


def test_any_labelled_folder_works(tmp_path: Path) -> None:
    for i in range(5):
        Image.new("RGB", (120, 140), (40 * i, 90, 160)).save(tmp_path / f"f{i}.jpg")
    (tmp_path / "labels.csv").write_text("file,team\n" + "".join(f"f{i}.jpg,{'ab'[i % 2]}\n" for i in range(5)))
    site = build_site(tmp_path, extras=False)
    assert not site.utkface and [p.fields["team"] for p in site.profiles].count("a") == 3
    recipe = parse_recipe(yaml.safe_load(recipe_text(site, "http://127.0.0.1:9")), Path("demo.yaml"))
    assert recipe.target == "team"


def test_missing_labels_and_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FacesetError, match="no labels CSV") as info:
        build_site(tmp_path)
    assert "file" in info.value.hint
    with pytest.raises(FacesetError, match="no such folder"):
        find_demo_images(str(tmp_path / "absent"))


def test_demo_serve_serves_the_site_until_interrupted(utkface_dir):
    """`faceset demo --serve`: the site alone (the tutorial's first step), until it is stopped."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-m", "flows.cli", "demo", "--serve", "--limit", "6", "--port", str(port),
                              "--images", str(utkface_dir)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        while not any("site on" in line for line in lines):
            line = child.stdout.readline()
            assert line, f"demo --serve ended early: {lines}"
            lines.append(line)
        status, body = fetch(f"http://127.0.0.1:{port}/")
        assert status == 200 and b"<a" in body
        child.send_signal(signal.SIGTERM)  # as Ctrl-C (a background job may ignore SIGINT itself)
        assert child.wait(timeout=20) == 0
    finally:
        child.kill()
