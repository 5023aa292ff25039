"""`faceset review DATASET_DIR`: the local web app where people judge faces and record decisions.

Python's own ThreadingHTTPServer is enough for one reviewer's browser on this machine
and adds no dependency. Pages are rendered on the server (templates/, Jinja2 with
autoescaping) and a small script (static/review.js) adds the keyboard and sends each
decision as JSON to `/api/decisions`, which appends it to decisions.csv through
tasks.core.decisions. `/api/page` gives the same pages as JSON.

It is bound to 127.0.0.1 unless told otherwise, and a web page open in the same browser
must not be able to record decisions or read the dataset through it, so:

- a decision needs the server's random token in the `X-Review-Token` header (only the
  app's own page knows it) and JSON, and is refused when `Origin` is another site's;
- requests whose `Host` is not the address the app was opened at are refused (a
  hostile name that resolves to 127.0.0.1, DNS rebinding, cannot read the token);
- `/files/` serves images only, only from the dataset's faces/, images/ and quarantine/
  folders (tasks.core.safepaths, then the real path checked to stay inside);
- every page forbids scripts other than the app's own (Content-Security-Policy), so a
  label that slipped past escaping still could not run.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import secrets
import threading
from dataclasses import asdict, dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import numpy as np

from tasks.core import decisions as decisions_file
from tasks.core.decisions import ACTIONS, Decision
from tasks.core.errors import FacesetError
from tasks.core.manifest import STATUSES
from tasks.core.paths import DatasetPaths
from tasks.core.reports import read_report
from tasks.core.safepaths import UnsafePath, inside
from tasks.core.templates import render
from tasks.core.text import terminal
from tasks.review import cards, queues, sample as samples
from tasks.review.index import ManifestIndex, Snapshot
from tasks.review.queues import GROUPED, QUEUES, Query

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
PAGE_SIZE, MAX_PAGE_SIZE = 48, 200
MAX_BODY = 64 * 1024
MAX_NOTE, MAX_REVIEWER = 2000, 100
TOKEN_HEADER = "X-Review-Token"
SERVED_FOLDERS = ("faces", "images", "quarantine")  # crops, originals, quarantined originals
STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# (key, action, what it does): the page's help and its script's key map come from here alone
SHORTCUTS: tuple[tuple[str, str, str], ...] = (
    ("k", "keep", "keep: the labels are right (overrides the cross-check's flag or drop)"),
    ("d", "drop", "drop the face from the dataset"),
    ("r", "relabel", "relabel: type FIELD=VALUE, then Enter"),
    ("f", "not_face", "not a face"),
    ("s", "same_person", "same person as the group's first face (group queues)"),
    ("x", "different_person", "different person from the group's first face (group queues)"),
    ("n", "note", "write a note, sent with the next decision (Enter to finish)"),
    ("ArrowDown", "next", "next face"),
    ("ArrowUp", "previous", "previous face"),
    ("ArrowRight", "next_page", "next page"),
    ("ArrowLeft", "previous_page", "previous page"),
)


class Refused(Exception):
    """A request the app answers with an error status and a sentence saying why."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Page:
    query: Query
    number: int
    pages: int
    size: int
    total: int  # faces, or groups in a group queue
    items: list[dict[str, Any]]  # cards, or {"group": name, "cards": [...]} in a group queue


class ReviewApp:
    """The app's state: the dataset, its manifest index, the sample, the token, the decisions read."""

    def __init__(self, dataset_dir: Path, sample: int | None = None, stratify: str | None = None) -> None:
        root = Path(dataset_dir).resolve()
        if not root.is_dir():
            raise FacesetError(f"{dataset_dir} is not a folder", "give the folder of a built dataset, e.g. data/mydataset")
        self.paths = DatasetPaths(root)
        self.index = ManifestIndex(self.paths.manifest)
        chosen, self.sample_note = samples.ensure(self.paths, self.index.current().frame, sample, stratify)
        self.sample_ids = chosen.item_ids if chosen else []
        self.token = secrets.token_urlsafe(32)
        self.hosts: set[str] = set()  # Host headers accepted; empty: any (bound to a non-loopback address)
        self._decided: tuple[object, dict[str, list[str]]] = (None, {})
        self._decided_lock = threading.Lock()

    # ------------------------------------------------------------ pages

    def _order(self, snapshot: Snapshot, query: Query) -> list | np.ndarray:
        """The queue's faces (row positions) or groups, filtered; all but the decided filter
        computed once per manifest version."""
        order = self._cached_order(snapshot, replace(query, decided=""))
        if query.decided not in ("yes", "no"):
            return order
        decided = np.zeros(len(snapshot.frame), dtype=bool)
        decided[[snapshot.positions[i] for i in self.decided() if i in snapshot.positions]] = True
        return queues.by_decided(order, decided, query.decided)

    def _cached_order(self, snapshot: Snapshot, query: Query) -> list | np.ndarray:
        base = Query(queue=query.queue)
        if query.queue in GROUPED:
            column = GROUPED[query.queue]
            groups = self.index.ordered(snapshot, ("groups", column), lambda f: queues.group_order(f, column))
            if not query.filters():
                return groups
            keep = self.index.ordered(snapshot, ("mask", query), lambda f: queues.mask(f, query, snapshot.fields))
            return self.index.ordered(snapshot, ("order", query), lambda f: queues.filtered_groups(groups, keep))
        order = self.index.ordered(snapshot, ("order", base),
                                   lambda f: queues.flat_order(f, query.queue, self.sample_ids, snapshot.positions))
        if not query.filters():
            return order
        keep = self.index.ordered(snapshot, ("mask", query), lambda f: queues.mask(f, query, snapshot.fields))
        return self.index.ordered(snapshot, ("order", query), lambda f: queues.filtered_order(order, keep))

    def decided(self) -> dict[str, list[str]]:
        """The decisions that hold, by item, read again when decisions.csv changed."""
        target = decisions_file.path_of(self.paths.root)
        try:
            stat = target.stat()
            signature: object = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            signature = None
        with self._decided_lock:
            if signature != self._decided[0]:
                found, _ = decisions_file.read(self.paths.root)
                self._decided = (signature, cards.held_by_item(decisions_file.latest(found)))
            return self._decided[1]

    def page(self, query: Query, number: int, size: int) -> tuple[Page, Snapshot]:
        if query.queue not in QUEUES:
            raise Refused(HTTPStatus.NOT_FOUND, f"no queue {query.queue!r}; the queues are {', '.join(QUEUES)}")
        snapshot = self.index.current()
        order = self._order(snapshot, query)
        total = len(order)
        pages = max(1, -(-total // size))
        number = min(max(1, number), pages)
        chosen = order[(number - 1) * size: number * size]
        decided = self.decided()
        frame = snapshot.frame

        if query.queue in GROUPED:  # one selection for the whole page, then cut into its groups
            rows = [int(r) for _, members in chosen for r in members]
            found = iter(cards.card(row, snapshot.fields, decided) for row in frame.iloc[rows].to_dict("records"))
            items = [{"group": name, "cards": [next(found) for _ in members]} for name, members in chosen]
        else:
            items = [cards.card(row, snapshot.fields, decided) for row in frame.iloc[chosen].to_dict("records")]
        return Page(query, number, pages, size, total, items), snapshot

    def counts(self, snapshot: Snapshot) -> dict[str, int]:
        return {queue: len(self._order(snapshot, Query(queue=queue))) for queue in QUEUES}

    def html(self, query: Query, number: int, size: int) -> str:
        page, snapshot = self.page(query, number, size)
        frame = snapshot.frame
        splits = sorted(frame["split"].dropna().astype(str).unique()) if "split" in frame else []
        reasons = self.index.ordered(snapshot, "reasons", queues.quarantine_reasons)

        def href(number: int) -> str | None:
            wanted = {"queue": page.query.queue, **page.query.filters(), "page": number, "size": page.size}
            return "?" + urlencode(wanted) if 1 <= number <= page.pages and number != page.number else None

        return render("tasks.review", "app.html.j2", page=page, queues=QUEUES, counts=self.counts(snapshot),
                      grouped=query.queue in GROUPED, fields=snapshot.fields, splits=splits, statuses=STATUSES,
                      reasons=reasons, token=self.token, shortcuts=SHORTCUTS, dataset=self.paths.root.name,
                      sample_note=self.sample_note, flag_notes=self.flag_notes(),
                      previous=href(page.number - 1), next=href(page.number + 1))

    def flag_notes(self) -> list[str]:
        """What the flags may be said to mean (reports/crosscheck.json: a precision measured on
        gold or decisions, else that the tagger disagrees and its measured error; the learned
        threshold), shown above the flags queue as reports/review.html shows them."""
        summary = read_report(self.paths, "crosscheck") or {}
        return [str(entry["says"]) for key in ("flag_trust", "threshold")
                for entry in (summary.get(key) or {}).values() if isinstance(entry, dict) and entry.get("says")]

    # ------------------------------------------------------------ decisions

    def decide(self, payload: Any) -> Decision:
        """Record one decision sent by the page; Refused with the reason when it cannot stand."""
        if not isinstance(payload, dict):
            raise Refused(HTTPStatus.BAD_REQUEST, "a decision is a JSON object")
        values = {key: payload.get(key, "") for key in ("item_id", "action", "field", "value", "note", "reviewer")}
        if not all(isinstance(v, str) for v in values.values()):
            raise Refused(HTTPStatus.BAD_REQUEST, "every value of a decision is text")
        values = {k: v.strip() for k, v in values.items()}
        if not values["reviewer"] or len(values["reviewer"]) > MAX_REVIEWER:
            raise Refused(HTTPStatus.BAD_REQUEST, f"give your name as reviewer (1 to {MAX_REVIEWER} characters)")
        if len(values["note"]) > MAX_NOTE:
            raise Refused(HTTPStatus.BAD_REQUEST, f"the note is longer than {MAX_NOTE} characters")
        if values["action"] not in ACTIONS:
            raise Refused(HTTPStatus.BAD_REQUEST, f"unknown action {values['action']!r}; one of {', '.join(ACTIONS)}")
        snapshot = self.index.current()
        if values["item_id"] not in snapshot.positions:
            raise Refused(HTTPStatus.NOT_FOUND, f"no face {values['item_id']!r} in this dataset's manifest "
                                                "(a build may have replaced it): reload the page")
        decision = Decision(decided_at=decisions_file.now(), **values)
        problems = decisions_file.validate([decision], snapshot.frame, set(snapshot.fields))
        if problems:
            raise Refused(HTTPStatus.BAD_REQUEST, "; ".join(problems))
        try:
            decisions_file.append(self.paths.root, [decision])
        except FacesetError as exc:
            raise Refused(HTTPStatus.BAD_REQUEST, exc.message) from exc
        return decision

    # ------------------------------------------------------------ files

    def file(self, relative: str) -> tuple[Path, str]:
        """A crop or original of the dataset and its type; Refused for anything else."""
        if relative.split("/", 1)[0] not in SERVED_FOLDERS:
            raise Refused(HTTPStatus.FORBIDDEN, f"only the dataset's {', '.join(SERVED_FOLDERS)} folders are served")
        try:
            candidate = inside(self.paths.root, relative, "file")
        except UnsafePath as exc:
            raise Refused(HTTPStatus.FORBIDDEN, exc.message) from exc
        real = candidate.resolve()
        if not real.is_relative_to(self.paths.root) or not real.is_file():
            raise Refused(HTTPStatus.NOT_FOUND, f"no file {relative!r} in the dataset")
        kind = mimetypes.guess_type(real.name)[0] or ""
        if not kind.startswith("image/"):
            raise Refused(HTTPStatus.FORBIDDEN, f"{relative!r} is not an image")
        return real, kind


def _query(params: dict[str, list[str]]) -> tuple[Query, int, int]:
    def one(name: str, default: str = "") -> str:
        return params.get(name, [default])[0].strip()

    def number(name: str, default: int, top: int) -> int:
        try:
            return min(max(1, int(one(name, str(default)))), top)
        except ValueError:
            return default

    query = Query(queue=one("queue", "flags") or "flags", field=one("field"), value=one("value"), split=one("split"),
                  status=one("status"), reason=one("reason"), decided=one("decided"))
    return query, number("page", 1, 10**9), number("size", PAGE_SIZE, MAX_PAGE_SIZE)


class Handler(BaseHTTPRequestHandler):
    """Routes: / (HTML), /api/page (JSON), /api/decisions (POST), /files/..., /static/..."""

    app: ReviewApp  # set on the class made for each server
    server_version = "faceset-review"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), terminal(format % args))

    def _send(self, status: HTTPStatus, body: bytes, kind: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, data: Any) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _refuse(self, refused: Refused, as_json: bool) -> None:
        if as_json:
            self._json(refused.status, {"error": refused.message})
        else:
            self._send(refused.status, refused.message.encode(), "text/plain; charset=utf-8")

    def _check_host(self) -> None:
        if self.app.hosts and self.headers.get("Host", "") not in self.app.hosts:
            raise Refused(HTTPStatus.FORBIDDEN, "this review app answers only at the address it printed")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        as_json = url.path.startswith("/api/")
        try:
            self._check_host()
            if url.path == "/":
                query, number, size = _query(parse_qs(url.query))
                self._send(HTTPStatus.OK, self.app.html(query, number, size).encode(), "text/html; charset=utf-8")
            elif url.path == "/api/page":
                query, number, size = _query(parse_qs(url.query))
                page, snapshot = self.app.page(query, number, size)
                self._json(HTTPStatus.OK, {**asdict(page), "manifest_version": snapshot.version})
            elif url.path.startswith(cards.FILES):
                path, kind = self.app.file(unquote(url.path[len(cards.FILES):]))
                self._send(HTTPStatus.OK, path.read_bytes(), kind, cache="private, max-age=300")
            elif url.path.startswith("/static/") and url.path[len("/static/"):] in STATIC_FILES:
                name = url.path[len("/static/"):]
                self._send(HTTPStatus.OK, (STATIC / name).read_bytes(), STATIC_FILES[name])
            else:
                raise Refused(HTTPStatus.NOT_FOUND, "no such page")
        except Refused as refused:
            self._refuse(refused, as_json)

    def do_POST(self) -> None:
        try:
            self._check_host()
            if urlsplit(self.path).path != "/api/decisions":
                raise Refused(HTTPStatus.NOT_FOUND, "no such page")
            origin = self.headers.get("Origin")
            if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
                raise Refused(HTTPStatus.FORBIDDEN, f"decisions are accepted from the review page only, not {origin}")
            if not hmac.compare_digest(self.headers.get(TOKEN_HEADER, ""), self.app.token):
                raise Refused(HTTPStatus.FORBIDDEN, "missing or wrong review token: reload the review page")
            if not self.headers.get("Content-Type", "").startswith("application/json"):
                raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "a decision is sent as application/json")
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a decision is 1 to {MAX_BODY} bytes of JSON")
            try:
                payload = json.loads(self.rfile.read(length))
            except ValueError as exc:
                raise Refused(HTTPStatus.BAD_REQUEST, f"the decision is not JSON ({exc})") from exc
            decision = self.app.decide(payload)
            self._json(HTTPStatus.OK, {"recorded": cards.said(decision), "decision": asdict(decision)})
        except Refused as refused:
            self.close_connection = True  # the body may be unread
            self._json(refused.status, {"error": refused.message})


def make_server(dataset_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, sample: int | None = None,
                stratify: str | None = None) -> tuple[ThreadingHTTPServer, ReviewApp]:
    """The server, bound but not yet serving (port 0 picks a free one), and its app."""
    app = ReviewApp(dataset_dir, sample, stratify)
    handler = type("ReviewHandler", (Handler,), {"app": app})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise FacesetError(f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                           "another program uses that port: give another with --port N") from exc
    server.daemon_threads = True
    bound = server.server_address[1]
    if host in ("127.0.0.1", "localhost", "::1"):
        app.hosts = {f"127.0.0.1:{bound}", f"localhost:{bound}", f"[::1]:{bound}"}
    return server, app


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve(dataset_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, sample: int | None = None,
          stratify: str | None = None) -> None:
    """Serve the review app until interrupted (Ctrl-C), printing its address first."""
    server, app = make_server(dataset_dir, host, port, sample, stratify)
    print(app.sample_note)
    print(f"review {terminal(app.paths.root)} at {url_of(server)} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
