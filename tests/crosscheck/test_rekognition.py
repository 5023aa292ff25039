"""The Rekognition tagger: plumbing over real HTTP, parsing of documented responses.

moto implements DetectLabels (a canned "Mobile Phone" answer) but not DetectFaces or
RecognizeCelebrities. So:
- endpoint, retries on throttling, the client-side rate limit and the response cache
  are tested against a real `moto_server` process on 127.0.0.1, behind a small proxy
  that counts requests and can answer ThrottlingException first;
- DetectFaces and RecognizeCelebrities parsing, the call budget and the cost estimate
  are tested through botocore's Stubber with responses shaped as AWS documents them.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest
from botocore.stub import ANY, Stubber
from builders import make_recipe
from PIL import Image

from tasks.crosscheck import stage as crosscheck
from tasks.core import manifest as mf
from tasks.crosscheck.autotag import MAX_IMAGE_BYTES, RekognitionTagger, image_payload, price_usd
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe

# Shaped as in the Rekognition developer guide's DetectFaces and RecognizeCelebrities examples.
DETECT_FACES = {
    "FaceDetails": [{
        "BoundingBox": {"Width": 0.7919622659683228, "Height": 0.7919622659683228, "Left": 0.1, "Top": 0.1},
        "AgeRange": {"Low": 25, "High": 35},
        "Gender": {"Value": "Female", "Confidence": 99.82},
        "Landmarks": [{"Type": "eyeLeft", "X": 0.36, "Y": 0.44}],
        "Pose": {"Roll": -5.0, "Yaw": 4.1, "Pitch": 1.2},
        "Quality": {"Brightness": 81.2, "Sharpness": 92.2},
        "Confidence": 99.99,
    }, {
        "BoundingBox": {"Width": 0.05, "Height": 0.05, "Left": 0.9, "Top": 0.9},
        "AgeRange": {"Low": 50, "High": 60},
        "Gender": {"Value": "Male", "Confidence": 70.0},
        "Confidence": 80.0,
    }],
    "OrientationCorrection": "ROTATE_0",
}
CELEBRITIES = {
    "CelebrityFaces": [{
        "Urls": ["www.imdb.com/name/nm1682433"], "Name": "Jane Example", "Id": "3Ir0du6",
        "Face": {"BoundingBox": {"Width": 0.55, "Height": 0.55, "Left": 0.2, "Top": 0.2}, "Confidence": 99.9,
                 "Pose": {"Roll": 2.0, "Yaw": 1.0, "Pitch": 0.5}, "Quality": {"Brightness": 70.0, "Sharpness": 90.0}},
        "MatchConfidence": 98.0, "KnownGender": {"Type": "Female"},
    }],
    "UnrecognizedFaces": [],
}


def face(path: Path, shade: int = 120, size: int = 96) -> Path:
    Image.fromarray(np.full((size, size, 3), shade, np.uint8)).save(path, "JPEG")
    return path


def recipe_of(**section) -> Recipe:
    """The test recipe with Rekognition (us-east-1) as autotagger and these crosscheck keys."""
    return make_recipe("rk", fields=("label", "gender", "age", "name"), sources=("s",),
                       crosscheck={"autotagger": "rekognition", "region": "us-east-1", **section})


def frame_of(paths: DatasetPaths, rows: list[dict]) -> pd.DataFrame:
    records = []
    for i, row in enumerate(rows):
        face(paths.faces / f"r{i}.jpg", shade=30 + 20 * i)
        records.append({"item_id": f"r{i}", "source": "s", "page_url": f"http://127.0.0.1/{i}", "status": "kept",
                        "face_path": f"faces/r{i}.jpg", **row})
    return mf.conform(pd.DataFrame(records), ["label", "gender", "age", "name"])


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def stubbed(cache: Path, **kwargs) -> tuple[RekognitionTagger, Stubber]:
    client = boto3.client("rekognition", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    stubber = Stubber(client)
    stubber.activate()
    return RekognitionTagger(cache, client=client, **kwargs), stubber


# ---------------------------------------------------------------- parsing (Stubber)


def test_detect_faces_and_celebrities_parsed_and_cached(tmp_path):
    image = face(tmp_path / "a.jpg")
    tagger, stubber = stubbed(tmp_path / "cache", celebrities=True)
    stubber.add_response("detect_faces", DETECT_FACES, {"Image": {"Bytes": ANY}, "Attributes": ["AGE_RANGE", "GENDER"]})
    stubber.add_response("recognize_celebrities", CELEBRITIES, {"Image": {"Bytes": ANY}})
    tags = tagger.tag([image])[0]
    stubber.assert_no_pending_responses()
    # The largest face counts; Rekognition's range is kept as midpoint and width.
    assert (tags.gender, tags.gender_confidence, tags.age, tags.age_width) == ("female", 99.82, 30.0, 10.0)
    assert (tags.celebrity, tags.celebrity_confidence) == ("Jane Example", 98.0)
    assert tagger.calls == 2
    # A second tagger (a rebuild) answers from the cache: no stubbed response is left,
    # so any call would fail the test.
    again, _ = stubbed(tmp_path / "cache", celebrities=True)
    assert again.tag([image])[0] == tags and again.calls == 0
    assert again.missing_calls([image]) == 0


def test_no_face_and_service_errors_become_reasons(tmp_path, aws_env):
    paths = DatasetPaths.create(tmp_path / "ds")
    frame = frame_of(paths, [{"gender": "female"}, {"gender": "male"}])
    tagger, stubber = stubbed(paths.state / "rekognition")
    stubber.add_response("detect_faces", {"FaceDetails": []}, {"Image": {"Bytes": ANY}, "Attributes": ["AGE_RANGE", "GENDER"]})
    stubber.add_client_error("detect_faces", "InvalidImageFormatException", "Request has invalid image format")
    out = crosscheck.run(frame, recipe_of(fields={"gender": "gender"}), paths, tagger=tagger).set_index("item_id")
    assert out.loc["r0", "crosscheck"] == "skipped" and out.loc["r0", "crosscheck_reason"] == "gender: tagger found no face"
    assert out.loc["r1", "crosscheck_reason"] == "gender: Rekognition error: InvalidImageFormatException: Request has invalid image format"
    # The next build asks again for the face the service failed on, and only for it.
    retry, stubber = stubbed(paths.state / "rekognition")
    stubber.add_response("detect_faces", DETECT_FACES, {"Image": {"Bytes": ANY}, "Attributes": ["AGE_RANGE", "GENDER"]})
    again = crosscheck.run(out.reset_index(), recipe_of(fields={"gender": "gender"}), paths, tagger=retry).set_index("item_id")
    stubber.assert_no_pending_responses()
    assert retry.calls == 1
    assert again.loc["r1", "crosscheck_reason"] == "gender: crawled male, tagger female (99%)"


def test_budget_stops_before_overspending_and_dry_run_estimate(tmp_path, aws_env):
    paths = DatasetPaths.create(tmp_path / "ds")
    frame = frame_of(paths, [{"gender": "female", "age": "30"} for _ in range(4)])
    recipe = recipe_of(fields={"gender": "gender", "age": "age"}, max_calls=2)
    tagger, stubber = stubbed(paths.state / "rekognition", max_calls=2)
    estimate = crosscheck.estimate_cost(frame, recipe, paths, tagger=tagger)
    assert estimate["calls"] == 2 and estimate["over_budget_images"] == 2 and estimate["usd"] == pytest.approx(0.002)
    for _ in range(2):
        stubber.add_response("detect_faces", DETECT_FACES, {"Image": {"Bytes": ANY}, "Attributes": ["AGE_RANGE", "GENDER"]})
    out = crosscheck.run(frame, recipe, paths, tagger=tagger).set_index("item_id")
    stubber.assert_no_pending_responses()
    assert tagger.calls == 2
    assert list(out["crosscheck"]) == ["agree", "agree", "skipped", "skipped"]
    assert list(out["crosscheck_reason"])[2:] == ["API budget reached"] * 2
    # What is left costs 2 calls; the 2 answered images are cached and free.
    unlimited = recipe_of(fields={"gender": "gender", "age": "age"})
    left = crosscheck.estimate_cost(out.reset_index(), unlimited, paths, tagger=stubbed(paths.state / "rekognition")[0])
    assert (left["calls"], left["cached_calls"], left["usd"]) == (2, 2, pytest.approx(0.002))


def test_price_tiers_and_payload_limits(tmp_path):
    assert price_usd(1000) == pytest.approx(1.0)
    assert price_usd(2_000_000) == pytest.approx(1000 + 800)
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1800, 1800, 3), np.uint8)).save(big)
    assert big.stat().st_size > MAX_IMAGE_BYTES
    payload = image_payload(big)
    assert len(payload) <= MAX_IMAGE_BYTES and Image.open(io.BytesIO(payload)).format == "JPEG"
    small = face(tmp_path / "small.jpg", size=40)
    assert min(Image.open(io.BytesIO(image_payload(small))).size) >= 80


# ---------------------------------------------------------------- plumbing (moto_server over HTTP)


class Proxy:
    """Forwards to moto; answers ThrottlingException to the first `throttle` requests; logs every request."""

    def __init__(self, moto_url: str) -> None:
        moto_port = int(moto_url.rsplit(":", 1)[1])
        self.throttle = 0
        self.log: list[tuple[float, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.log.append((time.monotonic(), self.headers.get("X-Amz-Target", "")))
                if proxy.throttle > 0:
                    proxy.throttle -= 1
                    payload = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
                    self.send_response(400)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", moto_port, timeout=30)
                upstream.request("POST", self.path, body, {k: v for k, v in self.headers.items() if k.lower() != "host"})
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(moto_endpoint):
    server = Proxy(moto_endpoint)
    yield server
    server.close()


def test_detect_labels_over_http_map_to_target_and_never_pay_twice(tmp_path, aws_env, proxy):
    paths = DatasetPaths.create(tmp_path / "ds")
    frame = frame_of(paths, [{"label": "phone"}, {"label": "portrait"}])
    recipe = recipe_of(labels={"phone": ["Mobile Phone"]}, endpoint_url=proxy.url)
    assert crosscheck.estimate_cost(frame, recipe, paths)["calls"] == 2
    out = crosscheck.run(frame, recipe, paths).set_index("item_id")
    assert [target for _, target in proxy.log] == ["RekognitionService.DetectLabels"] * 2
    assert out.loc["r0", "crosscheck"] == "agree"
    assert out.loc["r1", "crosscheck"] == "disagree"
    assert out.loc["r1", "crosscheck_reason"] == "label: crawled portrait, tagger saw Mobile Phone (phone)"
    assert json.loads(out.loc["r0", "autotag_labels"])["Cell Phone"] > 99  # aliases count too
    # A rebuild from scratch (fresh manifest, new client) is answered from the cache.
    again = crosscheck.run(frame, recipe, paths).set_index("item_id")
    assert len(proxy.log) == 2
    assert again.loc["r1", "crosscheck_reason"] == out.loc["r1", "crosscheck_reason"]
    assert crosscheck.estimate_cost(frame, recipe, paths)["calls"] == 0


def test_throttling_is_retried_and_reported_when_retries_run_out(tmp_path, aws_env, proxy):
    image = face(tmp_path / "a.jpg")
    proxy.throttle = 2
    tagger = RekognitionTagger(tmp_path / "c1", region="us-east-1", endpoint_url=proxy.url, faces=False, labels=True,
                               max_attempts=5, rate_limit=100)
    assert "Mobile Phone" in tagger.tag([image])[0].labels
    assert len(proxy.log) == 3  # two throttled attempts, then the answer
    proxy.throttle = 5
    impatient = RekognitionTagger(tmp_path / "c2", region="us-east-1", endpoint_url=proxy.url, faces=False, labels=True,
                                  max_attempts=1, rate_limit=100)
    tags = impatient.tag([image])[0]
    assert tags.labels == {} and tags.note == "Rekognition error: ThrottlingException: Rate exceeded"
    assert not any((tmp_path / "c2").rglob("*.json"))  # errors are not cached


def test_client_side_rate_limit_spaces_calls(tmp_path, aws_env, proxy):
    images = [face(tmp_path / f"{i}.jpg", shade=10 * i) for i in range(4)]
    tagger = RekognitionTagger(tmp_path / "c", region="us-east-1", endpoint_url=proxy.url, faces=False, labels=True,
                               rate_limit=8)
    tagger.tag(images)
    times = [t for t, _ in proxy.log]
    assert len(times) == 4
    # 8 calls/s: starts 0.125 s apart. Arrival times at the proxy jitter under load, so
    # check the average rate over the calls rather than each gap.
    assert times[-1] - times[0] >= 3 * 0.125 * 0.9
