"""The suggested recipe as YAML a person reads: every selector with a comment saying what it read.

Written as text (not yaml.dump) so that each field carries the values read on the sample
pages next to it and the top says what to check; the text is then loaded back through
the recipe model, so what is written is a recipe the build accepts.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from tasks.crawl.suggest.explore import Plan

SHOWN = 5  # values shown per field


def _q(value: str) -> str:
    """A YAML scalar in double quotes (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _flow(spec: dict) -> str:
    if list(spec) == ["css"]:
        return _q(spec["css"])
    return "{" + ", ".join(f"{k}: {_q(v)}" for k, v in spec.items()) + "}"


def _shown(values: list[str]) -> str:
    shown = ", ".join(_q(v) if v else "(empty)" for v in values[:SHOWN])
    return shown + (" ..." if len(values) > SHOWN else "")


def dataset_name(start_url: str) -> str:
    host = urlsplit(start_url).hostname or "site"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", host.removeprefix("www.")).strip("-.") or "site"
    return name if name[0].isalnum() else f"site-{name}"


def choose_target(plan: Plan) -> str:
    """The field most likely to be the class: a department or team, else gender, else the first."""
    names = [f.name for f in plan.fields]
    grouped = [n for n in names if re.search(r"department|dept|team|group|faculty|division|unit", n)]
    if grouped:
        return grouped[0]
    return "gender" if "gender" in names else (names[1] if len(names) > 1 else names[0])


def recipe_text(plan: Plan, start_url: str, name: str, contact: str, elapsed: float, pages: int,
                delay: float = 1.0) -> str:
    target = choose_target(plan)
    attributes = [f.name for f in plan.fields if f.name in ("gender", "age") and f.name != target]
    lines = [
        f"# Suggested by `faceset recipe new {start_url}` from {pages} pages read in {elapsed:.0f} s.",
        "# Check before building (`faceset preview` shows what each selector reads):",
        f"#  - target: {target} is the class of the dataset; pick another field if that is what you classify by.",
        "#  - each field's comment shows the values read on the sample pages; delete fields you do not need.",
        "#  - license and description: say what you may do with these images.",
        f"name: {name}",
        f"description: {_q('Portraits from ' + start_url)}",
        "license: \"unknown: ask the image owners\"",
        f"contact: {_q(contact)}    # goes into the crawler's User-Agent",
        f"crawl: {{delay: {delay:g}, concurrency: 2, obey_robots: true}}    # seconds between requests, per site",
        "",
        "sources:",
        f"  - name: {re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}",
        f"    start_urls: [{_q(start_url)}]",
        f"    render: {'true' if plan.render_items else 'false'}" + ("          # the item pages are built by JavaScript"
                                                                   if plan.render_items else ""),
    ]
    if plan.steps:
        lines.append("    follow:")
        for step in plan.steps:
            counts = ", ".join(map(str, step.counts))
            lines.append(f"      - links: {_q(step.links)}    # links matched on the pages read: {counts}; "
                         f"e.g. {step.samples[0]}")
            if step.next_page:
                lines.append(f"        next_page: {_q(step.next_page)}    # the listing's next page")
            if step.render != plan.render_items:
                lines.append(f"        render: {'true' if step.render else 'false'}" +
                             ("    # these pages' links are built by JavaScript" if step.render else ""))
    else:
        lines.append("    follow: []    # the start page holds the items itself")
    if plan.next_page:
        lines.append(f"    next_page: {_q(plan.next_page)}    # the next page of items")
    lines.append("    item:")
    if plan.each:
        lines.append(f"      each: {_q(plan.each)}    # one block per person")
    lines.append(f"      image: {_q(plan.image)}    # the image with one face on each sample"
                 f" (logos and icons left out)")
    lines.append("      fields:")
    for found in plan.fields:
        lines.append(f"        # {found.note}; read: {_shown(found.values)}")
        lines.append(f"        {found.name}: {_flow(found.spec)}")
    lines += [
        "",
        f"target: {target}",
        f"attributes: [{', '.join(attributes)}]",
        "faces: {size: 224, min_face_px: 48, max_faces: 1}",
        "crosscheck: {autotagger: none}    # local: the autotagger checks gender and age labels",
        "finetune: none                    # or a finetune: section to train a classifier",
    ]
    return "\n".join(lines) + "\n"
