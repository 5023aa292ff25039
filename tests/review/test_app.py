"""The review app (tasks/review) served for real on 127.0.0.1, over a small dataset of real faces.

The dataset is tests/builders.py's `build_dataset` with its crops and originals replaced
by UTKFace photos from ../shared/corpus, a hostile label, near-copy and identity groups
and splits. HTTP tests drive the JSON API and the file route; the browser test drives
the page in real headless Chromium by keyboard and reads decisions.csv back.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from builders import build_dataset, utk_sample

from tasks.core import decisions, gold
from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.review import sample as samples
from tasks.review.app import ReviewApp, make_server, url_of

HOSTILE = "<script>window.pwned=1</script>"
N = 40


def _dataset(root: Path, utkface_dir: Path) -> tuple[pd.DataFrame, DatasetPaths]:
    """40 rows: real crops and originals, a hostile name, two near-copy groups, one identity group, splits."""
    frame, paths = build_dataset(root, n=N)
    photos = utk_sample(utkface_dir, per_race=8)
    for i, row in frame.iterrows():
        photo = photos[i % len(photos)]
        if pd.notna(row["face_path"]):
            shutil.copyfile(photo, paths.root / row["face_path"])
        if pd.notna(row["sha256"]):
            original = paths.image_file(row["sha256"], "jpg")
            original.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, original)
            frame.loc[i, "image_path"] = original.relative_to(paths.root).as_posix()
    frame.loc[0, "name"] = HOSTILE
    frame.loc[2, ["autotag_gender", "autotag_gender_confidence", "autotag_age"]] = ["male", 91.0, 44.5]
    frame.loc[[1, 3], "dup_group"] = "dupA"
    frame.loc[[4, 5, 6], "dup_group"] = "dupB"
    frame.loc[[10, 11], "person_group"] = "personX"
    frame["crosscheck_score"] = pd.Series([(i % 7) / 10 for i in range(N)], dtype="Float64")
    frame["split"] = ["train", "val", "test", "train"] * (N // 4)
    frame.loc[19, "reason"] = "file too small (3 KB < 5 KB)"  # a second quarantine reason (row 9 says "no face")
    return frame, paths


@pytest.fixture
def dataset(tmp_path, utkface_dir):
    frame, paths = _dataset(tmp_path / "ds", utkface_dir)
    mf.write(frame, paths.manifest)
    return frame, paths


class Running:
    """A review server on a free port, serving in a thread."""

    def __init__(self, root: Path, **options) -> None:
        self.server, self.app = make_server(root, port=0, **options)
        self.base = url_of(self.server)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.base + path, timeout=10) as answer:
            return json.load(answer)

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(*self.server.server_address[:2], timeout=10)
        try:
            connection.putrequest(method, path, skip_host="Host" in headers)
            for name, value in headers.items():
                connection.putheader(name.replace("_", "-"), value)
            connection.putheader("Content-Length", str(len(body or b"")))
            connection.endheaders(body)
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()

    def decide(self, payload: dict, **headers: str) -> tuple[int, dict]:
        sent = {"Content_Type": "application/json", "X_Review_Token": self.app.token, **headers}
        status, body = self.request("POST", "/api/decisions", json.dumps(payload).encode(), **sent)
        return status, json.loads(body)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def running(dataset):
    _, paths = dataset
    server = Running(paths.root, sample=8)
    yield server
    server.stop()


def _ids(page: dict) -> list[str]:
    return [card["item_id"] for card in page["items"]]


def test_queues_order_filter_and_page(running, dataset):
    frame, _ = dataset
    flags = running.get("api/page?queue=flags&size=100")
    flagged = frame[frame["crosscheck"] == "disagree"]
    assert _ids(flags) == flagged.sort_values("crosscheck_score", ascending=False, kind="stable")["item_id"].tolist()
    first = flags["items"][0]
    assert first["flag"] == "disagree" and first["flag_reason"] == "autotagger says male (91%)"
    assert first["crop"].startswith("/files/faces/") and first["original"].startswith("/files/images/")
    tagged = next(card for card in flags["items"] if card["item_id"] == "item002")
    assert tagged["tagger"] == [{"name": "gender", "value": "male"}, {"name": "gender_confidence", "value": "91"},
                                {"name": "age", "value": "44.5"}]
    assert [(label["field"], label["value"]) for label in tagged["labels"]] == [
        ("name", "Person 2"), ("label", "R&D/ops"), ("gender", "female"), ("age", "27")]

    groups = running.get("api/page?queue=duplicates")["items"]
    assert [(g["group"], [c["item_id"] for c in g["cards"]]) for g in groups] == [
        ("dupB", ["item004", "item005", "item006"]), ("dupA", ["item001", "item003"])]
    assert [g["group"] for g in running.get("api/page?queue=identities")["items"]] == ["personX"]

    quarantine = running.get("api/page?queue=quarantine&size=100")
    assert set(_ids(quarantine)) == set(frame.loc[frame["status"] == "quarantined", "item_id"])
    assert _ids(running.get("api/page?queue=quarantine&reason=file+too+small")) == ["item019"]

    econ_val = running.get("api/page?queue=all&field=label&value=econ&split=val&size=100")
    expected = frame[(frame["label"] == "econ") & (frame["split"] == "val")]["item_id"].tolist()
    assert _ids(econ_val) == expected and expected
    assert running.get("api/page?queue=all&status=failed")["total"] == (frame["status"] == "failed").sum()
    assert running.get("api/page?queue=all&field=nosuchfield&value=x")["total"] == 0

    pages = [running.get(f"api/page?queue=all&size=7&page={n}") for n in range(1, 8)]
    assert pages[0]["pages"] == 6 and pages[0]["total"] == N
    seen = [i for page in pages for i in _ids(page)]
    assert seen[:N] == frame["item_id"].tolist() and _ids(pages[6]) == _ids(pages[5])  # past the end: the last page


def test_sample_is_drawn_once_and_kept(dataset, utkface_dir, tmp_path):
    frame, paths = dataset
    first = ReviewApp(paths.root, sample=8).sample_ids
    assert len(first) == 8 and set(first) <= set(frame.loc[frame["status"] == "kept", "item_id"])
    assert gold.read_sample(paths) == set(first)  # where gold labels look for it
    assert ReviewApp(paths.root).sample_ids == first  # a restart without --sample reviews the same faces
    assert ReviewApp(paths.root, sample=8).sample_ids == first
    # a rebuild that adds rows keeps the stored draw
    more, _ = _dataset(tmp_path / "other", utkface_dir)
    more["item_id"] = more["item_id"] + "x"
    mf.write(pd.concat([frame, more], ignore_index=True), paths.manifest)
    assert ReviewApp(paths.root, sample=8).sample_ids == first
    # a larger draw of the same rows extends the smaller one; a stratified one is proportional
    assert samples.draw(frame, 12)[:8] == samples.draw(frame, 8)
    by_label = frame.set_index("item_id").loc[samples.draw(frame, 14, "label"), "label"].value_counts()
    pool = frame[frame["status"] == "kept"]["label"].value_counts()
    assert (by_label - pool / pool.sum() * 14).abs().max() < 1


def test_files_are_served_only_from_the_dataset(running, dataset, tmp_path):
    frame, paths = dataset
    status, body = running.request("GET", "/files/" + frame.loc[0, "face_path"])
    assert status == 200 and body[:2] == b"\xff\xd8"
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not yours")
    (paths.faces / "link.jpg").symlink_to(secret)
    for path in ("/files/faces/../../secret.jpg", "/files/faces/%2e%2e/%2e%2e/secret.jpg", "/files/manifest.parquet",
                 "/files/faces/..%2f..%2fsecret.jpg", "/files//etc/passwd", "/files/faces/link.jpg",
                 "/files/" + str(secret), "/files/decisions.csv", "/static/../app.py"):
        status, body = running.request("GET", path)
        assert status in (403, 404), path
        assert b"not yours" not in body
    status, _ = running.request("GET", "/", Host="evil.example:80")
    assert status == 403  # DNS rebinding: another name for 127.0.0.1 is refused


def test_decisions_need_the_token_and_a_known_item(running, dataset):
    _, paths = dataset
    keep = {"item_id": "item000", "action": "keep", "reviewer": "ann"}
    assert running.decide(keep, X_Review_Token="guess")[0] == 403
    assert running.decide(keep, Origin="http://evil.example")[0] == 403
    status, body = running.request("POST", "/api/decisions", json.dumps(keep).encode(), X_Review_Token=running.app.token,
                                   Content_Type="text/plain")
    assert status == 415
    status, answer = running.decide({**keep, "item_id": "nosuch"})
    assert status == 404 and "no face 'nosuch'" in answer["error"]
    status, answer = running.decide({**keep, "action": "relabel", "field": "colour", "value": "red"})
    assert status == 400 and "'colour' is not a label field" in answer["error"]
    status, answer = running.decide({**keep, "reviewer": ""})
    assert status == 400 and "reviewer" in answer["error"]
    assert not decisions.path_of(paths.root).exists()
    status, answer = running.decide({**keep, "note": "=1+1 looks right"}, Origin=running.base.rstrip("/"))
    assert status == 200 and answer["decision"]["reviewer"] == "ann"
    held, problems = decisions.read(paths.root)
    assert not problems and [(d.item_id, d.action, d.reviewer, d.note) for d in held] == [
        ("item000", "keep", "ann", "=1+1 looks right")]
    assert running.get("api/page?queue=all&size=1")["items"][0]["decisions"][0].startswith("keep by ann")
    assert _ids(running.get("api/page?queue=all&decided=yes")) == ["item000"]
    assert running.get("api/page?queue=all&decided=no")["total"] == N - 1
    status, _ = running.decide({"item_id": "item001", "action": "same_person", "value": "item003", "reviewer": "bo"})
    assert status == 200
    assert [g["group"] for g in running.get("api/page?queue=duplicates&decided=yes")["items"]] == ["dupA"]
    assert [g["group"] for g in running.get("api/page?queue=duplicates&decided=no")["items"]] == ["dupB"]


def test_a_review_open_while_a_build_rewrites_the_manifest(running, dataset):
    """The build replaces manifest.parquet atomically while pages are asked for: every answer is a
    whole page of one version, and the new version is served once written."""
    frame, paths = dataset
    failures: list[str] = []
    totals: set[int] = set()
    stop = threading.Event()

    def reviewer() -> None:
        while not stop.is_set():
            try:
                page = running.get("api/page?queue=all&size=100")
                totals.add(page["total"])
                assert len(page["items"]) == page["total"]
            except Exception as exc:  # noqa: BLE001 (any failure is the finding)
                failures.append(repr(exc))

    threads = [threading.Thread(target=reviewer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for extra in range(1, 9):  # a build writing stage after stage
        grown = pd.concat([frame, frame.head(extra).assign(item_id=lambda f: f["item_id"] + f"-{extra}")],
                          ignore_index=True)
        mf.write(grown, paths.manifest)
        time.sleep(0.15)
    stop.set()
    for thread in threads:
        thread.join(timeout=20)
    assert not failures
    assert running.get("api/page?queue=all&size=100")["total"] == N + 8
    assert len(totals) > 2 and totals <= {N + k for k in range(9)}
    paths.manifest.write_bytes(b"not parquet")  # damaged, or cut short by a full disk
    assert running.get("api/page?queue=all&size=100")["total"] == N + 8  # the last good version


# ---------------------------------------------------------------- the page in a browser


def _wait(condition, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _decided(paths: DatasetPaths, count: int) -> list[decisions.Decision]:
    return _wait(lambda: (found := decisions.read(paths.root)[0]) and len(found) >= count and found,
                 f"{count} decisions in decisions.csv")


def test_review_by_keyboard_in_chromium(running, dataset, chromium):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    frame, paths = dataset
    driver = chromium
    driver.get(running.base + "?queue=all&size=6")
    faces = [e.get_attribute("data-item") for e in driver.find_elements(By.CSS_SELECTOR, "article.face")]
    assert faces == frame["item_id"].head(6).tolist()
    # the hostile name is shown as text and never ran
    assert HOSTILE in driver.find_element(By.CSS_SELECTOR, "article.face").text
    assert driver.execute_script("return window.pwned === undefined")
    # the name is asked once
    name = driver.find_element(By.ID, "reviewer-input")
    assert name.is_displayed()
    name.send_keys("Ann Example", Keys.ENTER)
    body = driver.find_element(By.TAG_NAME, "body")
    started = time.time()
    # keys as fast as a quick reviewer types them: each is for the next face, whatever the server's pace
    body.send_keys("k", "d", "r")
    relabel = driver.switch_to.active_element
    assert relabel.get_attribute("class") == "relabel"
    relabel.send_keys(Keys.CONTROL, "a")
    relabel.send_keys("label=econ", Keys.ENTER)
    found = sorted(_decided(paths, 3), key=lambda d: d.item_id)
    assert [(d.item_id, d.action, d.field, d.value, d.reviewer) for d in found] == [
        (faces[0], "keep", "", "", "Ann Example"), (faces[1], "drop", "", "", "Ann Example"),
        (faces[2], "relabel", "label", "econ", "Ann Example")]
    assert all(started - 5 <= decisions.parse_time(d.decided_at).timestamp() <= time.time() + 5 for d in found)
    assert "relabel label=econ by Ann Example" in driver.find_elements(By.CSS_SELECTOR, "article.face")[2].text
    # paging by keyboard; the name is not asked again
    body.send_keys(Keys.ARROW_RIGHT)
    _wait(lambda: "page=2" in driver.current_url, "the next page")
    assert [e.get_attribute("data-item") for e in driver.find_elements(By.CSS_SELECTOR, "article.face")] == \
        frame["item_id"].iloc[6:12].tolist()
    assert not driver.find_element(By.ID, "reviewer-input").is_displayed()
    # duplicates side by side: the second face of the first group is the same person as its first
    driver.get(running.base + "?queue=duplicates")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_DOWN, "x")
    found = _decided(paths, 4)
    assert (found[3].item_id, found[3].action, found[3].value) == ("item005", "different_person", "item004")


def test_the_documented_shortcuts_are_the_apps():
    """docs/review.md's table of keys names every shortcut the page has, and no other."""
    from tasks.review.app import SHORTCUTS

    docs = (Path(__file__).resolve().parents[2] / "docs" / "review.md").read_text(encoding="utf-8")
    section = docs.split("## The review app", 1)[1]
    arrows = {"ArrowDown": "↓", "ArrowUp": "↑", "ArrowRight": "→", "ArrowLeft": "←"}
    documented = set(re.findall(r"`([^`]{1,2})`", section.split("**Keyboard shortcuts**", 1)[1].split("\n\n", 2)[1]))
    assert documented == {arrows.get(key, key) for key, _, _ in SHORTCUTS}


def test_the_flags_queue_says_what_the_flags_mean_and_shows_no_score(running, dataset):
    """The cross-check's own words (reports/crosscheck.json `flag_trust` and `threshold`) head the
    flags queue, escaped; no card carries the score as if it were a chance of error (issue 17)."""
    from tasks.core.reports import write_report
    _, paths = dataset
    said = "the tagger disagrees with 3 of 40 crawled genders; its measured error is 6% <b>"
    write_report(paths, "crosscheck", {"flag_trust": {"gender": {"says": said, "measured": False}},
                                       "threshold": {"gender": {"says": "threshold learned from 45 reviewed faces"}}})
    with urllib.request.urlopen(running.base + "?queue=flags", timeout=10) as answer:
        page = answer.read().decode()
    assert "its measured error is 6% &lt;b&gt;" in page and "threshold learned from 45 reviewed faces" in page
    with urllib.request.urlopen(running.base + "?queue=all", timeout=10) as answer:
        assert "measured error" not in answer.read().decode()
    assert all("flag_score" not in card for card in running.get("api/page?queue=flags")["items"])
