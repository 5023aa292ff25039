"""Jinja2 for the HTML pages stages write: templates beside the code, escaping by default.

Each package keeps its `*.html.j2` files in its own `templates/` folder, so a template
edit changes that stage's cache key (flows/caching.py hashes a package's `*.j2` files)
and restyling never needs the Python. Every value is escaped unless a template says
otherwise; a name a template uses but the caller did not pass is an error, not a blank.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup


@cache
def environment(package: str) -> Environment:
    """The environment over `package`'s templates/ folder (e.g. 'tasks.report').

    `fmt` is Python's format() (`{{ share|fmt('.1%') }}`), so templates format numbers as
    the f-strings they replace did.
    """
    env = Environment(loader=PackageLoader(package, "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = format
    return env


def render(package: str, template: str, **context: Any) -> Markup:
    """`template` of `package` rendered with `context`, as markup: a fragment placed in another
    template is not escaped twice."""
    return Markup(environment(package).get_template(template).render(**context))
