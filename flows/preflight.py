"""Checks before work: what the build's later stages will need, checked before its first.

A build that crawls for minutes and then stops because the fine-tuning weights cannot be
downloaded wastes the user's time (issue #20). So `check` looks, in about a second and
without any request to the sites, at what each stage to be run will need: Chromium for
rendered pages, the fine-tuning weights (tasks/finetune/weights.py), the Rekognition
credentials and region (found by boto3's local providers only: no network call), and the
free disk space for the estimated downloads. Every problem found is reported in one
FacesetError, with what to do about each.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks.core.errors import FacesetError
from tasks.core.recipe import Recipe

IMAGE_BYTES = 250_000  # a typical profile photo as stored; used to estimate a crawl's downloads
LOCAL_CREDENTIAL_PROVIDERS = ("container-role", "iam-role")  # these ask a metadata server: left out


def _browser(recipe: Recipe) -> FacesetError | None:
    if not any(s.render or any(f.render for f in s.follow) for s in recipe.sources):
        return None
    from spiders.browser import require_browser

    try:
        require_browser()
    except FacesetError as exc:
        return exc
    return None


def _weights(recipe: Recipe) -> FacesetError | None:
    if recipe.finetune is None:
        return None
    from tasks.finetune.weights import check_weights

    try:
        check_weights(recipe.finetune)
    except FacesetError as exc:
        return exc
    return None


def _credentials(recipe: Recipe) -> FacesetError | None:
    """Rekognition's credentials and region, as boto3 would find them, minus the metadata servers."""
    if recipe.crosscheck.autotagger != "rekognition":
        return None
    import botocore.session

    session = botocore.session.get_session()
    resolver = session.get_component("credential_provider")
    for name in LOCAL_CREDENTIAL_PROVIDERS:
        resolver.remove(name)
    missing = []
    if session.get_credentials() is None:
        missing.append("AWS credentials")
    if not (recipe.crosscheck.region or session.get_config_variable("region")):
        missing.append("an AWS region")
    if not missing:
        return None
    return FacesetError(
        f"crosscheck.autotagger is rekognition, but {' and '.join(missing)} could not be found",
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or run `aws configure`), and crosscheck.region or "
        "AWS_DEFAULT_REGION; or set crosscheck.autotagger: local (no account needed)",
    )


def estimated_download_bytes(recipe: Recipe) -> int:
    """What the crawl's images may take: per source a typical photo per page of its page budget
    (or its item limit, when lower), within the recipe's byte budget."""
    crawl = recipe.crawl
    per_source = min(crawl.max_items_per_source, crawl.page_budget)
    return min(crawl.max_total_bytes, len(recipe.sources) * per_source * IMAGE_BYTES)


def _disk(recipe: Recipe, data_root: str) -> FacesetError | None:
    if data_root.startswith("s3://"):
        return None
    folder = Path(data_root).expanduser().resolve()
    while not folder.exists():
        folder = folder.parent
    free, needed = shutil.disk_usage(folder).free, estimated_download_bytes(recipe)
    if free >= needed:
        return None
    return FacesetError(
        f"{folder} has {free / 1e9:.1f} GB free, but this recipe may download up to about {needed / 1e9:.1f} GB "
        f"of images ({len(recipe.sources)} sources, up to {min(recipe.crawl.max_items_per_source, recipe.crawl.page_budget)} "
        f"images each, ~{IMAGE_BYTES // 1000} kB per image)",
        "free some space, choose another --data-root, or lower crawl.page_budget, crawl.max_items_per_source or "
        "crawl.max_total_bytes",
    )


def check(recipe: Recipe, stages: list[str], data_root: str) -> None:
    """Raise one FacesetError naming every problem that would stop one of `stages` later."""
    checks = [("crawl", lambda: _browser(recipe)), ("fetch", lambda: _disk(recipe, data_root)),
              ("crosscheck", lambda: _credentials(recipe)), ("finetune", lambda: _weights(recipe))]
    problems = [problem for stage, find in checks if stage in stages and (problem := find()) is not None]
    if not problems:
        return
    if len(problems) == 1:
        raise FacesetError(f"the build did not start: {problems[0].message}", problems[0].hint)
    raise FacesetError("the build did not start:" + "".join(f"\n  - {p.message}" for p in problems),
                       "".join(f"\n  - {p.hint}" for p in problems))
