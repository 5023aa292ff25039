"""Small fake stages for the orchestration tests: real files, real manifests, no network or models.

Every stage logs what it processed to $FACESET_TEST_LOG (one line per call or per row), so
tests can see which stages ran and which images a per-image stage processed. The fake
"site" is a JSON list of items in $FACESET_TEST_SITE; tests add items to it to simulate
a re-crawl that finds new images. $FACESET_TEST_SLEEP slows the faces stage per row, so a
test can kill a build in the middle of it; the image URL in $FACESET_TEST_BROKEN makes it fail;
$FACESET_TEST_PAUSE names a simple stage (export, finetune) that pauses 3 s. No tests here: pytest collects nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from tasks.core import manifest as mf
from tasks.core.parallel import Batching, run_per_image

RECIPE = """\
name: {name}
contact: test@example.org
sources:
  - name: fake
    start_urls: ["http://127.0.0.1:1/index.html"]
    item:
      image: "img::attr(src)"
      fields: {{name: "h1::text", label: "p.label::text", gender: "p.g::text"}}
target: label
attributes: [gender]
crosscheck: {{autotagger: none}}
finetune: {{epochs: {epochs}}}
"""


def write_recipe(folder: Path, name: str = "fakeset", epochs: int = 1) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(RECIPE.format(name=name, epochs=epochs))
    return path


def write_site(path: Path, count: int, start: int = 0) -> None:
    """The fake site: `count` items, every 7th one without a face."""
    items = [{"image_url": f"http://site/img/{i}.jpg" + ("?noface" if i % 7 == 3 else ""),
              "name": f"person {i}", "label": ("cs", "econ")[i % 2], "gender": ("female", "male")[i % 3 % 2]}
             for i in range(start, start + count)]
    path.write_text(json.dumps(items))


def _log(*parts: str) -> None:
    log = os.environ.get("FACESET_TEST_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(" ".join(parts) + "\n")


def _report(paths, stage: str, summary: dict) -> None:
    paths.report_json(stage).write_text(json.dumps(summary))


def crawl(manifest: pd.DataFrame, recipe, paths) -> pd.DataFrame:
    _log("crawl")
    items = json.loads(Path(os.environ["FACESET_TEST_SITE"]).read_text())
    seen = set(manifest["item_id"])
    rows = []
    for item in items:
        page = item["image_url"].replace("/img/", "/page/")
        iid = mf.item_id(page, item["image_url"])
        if iid not in seen:
            rows.append({"item_id": iid, "source": "fake", "page_url": page, "image_url": item["image_url"],
                         "crawled_at": "2026-01-01T00:00:00", "status": "kept", "name": item["name"],
                         "label": item["label"], "gender": item["gender"]})
    new = mf.conform(pd.DataFrame(rows), recipe.field_names) if rows else manifest.iloc[0:0]
    out = pd.concat([manifest, new], ignore_index=True) if len(manifest) else mf.conform(new, recipe.field_names)
    _report(paths, "crawl", {"pages": len(items), "items": len(out), "new": len(rows)})
    return out


def fetch(manifest: pd.DataFrame, recipe, paths) -> pd.DataFrame:
    _log("fetch")
    out = manifest.copy()
    for i, row in out[mf.kept(out)].iterrows():  # like tasks.fetch: the images of kept rows only
        sha = hashlib.sha256(row["image_url"].encode()).hexdigest()
        target = paths.image_file(sha, "jpg")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(row["image_url"].encode() * 10)
        out.loc[i, "sha256"] = sha
        out.loc[i, "image_path"] = str(target.relative_to(paths.root))
    return out


def faces_batch(rows: pd.DataFrame, recipe, paths) -> pd.DataFrame:
    out = rows.copy()
    delay = float(os.environ.get("FACESET_TEST_SLEEP", "0"))
    broken = os.environ.get("FACESET_TEST_BROKEN", "")
    for i, row in out.iterrows():
        time.sleep(delay)
        if row["image_url"] == broken:
            raise ValueError("cannot read JPEG header")
        _log("faces-row", row["item_id"])
        if "noface" in row["image_url"]:
            out.loc[i, "status"] = "quarantined"
            out.loc[i, "reason"] = "no face"
            continue
        crop = paths.faces / f"{row['item_id']}.jpg"
        data = (paths.root / row["image_path"]).read_bytes()[:64]
        tmp = crop.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, crop)
        out.loc[i, "face_path"] = str(crop.relative_to(paths.root))
        out.loc[i, "face_score"] = 0.5 + (int(row["sha256"][:2], 16) / 512)
    return out


def faces_summary(manifest: pd.DataFrame, recipe, paths) -> dict:
    summary = {"kept": int(mf.kept(manifest).sum()),
               "reasons": {str(k): int(v) for k, v in manifest["reason"].value_counts().items()}}
    _report(paths, "faces", summary)
    return summary


def faces_run(manifest, recipe, paths, mapper=None):
    """Like tasks.faces.run: the real per-image skeleton over kept rows, in batches of 4."""
    return _per_image(manifest, recipe, paths, mapper, faces_batch, faces_summary, 4,
                      ["status", "reason", "face_path", "face_score"])


def _per_image(manifest, recipe, paths, mapper, batch_fn, summary_fn, size, columns):
    return run_per_image(manifest, mf.kept, functools.partial(batch_fn, recipe=recipe, paths=paths),
                         lambda out, _: summary_fn(out, recipe, paths), columns=columns,
                         batching=Batching(size, size), mapper=mapper,
                         typed=functools.partial(mf.conform, fields=recipe.field_names))


def crosscheck_batch(rows: pd.DataFrame, recipe, paths) -> pd.DataFrame:
    out = rows.copy()
    delay = float(os.environ.get("FACESET_TEST_SLEEP", "0"))
    for i, row in out.iterrows():
        time.sleep(delay)
        _log("crosscheck-row", row["item_id"])
        out.loc[i, "autotag_gender"] = row["gender"]
        out.loc[i, "crosscheck"] = "agree"
    return out


def crosscheck_run(manifest, recipe, paths, mapper=None):
    return _per_image(manifest, recipe, paths, mapper, crosscheck_batch, crosscheck_summary, 8,
                      ["autotag_gender", "crosscheck"])


def crosscheck_summary(manifest, recipe, paths) -> dict:
    """Like tasks.crosscheck: the figures, and a review page that shows kept faces by name."""
    summary = {"agreement": {"agree": int((manifest["crosscheck"] == "agree").sum())}}
    _report(paths, "crosscheck", summary)
    kept = manifest[mf.kept(manifest)]
    paths.review_html.write_text("".join(f"<p>{r.name} <img src='../{r.face_path}'></p>" for r in kept.itertuples()))
    return summary


def _pause(stage: str) -> None:
    if os.environ.get("FACESET_TEST_PAUSE") == stage:
        time.sleep(3)


def export_run(manifest: pd.DataFrame, recipe, paths) -> pd.DataFrame:
    """Like tasks.export: one file per kept face under splits/<split>/<label>/, the tree finetune reads."""
    _log("export")
    _pause("export")
    out = manifest.copy()
    out["exported"] = pd.Series([f"export:{v}" for v in out["item_id"]], index=out.index, dtype="string")
    for row in out[mf.kept(out) & out["split"].notna()].itertuples():
        target = paths.splits / row.split / row.label / f"{row.item_id}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((paths.root / row.face_path).read_bytes())
    _report(paths, "export", {"rows": len(out), "kept": int(mf.kept(out).sum())})
    return out


def finetune_run(manifest: pd.DataFrame, recipe, paths) -> pd.DataFrame:
    """Like tasks.finetune: reads the exported tree (not the manifest), writes models/."""
    _log("finetune")
    _pause("finetune")
    counts = {split.name: sum(1 for _ in split.rglob("*.jpg")) for split in sorted(paths.splits.iterdir())}
    (paths.models / "fake-model.json").write_text(json.dumps({"epochs": recipe.finetune.epochs, "images": counts}))
    tested = sorted(p.stem for p in (paths.splits / "test").rglob("*.jpg")) if (paths.splits / "test").is_dir() else []
    (paths.models / "predictions.csv").write_text("item_id\n" + "".join(f"{item}\n" for item in tested))
    _report(paths, "finetune", {"epochs": recipe.finetune.epochs, "images": counts})
    return manifest


def dedupe_run(manifest, recipe, paths):
    _log("dedupe")
    out = manifest.copy()
    out["phash"] = out["sha256"].str[:16]
    _report(paths, "dedupe", {"duplicates": 0})
    return out


def split_run(manifest, recipe, paths):
    _log("split")
    out = manifest.copy()
    seed = recipe.split.seed
    rank = out["item_id"].map(lambda s: int(hashlib.sha256(f"{seed}:{s}".encode()).hexdigest()[:4], 16) % 10)
    out["split"] = pd.Series(["train" if r < 7 else "val" if r < 9 else "test" for r in rank], index=out.index,
                             dtype="string").where(mf.kept(out), pd.NA)
    _report(paths, "split", {"counts": {k: int(v) for k, v in out["split"].value_counts().items()}})
    return out


def report_run(manifest, recipe, paths):
    _log("report")
    (paths.reports / "report.html").write_text(f"<h1>{recipe.name}</h1><p>{len(manifest)} rows</p>")
    return manifest


def stages() -> dict[str, SimpleNamespace]:
    """The registry the tests pass to flows.build.build(stages=...)."""
    return {
        "crawl": SimpleNamespace(run=crawl),
        "fetch": SimpleNamespace(run=fetch),
        "faces": SimpleNamespace(run=faces_run, process_batch=faces_batch, summarize=faces_summary),
        "dedupe": SimpleNamespace(run=dedupe_run),
        "crosscheck": SimpleNamespace(run=crosscheck_run, process_batch=crosscheck_batch, summarize=crosscheck_summary),
        "split": SimpleNamespace(run=split_run),
        "export": SimpleNamespace(run=export_run),
        "finetune": SimpleNamespace(run=finetune_run),
        "report": SimpleNamespace(run=report_run),
    }


def dedupe_people_run(manifest, recipe, paths):
    """Like fake dedupe, with the face descriptors' person groups: persons 0 and 1 look alike
    (one group), persons 2 and 3 too, and so on."""
    out = dedupe_run(manifest, recipe, paths)
    number = out["name"].str.extract(r"(\d+)$", expand=False).astype("Int64")
    out["person_group"] = ("look-" + (number // 2).astype("string")).where(mf.kept(out)).astype("string")
    return out


def reviewed_stages() -> dict[str, SimpleNamespace]:
    """The fake stages up to dedupe (with person groups) and for finetune and report, and the
    real cross-check, split and export: the stages that honour review decisions."""
    import tasks.crosscheck
    import tasks.export
    import tasks.split

    return {**stages(), "dedupe": SimpleNamespace(run=dedupe_people_run), "crosscheck": tasks.crosscheck,
            "split": tasks.split, "export": tasks.export}
