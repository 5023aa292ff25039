"""DATASET_CARD.md: the document that lets a reviewer judge a dataset without the code.

Written by the export stage from the manifest, the recipe and the stage reports, in
plain Markdown: purpose, sources and crawl dates, the recipe, the funnel from found to
kept with the reasons behind every drop, label and attribute distributions per split,
the cross-check agreement, license and contact, known gaps, and how to request removal.
Every number is computed from the manifest the card sits beside, so the two never
disagree; the funnel and the distributions by the same code as reports/report.html
(tasks.core.funnel), so the card and the report never disagree either.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tasks.core.atomic import write_text
from tasks.core.binning import MIN_GROUP, TOO_FEW, UNKNOWN, field_labels
from tasks.core.funnel import distribution, dropped, fold_reason, funnel, split_columns, thin
from tasks.core.manifest import KEPT
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe, Source
from tasks.core.reports import read_report
from tasks.core.text import md_block, md_code, md_text

THIN_SHOWN = 12  # thin combinations named in the card, thinnest first


def md_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A Markdown table of literal text (labels and reasons come from the web: no HTML, link
    or formatting in them is rendered); numbers right-aligned."""
    if not rows:
        return "_none_\n"
    columns = columns or list(rows[0])

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.1%}" if 0 <= value <= 1 else f"{value:.3g}"
        return md_text(value)

    align = ["---:" if all(isinstance(r.get(c), (int, float)) for r in rows) else "---" for c in columns]
    lines = ["| " + " | ".join(map(md_text, columns)) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- other sections


def _origin(source: Source) -> str:
    """Where a source's images came from, as a reader of the card needs it."""
    if source.urls:
        return f"the URL list {source.urls}"
    if source.folder:
        return f"the local folder {source.folder}"
    pages = ", ".join(source.start_urls)
    return f"{pages} (queries: {', '.join(source.queries)})" if source.queries else pages


def sources(manifest: pd.DataFrame, recipe: Recipe) -> list[dict[str, Any]]:
    rows = []
    for source in recipe.sources:
        mine = manifest[manifest["source"] == source.name]
        dates = mine["crawled_at"].dropna().astype(str)
        rows.append({
            "source": source.name,
            "from": _origin(source),
            "candidates": len(mine),
            "kept": int((mine["status"] == KEPT).sum()),
            "crawled": f"{dates.min()[:10]} to {dates.max()[:10]}" if len(dates) else "not crawled",
        })
    return rows


def _scalars(data: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """Top-level numbers of a stage report, for showing without knowing its layout."""
    found: list[tuple[str, Any]] = []
    if isinstance(data, dict) and depth < 2:
        for key, value in data.items():
            if isinstance(value, (int, float, str)) and not isinstance(value, bool) and len(str(value)) < 80:
                found.append((f"{prefix}{key}", value))
            elif isinstance(value, dict):
                found += _scalars(value, f"{prefix}{key}.", depth + 1)
    return found


def crosscheck(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> str:
    """Agreement between the crawled labels and the autotagger, from the manifest and
    reports/crosscheck.json when the cross-check ran."""
    checked = manifest["crosscheck"].dropna() if "crosscheck" in manifest.columns else pd.Series(dtype=object)
    if checked.empty:
        return f"The cross-check did not run (autotagger: {recipe.crosscheck.autotagger}).\n"
    counts = checked.value_counts()
    agree, disagree = int(counts.get("agree", 0)), int(counts.get("disagree", 0))
    text = (f"Of {len(checked)} images compared with the autotagger ({recipe.crosscheck.autotagger}), "
            f"{agree} agree, {disagree} disagree and {int(counts.get('skipped', 0))} were skipped")
    text += f"{_agreement(agree, agree + disagree)}.\n"
    text += _trust(paths)
    if disagree:
        text += (f"On disagreement the recipe says `{recipe.crosscheck.on_disagreement}`: disagreeing images were "
                 + ("dropped.\n" if recipe.crosscheck.on_disagreement == "drop" else "kept and flagged in the manifest (`crosscheck`).\n"))
        reasons = manifest.loc[manifest["crosscheck"] == "disagree", "crosscheck_reason"].dropna().astype(str)
        fields = reasons.str.split(";").explode().str.strip().map(lambda r: r.split(":")[0] if ":" in r else fold_reason(r))
        why = fields[fields != ""].value_counts().head(8)
        text += "\n" + md_table([{"disagreement on": r, "images": int(n)} for r, n in why.items()])
    report = paths.report_json("crosscheck")
    if report.is_file():
        try:
            figures = _scalars(json.loads(report.read_text(encoding="utf-8")))[:30]
        except ValueError:
            figures = []
        if figures:
            text += "\nFrom `reports/crosscheck.json`:\n\n" + md_table([{"figure": k, "value": v} for k, v in figures])
    return text


def reviewed(paths: DatasetPaths) -> str:
    """What people decided in review (decisions.csv), as the cross-check applied it
    (reports/crosscheck.json): labels changed per field and reviewer, faces dropped."""
    decided = (read_report(paths, "crosscheck") or {}).get("decisions") or {}
    if not decided.get("holding"):
        return ("No review decisions (`decisions.csv`): the labels are as crawled, and the faces kept or dropped "
                "as the build decided.\n")
    changed = decided.get("labels_changed", {})
    text = (f"Reviewers changed **{decided.get('labels_changed_total', 0)}** labels and excluded "
            f"**{decided.get('excluded', 0)}** faces (reason `reviewer: ...`); a changed label keeps the crawled value "
            "in `<field>_crawled`. Decisions that hold: "
            + ", ".join(f"{md_text(a)} {n}" for a, n in decided.get("applied", {}).items()) + ".\n")
    if changed:
        text += "\n" + md_table([{"field": field, "reviewer": who, "labels changed": n}
                                 for field, people in changed.items() for who, n in people.items()])
    if decided.get("unknown_items"):
        text += (f"\n{len(decided['unknown_items'])} decisions name items this build does not have; they stay in "
                 "`decisions.csv` and are listed in `reports/crosscheck.json`.\n")
    return text


def _agreement(agree: int, compared: int) -> str:
    """The agreement rate with its 95% interval, or that too few faces were compared to give one.
    Agreement is not accuracy: neither the tagger nor the crawled labels are known right."""
    from statsmodels.stats.proportion import proportion_confint

    if compared < MIN_GROUP:
        return f"; too few compared ({compared}, fewer than {MIN_GROUP}) to judge how often they agree"
    low, high = proportion_confint(agree, compared, method="wilson")
    return f": they agree on {agree / compared:.0%} (95% interval {low:.0%} to {high:.0%}); agreement is not accuracy"


def _report(paths: DatasetPaths, stage: str) -> dict[str, Any]:
    path = paths.report_json(stage)
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        return {}


def _trust(paths: DatasetPaths) -> str:
    """What the flags mean, as measured (reports/crosscheck.json `flag_trust`, `threshold`), the
    scores against gold labels (reports/validation.json) and the machine labels (label_from)."""
    summary, checked = _report(paths, "crosscheck"), _report(paths, "validation")
    lines = [entry["says"] for entry in summary.get("flag_trust", {}).values()]
    lines += [entry["says"] for entry in summary.get("threshold", {}).values()]
    text = "".join(f"- {md_text(line)}\n" for line in lines)
    if checked.get("gold_faces"):
        rows = []
        for field, figures in checked.get("fields", {}).items():
            for name, score in figures.get("sources", {}).items():
                rate = score.get("accuracy", score.get("within_margin", score.get("recall")))
                rows.append({"field": field, "labels from": name, "gold faces": score.get("n", 0),
                             "accuracy": "too few to judge" if score.get("too_few_to_judge") or rate is None else rate})
        text += (f"\nAgainst **{checked['gold_faces']}** hand-labelled faces (gold labels, `reports/validation.json`; "
                 "ages: within the margin):\n\n" + md_table(rows))
    else:
        text += ("\nNo gold labels yet: how right the crawled labels, the tagger and its flags are is not measured "
                 "(`faceset labels import`, or the review app's validation sample; docs/validation.md).\n")
    if checked.get("label_from"):
        text += f"\nMachine labels: {md_text(checked['label_from']['says'])}.\n"
    return text


def gaps(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> list[str]:
    """What a user of the data should know is thin or missing."""
    found = []
    rows = manifest[manifest["status"] == KEPT]
    if rows.empty:
        return ["No image was kept."]
    target = field_labels(manifest, recipe.target, recipe).loc[rows.index]
    for label, n in target.value_counts().items():
        if n < MIN_GROUP:
            found.append(f"class {md_code(label)} has only {n} kept image{'s' if n != 1 else ''}")
    for attribute in recipe.attributes:
        if attribute not in rows.columns:
            continue
        values = field_labels(manifest, attribute, recipe).loc[rows.index]
        unknown = int((values == UNKNOWN).sum())
        if unknown:
            found.append(f"{attribute} is unknown for {unknown} of {len(rows)} kept images ({unknown / len(rows):.0%})")
        table = pd.crosstab(target, values).drop(columns=[UNKNOWN], errors="ignore").stack().sort_values(kind="stable")
        few = [md_text(f"{label} with {value} ({n})") for (label, value), n in table.items() if n < MIN_GROUP]
        if few:
            found.append(f"{len(few)} combinations of `{recipe.target}` and `{attribute}` have fewer than {MIN_GROUP} images: "
                         + "; ".join(few[:THIN_SHOWN]) + (f"; and {len(few) - THIN_SHOWN} more" if len(few) > THIN_SHOWN else ""))
    report = paths.report_json("split")
    if report.is_file():
        for warning in json.loads(report.read_text(encoding="utf-8")).get("warnings", []):
            found.append(f"split: {md_text(warning)}")
    return found


# ---------------------------------------------------------------- the card


def recipe_block(recipe: Recipe) -> str:
    """The recipe as YAML, defaults left out, except the fine-tune's: its model, weights and every
    setting the default preset filled in are written, so the block rebuilds what was trained even
    after faceset's defaults change."""
    data = recipe.model_dump(mode="json", exclude_defaults=True)
    if recipe.finetune is not None:
        data["finetune"] = recipe.finetune.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def render(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> str:
    kept_rows = manifest[manifest["status"] == KEPT]
    steps = funnel(manifest)
    recipe_yaml = recipe_block(recipe)
    columns = split_columns(manifest, recipe)
    split_report = json.loads(paths.report_json("split").read_text(encoding="utf-8")) if paths.report_json("split").is_file() else {}
    out = [
        f"# Dataset card: {recipe.name}\n",
        f"_Generated by faceset on {datetime.now(timezone.utc):%Y-%m-%d} from `manifest.parquet` "
        f"({len(manifest)} candidates, {len(kept_rows)} kept)._\n",
        "## Purpose\n",
        (recipe.description or "_The recipe gives no description._") + "\n",
        f"Each image is a face crop labelled with `{recipe.target}` (the class: one folder per value)"
        + (f" and the attributes {', '.join(f'`{a}`' for a in recipe.attributes)}" if recipe.attributes else "")
        + ". Labels come from the web pages the images were found on, as the recipe reads them; they are the "
        "pages' claims, checked against an autotagger where the cross-check ran (see below), not ground truth.\n",
        "## Sources and crawl dates\n",
        md_table(sources(manifest, recipe)),
        "## Funnel: from found to kept\n",
        "Every candidate keeps its row in the manifest with a `status` and a `reason`; the counts below are "
        "computed from it.\n",
        md_table(steps, ["step", "images", "dropped", "why"]),
        f"Removed on request (takedown): **{dropped(steps, 'removed on request')}** images; none of their files is "
        "in any output.\n",
        "## Splits\n",
        _splits_text(recipe, split_report),
    ]
    for name, column in columns.items():
        folder = "splits/" if column == "split" else f"variants/{name}/"
        out.append(f"### {name} (`{folder}`, manifest column `{column}`)\n")
        for field in dict.fromkeys([recipe.target, *recipe.attributes]):
            out.append(_distribution_text(distribution(manifest, field, recipe, column), field))
    out += [
        "## Cross-check agreement\n",
        crosscheck(manifest, recipe, paths),
        "## Review decisions\n",
        reviewed(paths),
        "## Known gaps\n",
        "\n".join(f"- {g}" for g in gaps(manifest, recipe, paths)) or "_none found_",
        "\n## License and contact\n",
        f"- License: {recipe.license}\n- Contact: {recipe.contact}\n",
        "## How to request removal\n",
        f"Anyone shown in this dataset can ask for an image to be removed by writing to {recipe.contact} with the "
        "image, the page it was on, or the name it was published under. The maintainer runs\n\n"
        "```\nfaceset takedown add <image URL | page URL | name | image file> --data-root <data root>\n```\n\n"
        "which puts it on the takedown list kept with the data (`takedowns.json` in the data root). Its files are "
        "removed at once from `images/`, `faces/`, `quarantine/`, `splits/` and `variants/`, and every later build "
        "excludes it (status `excluded`, reason `takedown`) before anything is downloaded again; an image file is "
        "matched by perceptual hash, so resized and mirrored copies go too.\n",
        "## Files and how to load them\n",
        "- `splits/<split>/<class>/<item_id>.jpg`: "
        "`torchvision.datasets.ImageFolder(\"splits/train\", allow_empty=True)` or "
        "`keras.utils.image_dataset_from_directory(\"splits/train\")`.\n"
        "- `splits/classes.json`: the class numbers (`class_to_idx`), the same for every split; every split holds a "
        "folder for every class, empty where the split has none of its images, so folder-based loaders agree with it.\n"
        "- `splits/<split>/metadata.jsonl` (file_name, label, attributes): "
        "`datasets.load_dataset(\"imagefolder\", data_dir=\"splits\")`.\n"
        "- `variants/<name>/...`: the same layout for each variant.\n"
        "- `manifest.parquet` / `manifest.csv`: every candidate with provenance, labels, status and reason.\n"
        "- `manifest_share.csv`: what can be shared without the images (URLs, sha256, labels, splits); "
        "`faceset hydrate manifest_share.csv OUT_DIR` downloads and verifies the images again.\n",
        "## Recipe\n",
        "The recipe this dataset was built from (settings left at their defaults are not shown):\n",
        md_block(recipe_yaml, "yaml"),
    ]
    return "\n".join(out)


def _distribution_text(rows: list[dict[str, Any]], field: str) -> str:
    """A distribution table, then the groups too small for any figure about them to mean much."""
    few = thin(rows, field)
    if not few:
        return md_table(rows)
    return md_table(rows) + f"\n_{TOO_FEW.capitalize()} (fewer than {MIN_GROUP} images): {', '.join(map(md_text, few))}._\n"


def _splits_text(recipe: Recipe, report: dict[str, Any]) -> str:
    split = recipe.split
    text = (f"Ratios train {split.train:.0%}, val {split.val:.0%}, test {split.test:.0%}, seed {split.seed}, stratified "
            f"on {', '.join(f'`{f}`' for f in dict.fromkeys([recipe.target, *split.stratify]))} jointly (numbers binned). "
            "Images of one person (same `person_group`, or the same name at one source"
            + (f", or the same `{split.group_by}`" if split.group_by else "")
            + ") and near-copies (same `dup_group`) are always in the same split, so no test image has a relative "
            "in training.")
    original = report.get("variants", {}).get("original")
    if original:
        worst = original.get("largest_deviation_where_size_allows", {})
        tolerance = f"{100 * original.get('tolerance', 0.02):g}"
        leaks = sum(original.get("leaks", {}).values())
        text += (" Achieved shares: " + ", ".join(f"{s} {v:.1%}" for s, v in original.get("share", {}).items())
                 + "; " + (f"among strata large enough to come within {tolerance} points of the ratios, the furthest "
                           f"off is {md_text(worst['stratum'])} ({worst['split']}, {worst['deviation']:.1%} off)"
                           if worst.get("stratum") else f"every stratum large enough to come within {tolerance} points "
                           "of the ratios does")
                 + f"; groups found in more than one split: {leaks}.")
    if report.get("kept_from_previous_build") or report.get("moved_since_previous_build"):
        text += (f" Rebuilt with unchanged split settings: {report['kept_from_previous_build']} images kept the split "
                 f"of the previous build and {report['moved_since_previous_build']} moved because a new image joined "
                 "their group to one in another split.")
    for variant in recipe.split.variants:
        if variant.kind == "balanced":
            text += (f"\n\nVariant `{variant.name}` (balanced): down-sampled so that every combination of "
                     f"{', '.join(variant.by) or 'the stratification fields'} has the same number of images"
                     + (f" within each {', '.join(variant.within)}" if variant.within else "") + ".")
        else:
            text += (f"\n\nVariant `{variant.name}` (biased): in train and val, {variant.strength:.0%} of each class's "
                     f"images carry the `{variant.attribute}` value paired with the class; the images left over "
                     "(mostly the opposite pairing) are the test set, to measure how much a model relies on "
                     f"`{variant.attribute}`.")
    return text + "\n"


def write(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> Path:
    """Write DATASET_CARD.md beside the manifest (atomically)."""
    write_text(paths.card, render(manifest, recipe, paths))
    return paths.card
