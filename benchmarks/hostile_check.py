"""The "done means" check of issue #18: faceset against attacks the test suite has not seen.

A maintainer runs it (`python benchmarks/hostile_check.py [--skip-rebuild]`, about 5
minutes) after changing how faceset reads the web, shared manifests or buckets. It builds
its own hostile site, shared manifest and bucket here, sharing no code with
tests/sites/ or tests/hostile/, and runs faceset's own entry points on them: the crawl and
fetch stages with the takedown list applied between them (what `faceset build` runs
first), `faceset hydrate`, and the pull of an `s3://` data root from a real moto server.
It then checks that nothing was written outside the folders faceset owns, that no local
file was read, that nothing was requested on an address the recipe did not name, and
that every refused row has a reason. Last, two fresh builds of an unseen site (real
stages, real faces from ../shared/corpus), one SIGKILLed half-way and resumed, must give
identical manifests and split folders.

It prints one line per attack (expected, observed, pass/fail) and writes
benchmarks/results/hostile_check.json. Exit status 1 when any attack passes.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_file import write_results  # noqa: E402
from tasks.core import manifest as mf  # noqa: E402
from tasks.core import takedown  # noqa: E402
from tasks.core.paths import DatasetPaths  # noqa: E402
from tasks.core.recipe import parse_recipe  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "utkface"
SECRET = "faceset-hostile-check-secret-" + hashlib.sha256(os.urandom(8)).hexdigest()[:12]
ROWS: list[dict[str, str]] = []


def record(attack: str, expected: str, observed: str, ok: bool) -> None:
    ROWS.append({"attack": attack, "expected": expected, "observed": observed, "result": "pass" if ok else "FAIL"})
    print(f"{'pass' if ok else 'FAIL'}  {attack}: {observed}", flush=True)


# ---------------------------------------------------------------- a small server with a request log


class Site:
    """Serve `routes` (path -> (status, headers, body)) on `host`, logging every path requested."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.log: list[str] = []
        self.delay = 0.0  # seconds before each page (not image) is answered
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                site.log.append(self.path)
                status, headers, body = site.routes.get(self.path, (404, {}, b"no"))
                if site.delay and "image" not in headers.get("Content-Type", ""):
                    time.sleep(site.delay)
                self.send_response(status)
                for name, value in {"Content-Type": "text/html", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def page(self, path: str, body: str) -> None:
        self.routes[path] = (200, {}, f"<!doctype html><html><body>{body}</body></html>".encode())

    def redirect(self, path: str, to: str) -> None:
        self.routes[path] = (302, {"Location": to}, b"")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def jpeg(colour: tuple[int, int, int], size: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "JPEG")
    return out.getvalue()


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def mentions_secret(folder: Path) -> list[str]:
    return [str(p) for p in files_under(folder) if SECRET.encode() in p.read_bytes()]


# ---------------------------------------------------------------- the hostile site


def site_attacks(work: Path) -> None:
    """A directory whose pages attack the crawler; crawl, takedown, fetch, takedown, as a build does."""
    from tasks.crawl import stage as crawl
    from tasks.fetch import stage as fetch

    local_secret = work / "secret.txt"
    local_secret.write_text(SECRET)
    site, other = Site("127.0.0.1"), Site("127.0.0.2")
    other.page("/people/x.html", '<h1>Other Host</h1><img src="/o.jpg"><p class="label">x</p>')
    other.routes["/o.jpg"] = (200, {"Content-Type": "image/jpeg"}, jpeg((9, 9, 9)))
    metadata = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    people = {
        "ok": ('<h1>Ada Good</h1><img src="/img/ok.jpg"><p class="label">cs</p>', None),
        "chain": ("", "/hop/1"),  # /people/chain -> /hop/1 -> /hop/2 -> metadata service
        "away": ("", other.base + "/people/x.html"),  # an allowed host redirects off-site
        "srcset": (f'<h1>Src Set</h1><img src="/img/ok.jpg" srcset="file://{local_secret} 2000w, /img/ok.jpg 10w">'
                   '<p class="label">cs</p>', None),
        "imgfile": (f'<h1>File Image</h1><img src="file://{local_secret}"><p class="label">cs</p>', None),
        "imgmeta": (f'<h1>Meta Image</h1><img src="{metadata}"><p class="label">cs</p>', None),
        "imghop": ('<h1>Hop Image</h1><img src="/img/hop.jpg"><p class="label">cs</p>', None),
        "svg": ('<h1>Svg Image</h1><img src="/img/face.jpg"><p class="label">cs</p>', None),
        "htmlimg": ('<h1>Html Image</h1><img src="/img/page.jpg"><p class="label">cs</p>', None),
        "traverse": ('<h1>../../../../tmp/x</h1><img src="/img/t.jpg"><p class="label">../../../outside</p>', None),
        "gone": ('<h1>Taken Person</h1><img src="/img/gone.jpg"><p class="label">cs</p>', None),
    }
    for name, (body, target) in people.items():
        if target:
            site.redirect(f"/people/{name}.html", target)
        else:
            site.page(f"/people/{name}.html", body)
    site.redirect("/hop/1", "/hop/2")
    site.redirect("/hop/2", metadata)
    site.redirect("/img/hop.jpg", other.base + "/o.jpg")
    site.routes["/img/ok.jpg"] = (200, {"Content-Type": "image/jpeg"}, jpeg((200, 20, 20)))
    site.routes["/img/t.jpg"] = (200, {"Content-Type": "image/jpeg"}, jpeg((20, 200, 20)))
    gone = jpeg((20, 20, 200))
    site.routes["/img/gone.jpg"] = (200, {"Content-Type": "image/jpeg"}, gone)
    site.routes["/img/face.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>')
    site.routes["/img/page.jpg"] = (200, {"Content-Type": "image/jpeg"}, b"<html><script>alert(1)</script></html>")
    links = "".join(f'<a href="/people/{name}.html">p</a>' for name in people)
    site.page("/index.html", links + f'<a href="{other.base}/people/x.html">o</a><a href="file://{local_secret}">f</a>')
    spec = parse_recipe({
        "name": "hostile", "contact": "check@example.org", "target": "label",
        "crawl": {"delay": 0, "concurrency": 4, "timeout": 5, "retries": 0, "autothrottle": False},
        "sources": [{"name": "site", "start_urls": [site.base + "/index.html"], "follow": [{"links": "a"}],
                     "item": {"image": "img", "fields": {"name": "h1::text", "label": "p.label::text"}}}],
    }, Path("hostile.yaml"))
    data = work / "data"
    paths = DatasetPaths.create(data / "hostile")
    before = files_under(work)
    try:
        # 1st build: everything is found; then "gone" is taken down by page URL
        frame = crawl.run(mf.empty(spec.field_names), spec, paths, timeout=120)
        frame = fetch.run(takedown.apply(frame, paths), spec, paths, timeout=120)
        frame = takedown.apply(frame, paths)
        from flows.cli import main as faceset

        faceset(["takedown", "add", site.base + "/people/gone.html", "--kind", "url", "--data-root", str(data)])
        frame = takedown.apply(frame, paths)
        # the site re-adds the person under a new URL, with the same photo
        site.page("/people/again.html", '<h1>Renamed Person</h1><img src="/img/again.jpg"><p class="label">cs</p>')
        site.routes["/img/again.jpg"] = (200, {"Content-Type": "image/jpeg"}, gone)
        site.page("/index.html", links + '<a href="/people/again.html">a</a>')
        site.log.clear()
        frame = takedown.apply(crawl.run(frame, spec, paths, timeout=120), paths)
        frame = takedown.apply(fetch.run(frame, spec, paths, timeout=120), paths)
    finally:
        site.stop()
        other.stop()
    report = json.loads(paths.report_json("crawl").read_text())
    errors = {e["url"]: e["reason"] for e in report["errors"]}
    rows = frame.set_index(frame["page_url"].fillna(""))
    reason = dict(zip(frame["image_url"].fillna(""), frame["reason"].fillna("")))

    outside = sorted(str(p) for p in files_under(work) - before if data not in p.parents)
    record("files written outside the data root", "none", f"{len(outside)} {outside[:3]}", not outside)
    record("local file read (file:// link, img src, srcset)", "the secret in no file of the data root",
           f"{len(mentions_secret(data))} files hold it", not mentions_secret(data))
    hop = errors.get(metadata, "")
    record("redirect chain via the allowed host to 169.254.169.254", "refused before it is sent, with a reason",
           hop or "no error listed", hop.startswith("refused: "))
    away = errors.get(other.base + "/people/x.html", "")
    record("302 from an allowed page to another host", "refused, other host never requested",
           f"{away or 'no error'}; other host log {other.log}", away.startswith("refused:") and other.log == [])
    without = [u.rsplit("/", 1)[-1] for u in report["pages_without_image"]]
    record("file:// image URL in src and in srcset", "not taken as an image; pages listed as without image",
           f"rows: {[u for u in reason if u.startswith('file:')]}; listed: {sorted(without)}",
           not any(u.startswith("file:") for u in reason) and {"imgfile.html", "srcset.html"} <= set(without)
           or "srcset.html" not in without and "imgfile.html" in without)
    record("image URL on the metadata service", "row failed: refused link-local", reason.get(metadata, "no row"),
           reason.get(metadata, "").startswith("refused: link-local"))
    hop_reason = reason.get(site.base + "/img/hop.jpg", "no row")
    record("image redirect to a private host", "row failed: refused", hop_reason, hop_reason.startswith("refused:"))
    svg = reason.get(site.base + "/img/face.jpg", "no row")
    record("SVG served as image/jpeg", "row failed: not an image", svg, svg == "not an image")
    page = reason.get(site.base + "/img/page.jpg", "no row")
    record("HTML served as image/jpeg", "row failed: not an image", page, page == "not an image")
    stored = [p.name for p in files_under(paths.images)]
    record("stored files are content-addressed", "every name is a sha256",
           f"{len(stored)} files", all(len(p.split(".")[0]) == 64 for p in stored))
    gone_rows = frame[frame["image_url"].isna() & (frame["reason"] == "takedown")]
    requested_again = [p for p in site.log if p in ("/people/gone.html", "/img/gone.jpg")]
    record("takedown'd page crawled again", "never requested", f"requested {requested_again}", not requested_again)
    again = frame[frame["item_id"] == mf.item_id(site.base + "/people/again.html", site.base + "/img/again.jpg")]
    record("takedown'd person re-added under a new URL, same photo", "row excluded: takedown, file deleted",
           f"{again['status'].tolist()} {again['reason'].tolist()}; {len(gone_rows)} tombstones; "
           f"sha256 file left: {any(hashlib.sha256(gone).hexdigest() in p for p in stored)}",
           again["reason"].tolist() == ["takedown"] and not any(hashlib.sha256(gone).hexdigest() in p for p in stored))
    unexplained = frame[(frame["status"] != mf.KEPT) & frame["reason"].isna()]
    record("every refused row has a reason", "0 rows without", f"{len(unexplained)} rows without", unexplained.empty)
    traversal = rows.loc[[u for u in rows.index if u.endswith("/people/traverse.html")], "label"].tolist()
    record("label '../../../outside' kept as text only", "a row; no folder made from it",
           f"label {traversal}", traversal == ["../../../outside"] and not (work / "outside").exists())


# ---------------------------------------------------------------- the malicious shared manifest


def manifest_attacks(work: Path) -> None:
    from tasks.export.hydrate import hydrate

    out = work / "hydrated" / "out"
    out.mkdir(parents=True)
    local_secret = work / "secret-m.txt"
    local_secret.write_text(SECRET)
    site = Site("127.0.0.1")
    good = jpeg((120, 60, 30))
    site.routes["/good.jpg"] = (200, {"Content-Type": "image/jpeg"}, good)
    site.redirect("/to-ftp.jpg", "ftp://127.0.0.1/good.jpg")
    site.redirect("/to-meta.jpg", "http://169.254.169.254/latest/meta-data/")
    sha = hashlib.sha256(good).hexdigest()
    rows = [
        {"item_id": "ok", "class": "cs", "image_url": site.base + "/good.jpg"},
        {"item_id": "../../../../escaped-id", "class": "cs", "image_url": site.base + "/good.jpg"},
        {"item_id": "cls", "class": "../../../../escaped-class", "image_url": site.base + "/good.jpg"},
        {"item_id": "abs", "class": str(work / "absolute-class"), "image_url": site.base + "/good.jpg"},
        {"item_id": "file", "class": "cs", "image_url": f"file://{local_secret}"},
        {"item_id": "ftp", "class": "cs", "image_url": site.base + "/to-ftp.jpg"},
        {"item_id": "meta", "class": "cs", "image_url": site.base + "/to-meta.jpg"},
        {"item_id": "img_path", "class": "cs", "image_url": site.base + "/good.jpg",
         "image_path": "../../../../escaped-path.jpg"},
        {"item_id": "nul\x00", "class": "cs", "image_url": site.base + "/good.jpg"},
        {"item_id": "box", "class": "cs", "image_url": site.base + "/good.jpg", "face_box": "[1,2"},
    ]
    table = pd.DataFrame([{"sha256": sha, "split": "train", "split_x": "train", "split_abs": "test",
                           "label": "=cmd|' /C calc'!A0", **r} for r in rows])
    share = work / "hydrated" / "manifest_share.csv"
    table.to_csv(share, index=False)
    share.with_name("manifest_share.json").write_text(json.dumps(
        {"split_columns": {"split_abs": str(work / "abs-split"), "split_x": "../../../escaped-split"},
         "contact": "x\r\nInjected: header"}))
    before = files_under(work)
    try:
        report = hydrate(share, out, crop=False, delay=0.0, timeout=10.0, allow_private_hosts=("127.0.0.1",))
    except Exception as exc:  # noqa: BLE001 - a crash is an observed failure
        report = {"crash": repr(exc)}
    finally:
        site.stop()
    outside = sorted(str(p) for p in files_under(work) - before if out not in p.parents)
    record("hydrate: paths from item_id, class, image_path, split folders", "nothing outside OUT_DIR",
           f"{len(outside)} outside {outside[:3]}", not outside and "crash" not in report)
    record("hydrate: file:// URL, redirect to ftp and to 169.254.169.254", "no local file read",
           f"{len(mentions_secret(out))} files hold the secret", not mentions_secret(out))
    placed = sorted(p.relative_to(out).as_posix() for p in files_under(out) if p.suffix == ".jpg")
    record("hydrate: the good row rebuilt, each bad row refused or failed with a reason",
           "3 images placed (image_path is not read); 7 rows refused", f"placed {placed}; "
           f"refused {report.get('refused')}, failed {report.get('failed')}",
           placed == ["splits/train/cs/box.jpg", "splits/train/cs/img_path.jpg", "splits/train/cs/ok.jpg"]
           and report.get("refused", 0) + report.get("failed", 0) == 7)


# ---------------------------------------------------------------- the malicious bucket


def _moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.2)


def bucket_attacks(work: Path) -> None:
    process, endpoint = _moto()
    os.environ.update(FACESET_S3_ENDPOINT=endpoint, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
                      AWS_DEFAULT_REGION="us-east-1", FACESET_MIRROR=str(work / "mirror"))
    try:
        from tasks.core.storage import open_root, s3_client

        client = s3_client()
        client.create_bucket(Bucket="hostile")
        keys = {"lab/ds/manifest.csv": b"item_id\n", "lab/ds/./../../../dot-escape.txt": b"x",
                "lab/ds/images/../../../../../images-escape.txt": b"x", f"lab/ds/{work}/absolute.txt": b"x",
                "lab/ds/..\\..\\backslash.txt": b"x", "lab/ds/reports": b"a file where a folder goes",
                "lab/ds/reports/crawl.json": b"{}", "lab/ds/" + "n" * 300 + ".txt": b"long",
                "lab/takedowns.json/../../../shared-escape.txt": b"x"}
        for key, body in keys.items():
            client.put_object(Bucket="hostile", Key=key, Body=body)
        before = files_under(work)
        root = open_root("s3://hostile/lab", "ds")
        try:
            root.pull()
            crash = ""
        except Exception as exc:  # noqa: BLE001 - observed
            crash = f"{type(exc).__name__}: {exc}"[:200]
        outside = sorted(str(p) for p in files_under(work) - before if (work / "mirror") not in p.parents)
        record("bucket keys with .., absolute paths and shared-file names", "nothing outside the mirror",
               f"{len(outside)} outside {outside[:3]}", not outside)
        record("bucket with a file where a folder goes and a 300-character name", "the pull goes on with a warning",
               crash or "pulled", not crash and (root.local / "manifest.csv").is_file())
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---------------------------------------------------------------- reproducibility of an unseen site


def gallery_site(faces: list[Path]) -> Site:
    """An unseen layout: a paged gallery (6 per page) of lab members, two labs, photos in srcset."""
    site = Site("127.0.0.1")
    per_page = 6
    pages = (len(faces) + per_page - 1) // per_page
    for n in range(pages):
        cards = ""
        for i in range(n * per_page, min(len(faces), (n + 1) * per_page)):
            cards += f'<div class="card"><a class="who" href="/m/{i:03d}">member</a></div>'
            lab = ("vision", "speech")[i % 2]
            site.page(f"/m/{i:03d}", f'<article><h2 class="n">Member {html.escape(str(i))}</h2>'
                      f'<span class="lab">{lab} lab</span>'
                      f'<picture><img srcset="/p/{i:03d}-s.jpg 100w, /p/{i:03d}.jpg 800w"></picture></article>')
            site.routes[f"/p/{i:03d}.jpg"] = (200, {"Content-Type": "image/jpeg"}, faces[i].read_bytes())
        more = f'<a class="more" href="/g/{n + 1}">more</a>' if n + 1 < pages else ""
        site.page(f"/g/{n}", cards + more)
    site.delay = 0.2  # slow pages, so that a kill lands half-way through the crawl
    return site


def _gallery_recipe(work: Path, base: str) -> Path:
    import yaml

    spec = {"name": "gallery", "contact": "check@example.org", "target": "label",
            "crawl": {"delay": 0, "concurrency": 16, "timeout": 5, "retries": 1, "autothrottle": False},
            "sources": [{"name": "labs", "start_urls": [base + "/g/0"],
                         "follow": [{"links": "a.who", "next_page": "a.more"}],
                         "item": {"image": "picture img",
                                  "fields": {"name": "h2.n::text",
                                             "label": {"css": "span.lab::text", "regex": r"(\w+) lab"}}}}],
            "crosscheck": {"autotagger": "none"}, "finetune": "none", "split": {"stratify": ["label"], "seed": 11}}
    path = work / "gallery.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


DRIVER = "import sys, flows.build; flows.build.build(sys.argv[1], data_root=sys.argv[2])"


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every live process under `pid` (read from /proc)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found[child] = commands.get(child, "")
                frontier.append(child)
    return found


def still_running(pids: dict[int, str], seconds: float) -> dict[int, str]:
    deadline = time.monotonic() + seconds
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = {pid: c for pid, c in pids.items() if Path(f"/proc/{pid}").exists()
                 and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"}
    return alive


def _comparable(root: Path) -> pd.DataFrame:
    frame = mf.read(root / "manifest.parquet")
    clocks = [c for c in ("crawled_at", "last_seen", "fetched_at", "faces_ms") if c in frame.columns]
    return frame.drop(columns=clocks).astype("string").reset_index(drop=True)


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted((root / "splits").rglob("*"))}


def rebuild_check(work: Path) -> None:
    faces = sorted(CORPUS.glob("*.jpg"))[:36]
    if len(faces) < 36:
        record("two fresh builds, one SIGKILLed and resumed", "identical manifests", f"skipped: no {CORPUS}", False)
        return
    site = gallery_site(faces)
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACESET_WORKERS": "2", "PREFECT_LOGGING_LEVEL": "WARNING"}
    recipe = _gallery_recipe(work, site.base)
    killed, fresh = work / "killed", work / "fresh"
    log = open(work / "builds.log", "a")
    try:
        build = subprocess.Popen([sys.executable, "-c", DRIVER, str(recipe), str(killed)], env=env, cwd=REPO,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        items = killed / "gallery" / ".faceset" / "crawl" / "items.jsonl"
        deadline = time.monotonic() + 300
        while not (items.is_file() and len(items.read_text().splitlines()) >= 10):
            if build.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        found = len(items.read_text().splitlines()) if items.is_file() else 0
        children = descendants(build.pid)
        os.kill(build.pid, signal.SIGKILL)  # the build only: its children must end by themselves
        build.wait()
        left = still_running(children, 10.0)
        record("a build SIGKILLed during its crawl", "its crawl process, Prefect server and workers end within 10 s",
               f"{len(children)} processes under it, {len(left)} left: {[c[:60] for c in left.values()]}",
               bool(children) and not left)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        for args in ((recipe, killed), (recipe, fresh)):
            done = subprocess.run([sys.executable, "-c", DRIVER, *map(str, args)], env=env, cwd=REPO, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=900)
            if done.returncode != 0:
                record("two fresh builds, one SIGKILLed and resumed", "identical manifests",
                       f"a build failed, see {work / 'builds.log'}", False)
                return
    finally:
        site.stop()
        log.close()
    first, second = _comparable(killed / "gallery"), _comparable(fresh / "gallery")
    same = first.equals(second)
    differ = int((first != second).any(axis=1).sum()) if first.shape == second.shape else -1
    record("two fresh builds of an unseen site, one SIGKILLed half-way (after "
           f"{found} of {len(faces)} items) and resumed", "identical manifests and split folders",
           f"{len(first)} rows, {differ} differ; split trees equal: {_tree(killed / 'gallery') == _tree(fresh / 'gallery')}",
           same and _tree(killed / "gallery") == _tree(fresh / "gallery") and 0 < found < len(faces))


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-rebuild", action="store_true", help="leave out the two builds (the slow part)")
    args = parser.parse_args()
    started = time.monotonic()
    checks: list[Callable[[Path], None]] = [site_attacks, manifest_attacks, bucket_attacks]
    if not args.skip_rebuild:
        checks.append(rebuild_check)
    with tempfile.TemporaryDirectory(prefix="faceset-hostile-") as tmp:
        for check in checks:
            work = Path(tmp) / check.__name__
            work.mkdir()
            try:
                check(work)
            except Exception as exc:  # noqa: BLE001 - a crash of faceset is a finding, not the end
                record(check.__name__, "runs to its end", f"crashed: {type(exc).__name__}: {exc}"[:300], False)
    width = max(len(r["attack"]) for r in ROWS)
    print(f"\n{'attack':<{width}}  result  expected -> observed")
    for r in ROWS:
        print(f"{r['attack']:<{width}}  {r['result']:<6}  {r['expected']} -> {r['observed']}")
    failed = sum(r["result"] != "pass" for r in ROWS)
    print(f"\n{len(ROWS) - failed} of {len(ROWS)} attacks defended ({time.monotonic() - started:.0f} s)")
    write_results("hostile_check", {"date": date.today().isoformat(), "rows": ROWS, "failed": failed,
                                    "seconds": round(time.monotonic() - started, 1)})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
