"""A flow-test registry for one row per face: group photos from a JSON list, the real faces,
dedupe, split and export stages, and the small fakes of tests/fakes/flow_stages.py for
the rest (cross-check, fine-tune, report). No tests here: pytest collects nothing.

$FACESET_TEST_SITE names a JSON list of {"file", "name", "label", "gender"}; crawl reads
it, fetch copies each file into images/ as the real fetch stage would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from fakes import flow_stages
from tasks.core import manifest as mf

RECIPE = """\
name: {name}
contact: test@example.org
sources:
  - name: search
    start_urls: ["http://127.0.0.1:1/search?q=staff"]
    item:
      image: "img::attr(src)"
      fields: {{name: "h1::text", label: "p.label::text", gender: "p.g::text"}}
target: label
attributes: [gender]
faces: {{each: true, blur_threshold: 0}}
crosscheck: {{autotagger: none}}
split: {{train: 0.5, val: 0.25, test: 0.25, seed: 3}}
finetune: {{epochs: 1}}
"""


def write_recipe(folder: Path, name: str = "groups") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(RECIPE.format(name=name))
    return path


def crawl(manifest: pd.DataFrame, recipe, paths) -> pd.DataFrame:
    items = json.loads(Path(os.environ["FACESET_TEST_SITE"]).read_text())
    rows = [{"item_id": mf.item_id("http://127.0.0.1:1/search?q=staff", item["file"]), "source": "search",
             "page_url": "http://127.0.0.1:1/search?q=staff", "image_url": Path(item["file"]).as_uri(),
             "crawled_at": "2026-01-01T00:00:00", "status": "kept", "name": item["name"], "label": item["label"],
             "gender": item["gender"]} for item in items]
    return mf.conform(pd.DataFrame(rows), recipe.field_names)


def fetch(manifest: pd.DataFrame, recipe, paths) -> pd.DataFrame:
    out = manifest.copy()
    for i, row in out[mf.kept(out)].iterrows():
        source = Path(row["image_url"].removeprefix("file://"))
        sha = hashlib.sha256(source.read_bytes()).hexdigest()
        target = paths.image_file(sha, "jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        out.loc[i, "sha256"] = sha
        out.loc[i, "image_path"] = str(target.relative_to(paths.root))
    return out


def stages() -> dict[str, SimpleNamespace]:
    """The registry for flows.build.build(stages="fakes.group_site:stages")."""
    import tasks.dedupe
    import tasks.export
    import tasks.faces
    import tasks.split

    fakes = flow_stages.stages()
    return {**fakes, "crawl": SimpleNamespace(run=crawl), "fetch": SimpleNamespace(run=fetch), "faces": tasks.faces,
            "dedupe": tasks.dedupe, "split": tasks.split, "export": tasks.export}
