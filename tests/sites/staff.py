"""A generated staff-directory website: departments, paginated listings, profile pages.

Generated in code (synthetic images made with Pillow), so tests and the crawl
benchmark can build a site of any size. `tricky=True` adds the cases a real crawl
meets: a robots.txt-disallowed folder, a broken and a missing image, a redirected
image, a slow image, a Latin-1 page, a person listed twice, srcset and lazy-loaded
images, a profile whose department no `map` key knows, and a listing built by
JavaScript from a JSON endpoint.
"""

from __future__ import annotations

import gzip
import html
import io
import json
from dataclasses import dataclass, field

from PIL import Image

from .server import Route

HUGE = 300_000  # bytes: above the max_image_bytes of the test recipe
DEPARTMENTS = {"cs": "Computer Science", "econ": "Economics", "hist": "History"}
FIRST_F = ["Ada", "Grace", "Mary", "Lin", "Amara", "Sofia", "Yuki", "Zara"]
FIRST_M = ["Alan", "John", "Kofi", "Ravi", "Lucas", "Omar", "Kenji", "Ivan"]
LAST = ["Okafor", "Nguyen", "Smith", "Garcia", "Kowalski", "Haddad", "Tanaka", "Silva", "Moreau", "Berg"]
# Birth dates as sites write them; the expected age is computed by the test from `born`.
BORN_FORMATS = ["{y}-{m:02d}-{d:02d}", "{d:02d}.{m:02d}.{y}", "{month} {d}, {y}", "{d} {month} {y}", "born {y}", "{y}"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


@dataclass
class Person:
    pid: str
    name: str
    dept: str  # department key
    gender: str  # female | male
    born: tuple[int, int, int]
    born_text: str
    image: str  # path of the image the profile shows
    img_html: str = ""
    encoding: str = "utf-8"
    private: bool = False
    dept_label: str = ""  # text after "Department of"; defaults to the department's name


@dataclass
class StaffSite:
    routes: dict[str, Route]
    people: list[Person]
    special: dict[str, str] = field(default_factory=dict)  # case -> person id

    def person(self, case: str) -> Person:
        return next(p for p in self.people if p.pid == self.special[case])


def jpeg(seed: int, size: int = 48) -> bytes:
    """A small synthetic JPEG, different for every seed."""
    colour = ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256)
    img = Image.new("RGB", (size, size), colour)
    img.putpixel((seed % size, (seed // size) % size), (255 - colour[0], 255, 0))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def _person(i: int) -> Person:
    gender = "female" if i % 2 == 0 else "male"
    first = (FIRST_F if gender == "female" else FIRST_M)[i % 8]
    y, m, d = 1950 + (i * 7) % 50, 1 + i % 12, 1 + (i * 5) % 28
    fmt = BORN_FORMATS[i % len(BORN_FORMATS)]
    return Person(
        pid=f"p{i:04d}",
        name=f"{first} {LAST[(i // 2) % len(LAST)]} {i}",
        dept=list(DEPARTMENTS)[i % len(DEPARTMENTS)],
        gender=gender,
        born=(y, m, d),
        born_text=fmt.format(y=y, m=m, d=d, month=MONTHS[m - 1]),
        image=f"/img/p{i:04d}.jpg",
    )


def profile_html(p: Person) -> str:
    subject, obj = ("She", "her") if p.gender == "female" else ("He", "his")
    img = p.img_html or f'<img class="portrait" src="{p.image}" alt="">'
    label = p.dept_label or DEPARTMENTS[p.dept]
    charset = f'<meta charset="{p.encoding}">'
    return (
        f"<!doctype html><html><head>{charset}<title>{html.escape(p.name)}</title></head><body>"
        f'<h1 class="name">\n  {html.escape(p.name)} </h1>{img}'
        f'<p class="dept">Department of {html.escape(label)}</p>'
        f'<p class="bio">{subject} joined the faculty in 2010. {subject} teaches and {obj} research is funded.</p>'
        f'<dl><dt>Born</dt><dd class="born">{html.escape(p.born_text)}</dd></dl>'
        "</body></html>"
    )


def listing_html(dept: str, people: list[Person], page: int, pages: int, prefix: str) -> str:
    rows = "".join(f'<tr><td><a class="staff" href="{prefix}/people/{p.pid}.html">{html.escape(p.name)}</a></td></tr>'
                   for p in people)
    nxt = f'<a class="pager-next" href="{page + 1}.html">next</a>' if page < pages else ""
    return f"<html><body><h1>{DEPARTMENTS.get(dept, dept)}</h1><table class='directory'>{rows}</table>{nxt}</body></html>"


def build(n: int = 30, per_page: int = 5, tricky: bool = False, page_delay: float = 0.0) -> StaffSite:
    """The site's routes and the people it lists (see the module docstring)."""
    people = [_person(i) for i in range(n)]
    routes: dict[str, Route] = {}
    special: dict[str, str] = {}
    if tricky:
        cases = ["broken", "missing", "redirect", "slow", "latin1", "srcset", "datasrc", "unmapped", "twice",
                 "robots_image", "huge", "bomb", "throttled"]
        for case, person in zip(cases, people):
            special[case] = person.pid
        people[0].image = "/img/broken.jpg"
        people[1].image = "/img/missing.jpg"
        people[2].image = f"/img/old/{people[2].pid}.jpg"
        people[3].image = "/img/slow.jpg"
        people[4].encoding, people[4].name = "iso-8859-1", "José Müller Ñúñez"
        people[5].img_html = (f'<img class="portrait" src="/img/spacer.gif" '
                              f'srcset="/img/{people[5].pid}-small.jpg 120w, {people[5].image} 480w">')
        people[6].img_html = ('<img class="portrait lazy" src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" '
                              f'data-src="{people[6].image}">')
        people[7].dept_label = "Astrology"
        people[9].image = f"/private/img/{people[9].pid}.jpg"
        people[10].image = "/img/huge.jpg"
        people[11].image = "/img/bomb.jpg"
        people[12].image = "/img/throttled.jpg"
        routes["/img/huge.jpg"] = Route(jpeg(10) + bytes(HUGE), "image/jpeg")
        routes["/img/bomb.jpg"] = Route(gzip.compress(jpeg(11) + bytes(HUGE)), "image/jpeg",
                                        headers={"Content-Encoding": "gzip"})
        busy = Route(b"busy", "text/plain", status=429, headers={"Retry-After": "1"})
        routes["/img/throttled.jpg"] = Route(jpeg(12), "image/jpeg", before=[busy])
        private = [Person(f"x{i}", f"Hidden Person {i}", "cs", "female", (1980, 1, 1), "1980", f"/img/x{i}.jpg",
                          private=True) for i in range(3)]
        routes["/robots.txt"] = Route(b"User-agent: *\nDisallow: /private/\n", "text/plain")
        routes["/private/dept/1.html"] = Route(listing_html("private", private, 1, 1, "/private").encode())
        for p in private:
            routes[f"/private/people/{p.pid}.html"] = Route(profile_html(p).encode())
        routes["/img/broken.jpg"] = Route(b"<html>this is not a picture</html>", "image/jpeg")
        routes[f"/img/old/{people[2].pid}.jpg"] = Route(status=302, headers={"Location": f"/img/{people[2].pid}.jpg"})
        routes["/img/slow.jpg"] = Route(jpeg(999), "image/jpeg", delay=3.0)
        routes["/img/spacer.gif"] = Route(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif")
        routes[f"/img/{people[5].pid}-small.jpg"] = Route(jpeg(5, 16), "image/jpeg")
        api = [{"id": p.pid, "name": p.name} for p in people[:6]]
        routes["/api/people.json"] = Route(json.dumps(api).encode(), "application/json")
        routes["/js/index.html"] = Route(JS_LISTING.encode())
    else:
        routes["/robots.txt"] = Route(b"User-agent: *\nAllow: /\n", "text/plain")
    by_dept: dict[str, list[Person]] = {d: [p for p in people if p.dept == d] for d in DEPARTMENTS}
    if tricky:  # the same person listed twice: also on the Computer Science listing
        by_dept["cs"].append(people[8])
    depts = "".join(f'<li><a href="/dept/{d}/1.html">{name}</a></li>' for d, name in DEPARTMENTS.items())
    private_link = '<li><a href="/private/dept/1.html">Hidden</a></li>' if tricky else ""
    routes["/index.html"] = Route(f'<html><body><ul class="departments">{depts}{private_link}</ul></body></html>'.encode())
    for dept, members in by_dept.items():
        pages = max(1, -(-len(members) // per_page))
        for page in range(1, pages + 1):
            chunk = members[(page - 1) * per_page : page * per_page]
            routes[f"/dept/{dept}/{page}.html"] = Route(listing_html(dept, chunk, page, pages, "").encode(), delay=page_delay,
                                                        headers={"ETag": f'"{dept}-{page}"'})
    for i, p in enumerate(people):
        content_type = "text/html" if p.encoding != "utf-8" else "text/html; charset=utf-8"
        routes[f"/people/{p.pid}.html"] = Route(profile_html(p).encode(p.encoding), content_type, delay=page_delay,
                                                headers={"ETag": f'"{p.pid}-page"'})
        if p.image == f"/img/{p.pid}.jpg":
            routes[p.image] = Route(jpeg(i), "image/jpeg", headers={"ETag": f'"{p.pid}"'})
    if tricky:
        routes[f"/img/{people[2].pid}.jpg"] = Route(jpeg(2), "image/jpeg")
    return StaffSite(routes, people, special)


JS_LISTING = """<!doctype html><html><head><meta charset="utf-8"><title>Staff</title></head><body>
<div id="staff"></div>
<script>
fetch('/api/people.json').then(r => r.json()).then(people => {
  const root = document.getElementById('staff');
  for (const p of people) {
    const card = document.createElement('div');
    card.className = 'card';
    const a = document.createElement('a');
    a.href = '/people/' + p.id + '.html';
    a.textContent = p.name;
    card.appendChild(a);
    root.appendChild(card);
  }
});
</script></body></html>"""


def recipe_dict(base: str, **crawl) -> dict:
    """A recipe for this site (the same shape a user would write)."""
    return {
        "name": "staff",
        "contact": "crawl-tests@example.org",
        "crawl": {"delay": 0, "concurrency": 8, "timeout": 1.5, "retries": 1, "backoff": 0.1,
                  "max_image_bytes": 200_000, **crawl},
        "sources": [
            {
                "name": "staffsite",
                "start_urls": [f"{base}/index.html"],
                "follow": [
                    {"links": "ul.departments a"},
                    {"links": "table.directory a.staff", "next_page": "a.pager-next"},
                ],
                "item": {
                    "image": "img.portrait::attr(src)",
                    "fields": {
                        "name": "h1.name::text",
                        "label": {"css": "p.dept::text", "regex": "Department of (.+)",
                                  "map": {"Computer Science": "cs", "Economics": "econ", "History": "hist"}},
                        "gender": {"css": "p.bio::text", "parse": "pronoun"},
                        "age": {"css": "dd.born::text", "parse": "birthdate"},
                    },
                },
            }
        ],
        "target": "label",
        "attributes": ["gender", "age"],
    }
