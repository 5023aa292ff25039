"""A local demo website of staff profiles, built from a folder of labelled face photos.

`faceset demo` crawls it like any real site: a paginated directory of profile pages,
each with a portrait and its labels written as prose ("She joined ...", "Born 1987"),
so the recipe's parsers do real work. A few deliberately bad entries (a missing image,
a web page served as an image, a group photo, the same person listed twice) show
what the pipeline does with them. Served on 127.0.0.1 only.

For the validation study, a share of profiles can state the wrong gender
(`wrong_gender`): label errors the cross-check should flag and gold labels reveal. Each
profile keeps the corpus's own labels (`truth`), where the demo's gold labels come from.

The labels CSV has a `file` column plus label columns. UTKFace's `labels.csv`
(age, gender 0 male / 1 female, race 0-4) is understood natively, adults only; for any
other CSV, every column becomes a field as plain text.
"""

from __future__ import annotations

import csv
import html
import io
import random
import threading
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, ImageFilter

from tasks.core.errors import FacesetError

PER_PAGE = 24
UTK_RACES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}
FIRST = ["Alex", "Sam", "Robin", "Kim", "Jordan", "Taylor", "Casey", "Morgan", "Jamie", "Riley", "Avery", "Quinn"]
LAST = ["Okafor", "Nguyen", "Smith", "Garcia", "Kowalski", "Haddad", "Tanaka", "Silva", "Ivanova", "Moreau", "Khan", "Berg"]


@dataclass
class Profile:
    slug: str
    name: str
    photo: str  # path of the served image, e.g. /img/p0001.jpg
    fields: dict[str, str] = field(default_factory=dict)
    bio: str = ""
    truth: dict[str, str] = field(default_factory=dict)  # the labels CSV's values (UTKFace: gender, age)


@dataclass
class DemoSite:
    """The site's content: profiles and the image bytes behind each /img/ path."""

    profiles: list[Profile]
    images: dict[str, bytes]
    utkface: bool

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.profiles) // PER_PAGE))


def read_labels(images_dir: Path) -> list[dict[str, str]]:
    """Rows of the labels CSV in `images_dir` (labels.csv, or the only CSV there)."""
    candidates = [images_dir / "labels.csv"] if (images_dir / "labels.csv").is_file() else sorted(images_dir.glob("*.csv"))
    if len(candidates) != 1:
        raise FacesetError(
            f"{images_dir} has no labels CSV (or more than one)",
            "put a labels.csv there with a 'file' column and one column per label, e.g. file,gender,age",
        )
    with candidates[0].open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "file" not in rows[0]:
        raise FacesetError(f"{candidates[0]} has no 'file' column", "name the image file column 'file'")
    return [r for r in rows if (images_dir / r["file"]).is_file()]


def _portrait(path: Path, rng: random.Random) -> bytes:
    """The photo on a larger, softly coloured canvas, as a profile portrait would be."""
    with Image.open(path) as img:
        face = img.convert("RGB")
    width, height = int(face.width * 1.6), int(face.height * 1.9)
    tint = tuple(rng.randint(150, 235) for _ in range(3))
    canvas = Image.new("RGB", (width, height), tint)
    backdrop = face.resize((width, height)).filter(ImageFilter.GaussianBlur(24))
    canvas = Image.blend(canvas, backdrop, 0.35)
    canvas.paste(face, ((width - face.width) // 2, int(height * 0.18)))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=92)
    return out.getvalue()


def _group_photo(paths: list[Path]) -> bytes:
    faces = [Image.open(p).convert("RGB") for p in paths]
    canvas = Image.new("RGB", (sum(f.width for f in faces) + 40 * len(faces), max(f.height for f in faces) + 120), (90, 110, 140))
    x = 20
    for face in faces:
        canvas.paste(face, (x, 60))
        x += face.width + 40
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=92)
    return out.getvalue()


def _utk_fields(row: dict[str, str], rng: random.Random) -> tuple[dict[str, str], str]:
    age = int(row["age"])
    pronoun, possessive = ("She", "her") if row["gender"] == "1" else ("He", "his")
    born = date.today().year - age - (1 if rng.random() < 0.5 else 0)
    fields = {"born": f"Born {born}", "race": UTK_RACES.get(row["race"], "Others")}
    bio = f"{pronoun} joined the department in {2000 + rng.randint(0, 24)} and leads {possessive} own seminar."
    return fields, bio


def _misstate_gender(profile: Profile) -> None:
    """The bio's pronouns swapped: the page says the other gender, the truth stays."""
    swapped = {"She": "He", "He": "She", "her": "his", "his": "her"}
    profile.bio = " ".join(swapped.get(word, word) for word in profile.bio.split(" "))


def _distinct(name: str, taken: set[str]) -> str:
    """`name`, or with a middle initial (then a number) when another profile has it."""
    first, last = name.split(" ", 1)
    candidates = [f"{first} {letter}. {last}" for letter in "ABCDEFGHIJKLMNOPRSTVW"]
    candidate = next((c for c in [name, *candidates] if c not in taken), None)
    candidate = candidate or next(f"{name} {n}" for n in range(2, len(taken) + 2) if f"{name} {n}" not in taken)
    taken.add(candidate)
    return candidate


def build_site(images_dir: Path, limit: int | None = None, seed: int = 7, extras: bool = True,
               wrong_gender: float = 0.0, distinct_names: bool = False) -> DemoSite:
    """Profiles for the first `limit` labelled photos (a seeded sample), plus bad entries;
    with `wrong_gender`, that share of UTKFace profiles (seeded) states the other gender.

    Names are drawn from 144 pairs, so two profiles can share one, and the split then keeps
    them together as one person (same name within a source). The studies ask for
    `distinct_names`: their variants select whole people, and made-up namesakes would tie
    unrelated faces together. The staff demo keeps its names (its golden manifest)."""
    rows = read_labels(images_dir)
    if not rows:
        raise FacesetError(f"{images_dir} has a labels CSV but none of its files exist", "check the 'file' column")
    rng = random.Random(seed)
    rng.shuffle(rows)
    utkface = {"age", "gender", "race"} <= set(rows[0])
    if utkface:  # a staff directory shows adults; UTKFace also has children
        rows = [r for r in rows if 18 <= int(r["age"]) <= 80]
    rows = rows[:limit] if limit else rows
    profiles: list[Profile] = []
    images: dict[str, bytes] = {}
    taken: set[str] = set()
    for number, row in enumerate(rows, start=1):
        photo = f"/img/p{number:05d}.jpg"
        images[photo] = _portrait(images_dir / row["file"], rng)
        if utkface:
            fields, bio = _utk_fields(row, rng)
        else:
            fields, bio = {k: v for k, v in row.items() if k != "file"}, ""
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        name = _distinct(name, taken) if distinct_names else name
        truth = {"gender": "female" if row["gender"] == "1" else "male", "age": row["age"]} if utkface else {}
        profiles.append(Profile(f"p{number:05d}", name, photo, fields, bio, truth))
    if utkface and wrong_gender > 0:  # its own draw: the other profiles stay as without errors
        for profile in random.Random(seed + 1).sample(profiles, round(wrong_gender * len(profiles))):
            _misstate_gender(profile)
    if extras and len(profiles) >= 4:
        first = profiles[0]
        # The same person listed twice (a joint appointment): a duplicate to find.
        profiles.append(Profile("joint-appointment", first.name, first.photo, dict(first.fields), first.bio,
                                dict(first.truth)))
        # A portrait that is missing on the server: a failed download.
        profiles.append(Profile("missing-photo", "Pat Doe", "/img/missing.jpg", dict(first.fields), first.bio))
        # A web page served where the portrait should be: not an image.
        images["/img/broken.jpg"] = b"<html><body>Image temporarily unavailable</body></html>"
        profiles.append(Profile("broken-photo", "Lee Roe", "/img/broken.jpg", dict(first.fields), first.bio))
        # A team photo with two faces: quarantined, not silently cropped.
        images["/img/team.jpg"] = _group_photo([images_dir / rows[1]["file"], images_dir / rows[2]["file"]])
        profiles.append(Profile("team-photo", "Lab Team", "/img/team.jpg", dict(first.fields), first.bio))
    return DemoSite(profiles, images, utkface)


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body>{body}</body></html>").encode()


def render(site: DemoSite, path: str) -> tuple[int, str, bytes]:
    """The response (status, content type, body) for a path of the demo site."""
    if path in ("/", "/index.html"):
        return 200, "text/html", _page("Faculty directory", "<h1>Faculty</h1><a class='directory' href='/staff/1.html'>Staff directory</a>")
    if path == "/robots.txt":
        return 200, "text/plain", b"User-agent: *\nDisallow: /private/\n"
    if path.startswith("/staff/") and path.endswith(".html"):
        try:
            number = int(path[len("/staff/"):-len(".html")])
        except ValueError:
            return 404, "text/plain", b"not found"
        if not 1 <= number <= site.pages:
            return 404, "text/plain", b"not found"
        chunk = site.profiles[(number - 1) * PER_PAGE : number * PER_PAGE]
        rows = "".join(f"<li><a class='staff' href='/people/{p.slug}.html'>{html.escape(p.name)}</a></li>" for p in chunk)
        pager = f"<a class='pager-next' href='/staff/{number + 1}.html'>next</a>" if number < site.pages else ""
        return 200, "text/html", _page(f"Staff page {number}", f"<ul class='directory'>{rows}</ul>{pager}")
    if path.startswith("/people/") and path.endswith(".html"):
        slug = path[len("/people/"):-len(".html")]
        for profile in site.profiles:
            if profile.slug == slug:
                details = "".join(f"<dt>{html.escape(k)}</dt><dd class='{html.escape(k)}'>{html.escape(v)}</dd>"
                                  for k, v in profile.fields.items())
                body = (f"<h1 class='name'>{html.escape(profile.name)}</h1>"
                        f"<img class='portrait' src='..{profile.photo}' alt='portrait'>"
                        f"<p class='bio'>{html.escape(profile.bio)}</p><dl>{details}</dl>")
                return 200, "text/html", _page(profile.name, body)
        return 404, "text/plain", b"not found"
    if path in site.images:
        return 200, "image/jpeg", site.images[path]
    return 404, "text/plain", b"not found"


class DemoServer:
    """The demo site on 127.0.0.1 in a background thread; use as a context manager."""

    def __init__(self, site: DemoSite, port: int = 0) -> None:
        self.site = site
        self.requests: list[str] = []
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                status, kind, body = render(server.site, path)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Quiet: the crawl report counts requests."""

        return Handler

    def __enter__(self) -> "DemoServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# The demo's fine-tune: frozen Lite0 middle stage on a 6x6 grid, a 2-point grid (a minute on two cores).
DEMO_FINETUNE = """
  model: tf_efficientnet_lite0
  weights: lite0
  freeze: head
  features_from: blocks.3  # the middle stage on a 6x6 grid: transfers to aligned faces better than the last
  pool: 6
  eval_crop: 1.0
  image_size: 160
  epochs: {epochs}
  grid: {{lr: [0.001, 0.005], momentum: [0.9], batch_size: [16], weight_decay: [0.1, 0.3]}}"""


def recipe_text(site: DemoSite, url: str, name: str = "demo-staff", epochs: int = 10,
                sections: dict[str, str] | None = None) -> str:
    """A recipe for the demo site, as a user would write it (docs/recipe-reference.md).

    `sections` replaces top-level sections after the sources (target, attributes, faces,
    dedupe, crosscheck, split, finetune) by YAML text: each study's own design."""
    if site.utkface:
        fields = """        name: "h1.name::text"
        gender: {css: "p.bio::text", parse: pronoun}
        age: {css: "dd.born::text", parse: birthdate}
        race: "dd.race::text"
"""
        target, attributes, crosscheck = "gender", "[age, race]", "{gender: gender, age: {field: age, margin: 10}}"
        stratify = "[gender, race]"
    else:
        keys = list(site.profiles[0].fields)
        fields = '        name: "h1.name::text"\n' + "".join(f'        {k}: "dd.{k}::text"\n' for k in keys)
        target, attributes, crosscheck, stratify = keys[0], f"[{', '.join(keys[1:])}]", "{}", f"[{keys[0]}]"
    design = {
        "target": f" {target}",
        "attributes": f" {attributes}",
        "faces": " {size: 160, min_face_px: 40, max_faces: 1, min_score: 0.7, blur_threshold: 20}",
        "dedupe": " {max_distance: 6, mirror: true, identity: true}",
        "crosscheck": f"\n  autotagger: local\n  fields: {crosscheck}\n  on_disagreement: flag",
        "split": f" {{train: 0.7, val: 0.2, test: 0.1, stratify: {stratify}, seed: 13}}",
        "finetune": DEMO_FINETUNE.format(epochs=epochs),
    }
    unknown = set(sections or {}) - set(design)
    if unknown:
        raise ValueError(f"recipe_text: unknown sections {sorted(unknown)}")
    design.update(sections or {})
    return f"""# Written by `faceset demo` for its local demo site.
name: {name}
description: Staff portraits of a demo faculty directory, labelled by the profile text
license: demo data for trying faceset; research use only
contact: faceset-demo@example.invalid
crawl: {{delay: 0, concurrency: 8, obey_robots: true}}
sources:
  - name: demo-faculty
    start_urls: ["{url}/index.html"]
    follow:
      - links: "a.directory"
      - links: "ul.directory a.staff"
        next_page: "a.pager-next"
    item:
      image: "img.portrait::attr(src)"
      fields:
{fields}""" + "".join(f"{key}:{text}\n" for key, text in design.items())
