"""`faceset preview`: preview.html opened in real headless Chromium, on a suggested and on a broken recipe.

The suggested recipe's preview shows, per item page, the portrait (decoded by the
browser) with one face and each field's values; a broken one (a links selector that
matches nothing, a regex that never matches, a JavaScript listing read without
rendering) says why, in the crawl diagnosis's words. With FACESET_SCREENSHOTS=1 the
tutorial's test also saves the screenshots docs/first-dataset.md shows, faces blurred.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from sites import shapes
from sites.server import FixtureServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(utkface_dir, request):
    built = shapes.build(request.param, utkface_dir, n=6, per_page=2)
    server = FixtureServer(built.routes).start()
    yield server, built
    server.stop()


def _recipe(server: FixtureServer, tmp_path: Path) -> Path:
    out = tmp_path / "recipe.yaml"
    assert main(["recipe", "new", server.url("/"), "--out", str(out), "--contact", "tests@example.org", "--delay", "0"]) == 0
    return out


@pytest.mark.parametrize("site", ["logos"], indirect=True)
def test_preview_of_a_suggested_recipe_in_chromium(site, tmp_path, chromium) -> None:
    from selenium.webdriver.common.by import By

    server, built = site
    out = tmp_path / "preview.html"
    assert main(["preview", str(_recipe(server, tmp_path)), "--pages", "2", "--out", str(out)]) == 0
    chromium.get(out.as_uri())
    assert "Every selector matched" in chromium.find_element(By.ID, "reasons").text
    steps = chromium.find_elements(By.CSS_SELECTOR, "table.step tr")
    assert "6" in steps[1].text, "the start page's 6 profile links are counted"
    items = chromium.find_elements(By.CSS_SELECTOR, ".item")
    assert len(items) == 2
    for item in items:
        image = item.find_element(By.TAG_NAME, "img")
        assert chromium.execute_script("return arguments[0].naturalWidth", image) > 0, "the portrait is shown"
        assert "1 face" in item.find_element(By.CSS_SELECTOR, "p.faces").text
        assert "/photos/" in item.text and "/campus/" not in item.text
    names = {p.name for p in built.people}
    shown = [row.text for row in chromium.find_elements(By.CSS_SELECTOR, "table.fields tr")]
    assert any(any(name in row for name in names) for row in shown)
    assert any(row.startswith("gender") and ("female" in row or "male" in row) for row in shown)


@pytest.mark.parametrize("site", ["javascript"], indirect=True)
def test_preview_says_why_nothing_matched(site, tmp_path, chromium) -> None:
    from selenium.webdriver.common.by import By

    server, _ = site
    path = _recipe(server, tmp_path)
    recipe = yaml.safe_load(path.read_text())
    source = recipe["sources"][0]
    source["follow"][0].pop("render")  # the JavaScript listing read without rendering
    source["item"]["fields"]["name"] = {"css": source["item"]["fields"]["name"], "regex": "Professor (.+)"}
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "preview.html"
    main(["preview", str(path), "--out", str(out)])
    chromium.get(out.as_uri())
    reasons = chromium.find_element(By.ID, "reasons").text
    assert "follow step 1: the links selector `a.person` matched nothing on the start page" in reasons
    assert "add `render: true` to this step" in reasons
    assert "No item page was read" in chromium.find_element(By.CSS_SELECTOR, "section.source").text
    assert chromium.find_element(By.CSS_SELECTOR, "table.step td.none").text == "0"

    source["follow"][0]["render"] = True
    path.write_text(yaml.safe_dump(recipe))
    main(["preview", str(path), "--out", str(out)])
    chromium.get(out.as_uri())
    reasons = chromium.find_element(By.ID, "reasons").text
    assert "field name: regex `Professor (.+)` never matched" in reasons
    assert "matched nothing" not in reasons


def test_first_dataset_tutorial_on_the_demo_site(utkface_dir, tmp_path, chromium) -> None:
    """docs/first-dataset.md's steps on the demo site: the selectors it quotes are the ones suggested,
    and its screenshots (FACESET_SCREENSHOTS=1) are of this run."""
    from selenium.webdriver.common.by import By

    from flows.demo_site import DemoServer, build_site

    with DemoServer(build_site(utkface_dir, limit=30)) as server:
        recipe_path = tmp_path / "demo-staff.yaml"
        assert main(["recipe", "new", server.url + "/", "--out", str(recipe_path), "--name", "demo-staff",
                     "--contact", "you@example.org", "--delay", "0"]) == 0
        out = tmp_path / "preview.html"
        assert main(["preview", str(recipe_path), "--out", str(out)]) == 0
    recipe = yaml.safe_load(recipe_path.read_text())
    source = recipe["sources"][0]
    tutorial = (REPO / "docs" / "first-dataset.md").read_text()
    quoted = [step["links"] for step in source["follow"]] + [source["item"]["image"], recipe["target"]]
    assert all(f"`{q}`" in tutorial for q in quoted), f"the tutorial quotes what recipe new suggests: {quoted}"
    chromium.set_window_size(1000, 1100)
    chromium.get(out.as_uri())
    assert len(chromium.find_elements(By.CSS_SELECTOR, ".item img")) == 3
    if os.environ.get("FACESET_SCREENSHOTS") == "1":
        # the corpus's faces never go into the repository, not even as pixels of a screenshot
        chromium.execute_script("document.querySelectorAll('img').forEach(i => i.style.filter = 'blur(14px)')")
        chromium.save_screenshot(str(REPO / "docs" / "images" / "first-dataset-preview.png"))
        shown = tmp_path / "recipe.html"  # the YAML as a terminal shows it
        shown.write_text("<body style='margin:0;background:#1e1e1e'><pre style='color:#ddd;font-size:12px;padding:1em;"
                         f"white-space:pre-wrap'>{html.escape(recipe_path.read_text())}</pre></body>")
        chromium.set_window_size(1000, 640)
        chromium.get(shown.as_uri())
        chromium.save_screenshot(str(REPO / "docs" / "images" / "first-dataset-recipe.png"))
