"""Generated sites of the shapes real directories take, with real faces, for `faceset recipe new`.

Every shape serves the same people (UTKFace portraits from ../shared/corpus, adults) in
its own markup: a listing linking to profiles; department listings that paginate; a team
page with every person in a card; lazy-loaded `srcset` portraits in `<picture>`; a
listing built by JavaScript from JSON; profiles with a logo, icons and a campus photo
beside the portrait. Two more (`unseen_static`, `unseen_js`) use other markup and class
names and are kept out of the tests: the benchmark's check on sites the suggester was not
tuned on. Each page also carries the site's header logo, so an image found everywhere
must be told from the portrait.
"""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from .server import Route

DEPTS = ["Biology", "Chemistry", "Physics"]
FIRST = ["Ada", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gia", "Hugo", "Ines", "Jon", "Kai", "Lea"]
LAST = ["Okafor", "Nguyen", "Smith", "Garcia", "Kowalski", "Haddad", "Tanaka", "Silva", "Moreau", "Berg"]
SHAPES = ("directory", "departments", "team", "lazy", "javascript", "logos")
UNSEEN = ("unseen_static", "unseen_js")


@dataclass
class Person:
    pid: str
    name: str
    gender: str
    born: int
    dept: str
    photo: str  # the portrait's path on the site


@dataclass
class ShapeSite:
    shape: str
    routes: dict[str, Route]
    people: list[Person]
    start: str = "/"


def faces(utkface: Path, n: int) -> list[tuple[bytes, str, int]]:
    """n adult faces (JPEG bytes, gender, age) from UTKFace, the same ones on every call."""
    out = []
    with open(utkface / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if 25 <= int(row["age"]) <= 60:
                out.append((_portrait(utkface / row["file"]), "female" if row["gender"] == "1" else "male",
                            int(row["age"])))
            if len(out) == n:
                break
    return out


def _portrait(path: Path) -> bytes:
    """The face at 320 px, as a profile page shows it (UTKFace's 200 px chips are under the faces stage's 5 KB)."""
    out = io.BytesIO()
    Image.open(path).convert("RGB").resize((320, 320)).save(out, "JPEG", quality=92)
    return out.getvalue()


def _png(size: tuple[int, int], colour: tuple[int, int, int], seed: int = 0) -> bytes:
    """A picture without a face: a logo, an icon, a campus photo (stripes)."""
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    for x in range(0, size[0], 12):
        draw.line([(x + seed % 7, 0), (x, size[1])], fill=(255 - colour[0], 200, seed * 13 % 256), width=3)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _page(body: str, title: str = "Staff", head: str = "") -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{head}</head><body>"
            "<header class='site-header'><img class='logo' src='/static/logo.png' alt='Logo'>"
            "<nav><a href='/'>Home</a> <a href='/about.html'>About</a></nav></header>"
            f"<main>{body}</main><footer><a href='/contact.html'>Contact</a></footer></body></html>").encode()


def _bio(p: Person) -> str:
    s, o = ("She", "her") if p.gender == "female" else ("He", "his")
    return f"{s} joined the {p.dept} group in 2015. {s} teaches and {o} research is funded."


def _profile(p: Person, shape: str) -> bytes:
    portrait = f"<img class='portrait' src='{p.photo}' alt='{html.escape(p.name)}'>"
    extra = ""
    if shape == "lazy":
        portrait = (f"<picture class='photo'><source type='image/webp' data-srcset='{p.photo}?w=100 100w'>"
                    "<img class='lazyload' src='data:image/gif;base64,R0lGODlhAQABAAAAACw=' "
                    f"data-srcset='{p.photo}?w=100 100w, {p.photo} 400w' alt=''></picture>")
    if shape == "logos":
        extra = (f"<img class='campus' src='/campus/{p.pid}.png' alt='campus'>"
                 "<span class='social'><img src='/static/mail.png'><img src='/static/phone.png'></span>")
    if shape == "unseen_static":
        return _page(f"<article class='bio-page'><div class='headshot'><img src='{p.photo}'></div>"
                     f"<h2 class='person-title'>{html.escape(p.name)}</h2>"
                     f"<table class='facts'><tr><th>Unit</th><td>{p.dept}</td></tr>"
                     f"<tr><th>Year of birth</th><td>{p.born}</td></tr></table>"
                     f"<div class='about'>{_bio(p)}</div></article>", p.name)
    return _page(f"<div class='profile'>{extra}<h1 class='name'>{html.escape(p.name)}</h1>{portrait}"
                 f"<p class='dept'>Department of {p.dept}</p><p class='bio'>{_bio(p)}</p>"
                 f"<dl><dt>Born</dt><dd>{p.born}</dd><dt>Office</dt><dd>Room {100 + int(p.pid[1:])}</dd></dl></div>",
                 p.name)


_JS = """<div id='grid'></div><script>
fetch('/api/people.json').then(r => r.json()).then(people => {
  const grid = document.getElementById('grid');
  for (const p of people) {
    const a = document.createElement('a'); a.className = '%s'; a.href = p.url; a.textContent = p.name;
    const li = document.createElement('div'); li.className = 'entry'; li.appendChild(a); grid.appendChild(li);
  }
});
</script>"""


def build(shape: str, utkface: Path, n: int = 12, per_page: int = 4) -> ShapeSite:
    """The site of one shape (SHAPES or UNSEEN) with n people."""
    people = []
    routes: dict[str, Route] = {
        "/robots.txt": Route(b"User-agent: *\nDisallow: /private/\n", "text/plain"),
        "/static/logo.png": Route(_png((240, 80), (20, 60, 140)), "image/png"),
        "/static/mail.png": Route(_png((24, 24), (200, 30, 30)), "image/png"),
        "/static/phone.png": Route(_png((24, 24), (30, 160, 30)), "image/png"),
        "/about.html": Route(_page("<p>About us</p>")), "/contact.html": Route(_page("<p>Write to us</p>")),
    }
    for i, (data, gender, age) in enumerate(faces(utkface, n)):
        p = Person(f"p{i:03d}", f"{FIRST[i % len(FIRST)]} {LAST[i % len(LAST)]}", gender, 2025 - age,
                   DEPTS[i % len(DEPTS)], f"/photos/{i:03d}.jpg")
        people.append(p)
        routes[p.photo] = Route(data, "image/jpeg")
        routes[f"/campus/{p.pid}.png"] = Route(_png((320, 200), (90, 120, 90), i), "image/png")
        routes[f"/people/{p.pid}.html"] = Route(_profile(p, shape))
    link = "<a class='person' href='/people/{pid}.html'>{name}</a>"
    if shape in ("directory", "lazy", "logos"):
        rows = "".join(f"<li>{link.format(pid=p.pid, name=html.escape(p.name))}</li>" for p in people)
        routes["/"] = Route(_page(f"<h1>Our staff</h1><ul class='staff-list'>{rows}</ul>"))
    elif shape == "departments":
        depts = "".join(f"<li><a href='/dept/{d.lower()}/1.html'>{d}</a></li>" for d in DEPTS)
        routes["/"] = Route(_page(f"<h1>Departments</h1><ul class='departments'>{depts}</ul>"))
        for d in DEPTS:
            members = [p for p in people if p.dept == d]
            pages = max(1, -(-len(members) // per_page))
            for k in range(1, pages + 1):
                rows = "".join(f"<tr><td>{link.format(pid=p.pid, name=html.escape(p.name))}</td></tr>"
                               for p in members[(k - 1) * per_page:k * per_page])
                nxt = f"<a class='pager-next' href='{k + 1}.html'>Next</a>" if k < pages else ""
                routes[f"/dept/{d.lower()}/{k}.html"] = Route(_page(f"<h1>{d}</h1><table class='directory'>{rows}</table>{nxt}"))
    elif shape == "team":  # cards over pages of 3 * per_page people
        size = 3 * per_page
        pages = max(1, -(-len(people) // size))
        for k in range(1, pages + 1):
            cards = "".join(f"<div class='card'><img class='avatar' src='{p.photo}' alt=''><h3>{html.escape(p.name)}</h3>"
                            f"<p class='role'>Department of {p.dept}</p><p class='about'>{_bio(p)}</p></div>"
                            for p in people[(k - 1) * size:k * size])
            nxt = f"<p class='pages'><a href='/team/{k + 1}.html'>Next &raquo;</a></p>" if k < pages else ""
            routes["/" if k == 1 else f"/team/{k}.html"] = Route(_page(f"<h1>Our team</h1><section class='team'>{cards}</section>{nxt}"))
    elif shape in ("javascript", "unseen_js"):
        css = "person" if shape == "javascript" else "member-link"
        api = [{"url": f"/people/{p.pid}.html", "name": p.name} for p in people]
        routes["/api/people.json"] = Route(json.dumps(api).encode(), "application/json")
        routes["/"] = Route(_page("<h1>People</h1>" + _JS % css))
    elif shape == "unseen_static":
        rows = "".join(f"<article class='member'><h4>{html.escape(p.name)}</h4>"
                       f"<a class='more' href='/people/{p.pid}.html'>Read more</a></article>" for p in people)
        routes["/"] = Route(_page(f"<div class='members-grid'>{rows}</div>"))
    else:
        raise ValueError(f"unknown shape {shape}")
    return ShapeSite(shape, routes, people)
