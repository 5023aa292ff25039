"""A suggested recipe from a start URL (`faceset recipe new`): selectors found by reading a few pages.

`suggest` fetches politely (fetcher), walks from the start page to the portraits
(explore, links, portrait), reads candidate fields (fields) and writes a commented
recipe (writer) that the recipe model accepts as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

from spiders.settings import user_agent
from tasks.core.errors import FacesetError
from tasks.core.recipe import FacesConfig, Recipe, parse_recipe
from tasks.core.urls import UrlPolicy, check_url, host_of, url_policy
from tasks.crawl.suggest.explore import Plan, explore
from tasks.crawl.suggest.fetcher import Budget, Fetcher, browser_missing
from tasks.crawl.suggest.portrait import FaceCount, FaceCounter
from tasks.crawl.suggest.writer import dataset_name, recipe_text


@dataclass
class Suggestion:
    text: str
    plan: Plan
    pages: list[str]
    seconds: float


def _policy_recipe(start_url: str, contact: str) -> Recipe:
    """A minimal recipe for the start URL: the URL policy and the User-Agent come from it."""
    return Recipe.model_validate({"name": "suggest", "contact": contact, "target": "x",
                                  "sources": [{"name": "s", "start_urls": [start_url],
                                               "item": {"image": "img", "fields": {"x": "h1"}}}]})


def suggest(start_url: str, contact: str, faces: FaceCount, render: str = "auto", name: str | None = None, *,
            delay: float = 0.5, pages: int = 15, today: date | None = None) -> Suggestion:
    """A complete recipe for the site at `start_url`, or a FacesetError saying what was not found.
    `faces` counts the faces in an image (flows/commands/recipe.py's `face_count`)."""
    why = check_url(start_url, UrlPolicy.allowing([host_of(start_url)]))
    if why:
        raise FacesetError(f"{start_url}: {why}", "give the http(s) address of the site's directory page")
    if render == "yes" and (missing := browser_missing()) is not None:
        raise missing
    if render == "auto" and browser_missing() is not None:
        render = "no"
    base = _policy_recipe(start_url, contact)
    config = FacesConfig()
    started = time.monotonic()
    with Fetcher(user_agent(base), url_policy(base), frozenset({host_of(start_url)}), delay=delay,
                 timeout=base.crawl.timeout / 2, budget=Budget(pages=pages)) as fetcher:
        counter = FaceCounter(fetcher, faces, config)
        plan, notes = explore(fetcher, counter, start_url, render, today or date.today())
        read = list(fetcher.budget.fetched_pages)
    seconds = time.monotonic() - started
    if plan is None or not plan.fields:
        said = "; ".join(notes[:3])
        raise FacesetError(
            f"no portraits found from {start_url} on the {len(read)} pages read" + (f" ({said})" if said else ""),
            "start from the page that lists the people (a directory, a team page); if the site needs JavaScript, "
            "try --render yes; or write the recipe by hand (docs/recipe-reference.md)")
    text = recipe_text(plan, start_url, name or dataset_name(start_url), contact, seconds, len(read), max(delay, 0.0))
    parse_recipe(yaml.safe_load(text), Path("suggested.yaml"))  # what is written must load
    return Suggestion(text, plan, read, seconds)
