"""Field parsers: turn the text a selector found into the label the dataset stores.

Recipe authors describe a field as selector -> `regex` -> `map` -> `parse`; each step
here is a pure function of strings, so it is tested without a crawl. A value that
cannot be read becomes the empty string (never a guess), and `map` reports values it
did not know so the author can add them (reports/crawl.json).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from tasks.core.recipe import FieldSpec

_SPACE = re.compile(r"\s+")

FEMALE = {"she", "her", "hers", "herself"}
MALE = {"he", "him", "his", "himself"}
_WORD = re.compile(r"[a-z]+")

MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan", "janvier", "januar", "enero"),
            ("february", "feb", "fevrier", "février", "februar", "febrero"),
            ("march", "mar", "mars", "märz", "marzo"),
            ("april", "apr", "avril", "abril"),
            ("may", "mai", "mayo"),
            ("june", "jun", "juin", "juni", "junio"),
            ("july", "jul", "juillet", "juli", "julio"),
            ("august", "aug", "août", "aout", "agosto"),
            ("september", "sep", "sept", "septembre", "septiembre"),
            ("october", "oct", "octobre", "oktober", "octubre"),
            ("november", "nov", "novembre", "noviembre"),
            ("december", "dec", "décembre", "decembre", "dezember", "diciembre"),
        ],
        start=1,
    )
    for name in names
}
_MONTH_WORD = "(" + "|".join(sorted((re.escape(m) for m in MONTHS), key=len, reverse=True)) + r")\.?"
_YEAR = r"(1[89]\d\d|20\d\d)"
_ISO = re.compile(rf"\b{_YEAR}[-/.](\d{{1,2}})[-/.](\d{{1,2}})\b")
_NUMERIC = re.compile(rf"\b(\d{{1,2}})[-/.](\d{{1,2}})[-/.]{_YEAR}\b")
_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\.?\s+(?:of\s+)?{_MONTH_WORD},?\s+{_YEAR}\b", re.IGNORECASE)
_MONTH_DAY = re.compile(rf"\b{_MONTH_WORD}\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+{_YEAR}\b", re.IGNORECASE)
_MONTH_YEAR = re.compile(rf"\b{_MONTH_WORD},?\s+{_YEAR}\b", re.IGNORECASE)
_BARE_YEAR = re.compile(rf"(?<!\d){_YEAR}(?!\d)")
_AGE = re.compile(r"(?<!\d)(\d{1,3})(?!\d)")
MAX_AGE = 120


def clean_text(parts: list[str]) -> str:
    """Join the text nodes a selector returned and collapse all whitespace (incl. NBSP)."""
    return _SPACE.sub(" ", " ".join(parts)).strip()


def apply_regex(value: str, pattern: str) -> str:
    """The first group of the first match (or the whole match when the pattern has no group)."""
    match = re.search(pattern, value)
    if match is None:
        return ""
    groups = [g for g in match.groups() if g is not None]
    return (groups[0] if groups else match.group(0)).strip()


def _norm_key(key: str) -> str:
    return _SPACE.sub(" ", key).strip().casefold()


def apply_map(value: str, mapping: dict[str, str]) -> str | None:
    """The mapped value, matching keys exactly, then ignoring case and spacing; None if unknown."""
    if value in mapping:
        return mapping[value]
    wanted = _norm_key(value)
    for key, mapped in mapping.items():
        if _norm_key(key) == wanted:
            return mapped
    return None


def parse_pronoun(text: str) -> str:
    """`female` or `male` from the pronouns in a bio; empty when there are none or it is a tie.

    Counting (rather than taking the first pronoun) keeps "She worked with him" right,
    and a tie stays empty because a wrong label is worse than a missing one.
    """
    words = _WORD.findall(text.casefold())
    female = sum(w in FEMALE for w in words)
    male = sum(w in MALE for w in words)
    if female > male:
        return "female"
    if male > female:
        return "male"
    return ""


def parse_age(text: str) -> str:
    """Whole years from text like "Age: 34" or "34 years old"; empty if no plausible age."""
    for match in _AGE.finditer(text):
        age = int(match.group(1))
        if 0 < age <= MAX_AGE:
            return str(age)
    return ""


def _years_between(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def read_birthdate(text: str, date_order: str = "dmy") -> tuple[date, bool] | None:
    """The birth date in `text` and whether it is exact (False: only the year is known).

    Understands ISO dates, 14.03.1985, 03/14/1985 (with `date_order` deciding 03/04),
    "14 March 1985", "March 14, 1985", "March 1985" and a bare year ("born 1985").
    """
    if match := _ISO.search(text):
        found = _safe_date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        if found:
            return found, True
    if match := _NUMERIC.search(text):
        first, second, year = int(match.group(1)), int(match.group(2)), int(match.group(3))
        day, month = (first, second) if date_order == "dmy" else (second, first)
        if month > 12 and day <= 12:  # only one reading is possible
            day, month = month, day
        found = _safe_date(year, month, day)
        if found:
            return found, True
    if match := _DAY_MONTH.search(text):
        found = _safe_date(int(match.group(3)), MONTHS[match.group(2).casefold()], int(match.group(1)))
        if found:
            return found, True
    if match := _MONTH_DAY.search(text):
        found = _safe_date(int(match.group(3)), MONTHS[match.group(1).casefold()], int(match.group(2)))
        if found:
            return found, True
    if match := _MONTH_YEAR.search(text):
        return date(int(match.group(2)), MONTHS[match.group(1).casefold()], 1), False
    if match := _BARE_YEAR.search(text):
        return date(int(match.group(1)), 1, 1), False
    return None


def parse_birthdate(text: str, today: date, date_order: str = "dmy") -> str:
    """Age in whole years on `today` (the crawl date); empty if no date or not plausible.

    With only a year (or month and year) known, the age is today's year minus the birth
    year: it may be one year too high for people whose birthday is still to come.
    """
    found = read_birthdate(text, date_order)
    if found is None:
        return ""
    born, exact = found
    age = _years_between(born, today) if exact else today.year - born.year
    return str(age) if 0 <= age <= MAX_AGE and born <= today else ""


@dataclass
class FieldValue:
    """A parsed field, and the text `map` did not know (None when nothing was unmapped)."""

    value: str
    unmapped: str | None = None


def parse_field(parts: list[str], spec: FieldSpec, today: date) -> FieldValue:
    """Run a field's clean-up steps in recipe order: clean -> regex -> map -> parse."""
    value = clean_text(parts)
    if spec.regex is not None and value:
        value = apply_regex(value, spec.regex)
    unmapped = None
    if spec.map is not None and value:
        mapped = apply_map(value, spec.map)
        if mapped is None:
            unmapped, value = value, ""
        else:
            value = mapped
    if spec.parse == "pronoun":
        value = parse_pronoun(value)
    elif spec.parse == "age":
        value = parse_age(value)
    elif spec.parse == "birthdate":
        value = parse_birthdate(value, today, spec.date_order)
    return FieldValue(value, unmapped)
