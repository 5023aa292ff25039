"""Field parsers and item extraction, on strings (no crawl)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from parsel import Selector

from spiders.extract import image_urls, largest_in_srcset, read_items
from spiders.parsers import (
    apply_map,
    apply_regex,
    clean_text,
    parse_age,
    parse_birthdate,
    parse_field,
    parse_pronoun,
)
from spiders.politeness import retry_after_seconds
from spiders.sniff import image_type
from tasks.core.recipe import FieldSpec, ItemSpec

TODAY = date(2026, 6, 15)


@pytest.mark.parametrize(
    "text, age",
    [
        ("1985-03-14", "41"),
        ("1985-07-01", "40"),  # birthday still to come this year
        ("14.03.1985", "41"),
        ("14/07/1985", "40"),
        ("March 14, 1985", "41"),
        ("Mar. 14 1985", "41"),
        ("14 March 1985", "41"),
        ("14th of July 1985", "40"),
        ("Born: 1 janvier 1990", "36"),
        ("July 1985", "41"),  # month and year: year difference
        ("born 1979", "47"),
        ("1979", "47"),
        ("(b. 1962) is a historian", "64"),
        ("unknown", ""),
        ("2031", ""),  # in the future
        ("1066", ""),  # not a plausible birth year
        ("", ""),
    ],
)
def test_birthdate_formats(text: str, age: str) -> None:
    assert parse_birthdate(text, TODAY) == age


def test_birthdate_day_month_order() -> None:
    assert parse_birthdate("03/07/1985", TODAY, "dmy") == "40"  # 3 July: birthday to come
    assert parse_birthdate("03/07/1985", TODAY, "mdy") == "41"  # 7 March: birthday passed
    assert parse_birthdate("07/25/1985", TODAY, "dmy") == "40"  # only one reading possible


@pytest.mark.parametrize(
    "text, gender",
    [
        ("She joined in 2010. Her research is on trade.", "female"),
        ("He teaches; his students like him.", "male"),
        ("She worked with him on her thesis.", "female"),
        ("They lead the lab.", ""),
        ("She met him.", ""),  # a tie stays empty
        ("The shepherd and the hen", ""),  # no pronoun inside other words
        ("", ""),
    ],
)
def test_pronoun(text: str, gender: str) -> None:
    assert parse_pronoun(text) == gender


@pytest.mark.parametrize("text, age", [("Age: 34", "34"), ("34 years old", "34"), ("aged 7", "7"),
                                       ("Age: unknown", ""), ("Age 300", "")])
def test_age(text: str, age: str) -> None:
    assert parse_age(text) == age


def test_regex_map_and_clean() -> None:
    assert clean_text(["\n  Ada\xa0 ", " Lovelace  "]) == "Ada Lovelace"
    assert apply_regex("Department of Economics", "Department of (.+)") == "Economics"
    assert apply_regex("Room 12", r"\d+") == "12"
    assert apply_regex("nothing here", "Department of (.+)") == ""
    mapping = {"Computer Science": "cs", "Economics": "econ"}
    assert apply_map("Economics", mapping) == "econ"
    assert apply_map("  computer   science ", mapping) == "cs"
    assert apply_map("Astrology", mapping) is None


def test_field_pipeline_reports_unmapped() -> None:
    spec = FieldSpec(css="p", regex="Department of (.+)", map={"Economics": "econ"})
    assert parse_field(["Department of Economics"], spec, TODAY).value == "econ"
    result = parse_field(["Department of Astrology"], spec, TODAY)
    assert (result.value, result.unmapped) == ("", "Astrology")
    born = FieldSpec(css="dd", parse="birthdate")
    assert parse_field([" born ", "1979 "], born, TODAY).value == "47"


def test_image_urls_srcset_lazy_and_relative() -> None:
    page = Selector(text="""
        <img class="a" src="/spacer.gif" srcset="s.jpg 120w, big.jpg 480w, mid.jpg 240w">
        <img class="b" src="data:image/gif;base64,R0lG" data-src="lazy.jpg">
        <img class="c" src="../plain.png">
        <img class="d" src="javascript:void(0)">
        <img class="e" src="https://cdn.example.org/x.webp">
    """)
    base = "http://site.test/people/p1.html"
    spec = FieldSpec(css="img::attr(src)")
    assert image_urls(page, spec, base) == [
        "http://site.test/people/big.jpg",
        "http://site.test/people/lazy.jpg",
        "http://site.test/plain.png",
        "https://cdn.example.org/x.webp",
    ]
    assert image_urls(page, FieldSpec(css="img.a::attr(srcset)"), base) == ["http://site.test/people/big.jpg"]
    assert image_urls(page, FieldSpec(xpath="//img[@class='c']/@src"), base) == ["http://site.test/plain.png"]
    assert largest_in_srcset("a.jpg 1x, b.jpg 2x") == "b.jpg"


def test_read_items_each_block() -> None:
    page = Selector(text="""
        <div class="card"><img src="a.jpg"><h2> Ada </h2><p>She</p></div>
        <div class="card"><img src="b.jpg"><h2>Alan</h2><p>He</p></div>
        <div class="card"><h2>No photo</h2></div>
    """)
    spec = ItemSpec.model_validate({"each": "div.card", "image": "img::attr(src)",
                                    "fields": {"name": "h2", "gender": {"css": "p::text", "parse": "pronoun"}}})
    items = read_items(page, spec, "http://site.test/", TODAY)
    assert [(i.image_url, i.fields["name"], i.fields["gender"]) for i in items] == [
        ("http://site.test/a.jpg", "Ada", "female"),
        ("http://site.test/b.jpg", "Alan", "male"),
    ]


def test_sniff_and_retry_after() -> None:
    assert image_type(b"\xff\xd8\xff\xe0rest") == "jpg"
    assert image_type(b"\x89PNG\r\n\x1a\n....") == "png"
    assert image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert image_type(b"<html>not an image</html>") is None
    assert retry_after_seconds(b"7") == 7.0
    assert retry_after_seconds(b"garbage") is None
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0


def test_constant_field_labels_every_item_of_a_source() -> None:
    """`department: {value: cs}` labels a whole site without a selector (one site per department)."""
    page = Selector(text='<div class="card"><img src="a.jpg"></div><div class="card"><img src="b.jpg"></div>')
    spec = ItemSpec.model_validate({"each": "div.card", "image": "img::attr(src)",
                                    "fields": {"department": {"value": "Computer Science", "map": {"Computer Science": "cs"}}}})
    assert [i.fields["department"] for i in read_items(page, spec, "http://site.test/", TODAY)] == ["cs", "cs"]
    with pytest.raises(ValueError, match="exactly one of 'css', 'xpath' or 'value'"):
        FieldSpec.model_validate({"css": "h1", "value": "cs"})
    with pytest.raises(ValueError, match="the image needs a 'css' or 'xpath' selector"):
        ItemSpec.model_validate({"image": {"value": "http://site.test/a.jpg"}})
