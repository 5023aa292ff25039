"""Attack: image URLs on the user's own network (loopback, private, link-local: cloud metadata).

A hostile page lists an image at `http://169.254.169.254/latest/meta-data/iam/security-credentials/`
and faceset requested it. Now a non-global address is refused unless the recipe's start
URLs are on that host or `crawl.allow_private_hosts` names it; the address is what the
host *resolves* to, so a name such as `localhost` is loopback too. Traffic stays on
127.0.0.0/8: 127.0.0.2 plays the other machine, and addresses outside it are only
judged, never requested.
"""

from __future__ import annotations

import pytest
from sites.hostile import OTHER_HOST, image, manifest, recipe, serve

from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.core.urls import UrlPolicy, check_addresses, check_url, resolve, url_policy
from tasks.fetch import stage as fetch

METADATA = "/latest/meta-data/iam/security-credentials/faceset-role"
HINT = "(not a host of the recipe's start URLs; crawl.allow_private_hosts can allow it)"


@pytest.mark.parametrize("url, kind, address", [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local", "169.254.169.254"),
    ("http://10.0.0.5/a.jpg", "private", "10.0.0.5"),
    ("http://192.168.1.1:8080/a.jpg", "private", "192.168.1.1"),
    ("http://127.0.0.2/a.jpg", "loopback", "127.0.0.2"),
    ("http://[::1]/a.jpg", "loopback", "::1"),
    ("http://[::ffff:169.254.169.254]/a.jpg", "link-local", "::ffff:a9fe:a9fe"),
    ("http://[fd00::1]/a.jpg", "private", "fd00::1"),
    ("http://0.0.0.0/a.jpg", "unspecified", "0.0.0.0"),
    ("http://100.64.0.1/a.jpg", "non-global", "100.64.0.1"),
])
def test_non_global_addresses_are_refused(url: str, kind: str, address: str) -> None:
    assert check_url(url, UrlPolicy()) == f"refused: {kind} address {address} {HINT}"


def test_public_addresses_and_trusted_hosts_pass() -> None:
    assert check_url("https://93.184.216.34/a.jpg", UrlPolicy()) is None
    policy = UrlPolicy.allowing(["127.0.0.2", "intranet.example", "10.1.0.0/16"])
    assert check_url("http://127.0.0.2:8000/a.jpg", policy) is None
    assert check_url("http://10.1.2.3/a.jpg", policy) is None
    assert check_url("http://10.2.0.1/a.jpg", policy) == f"refused: private address 10.2.0.1 {HINT}"
    assert check_addresses("intranet.example", ["10.9.9.9"], policy) is None


def test_a_name_is_judged_by_the_addresses_it_resolves_to() -> None:
    policy = UrlPolicy()
    assert check_addresses("metadata.evil.test", ["169.254.169.254"], policy) == \
        f"refused: link-local address 169.254.169.254 {HINT}"
    assert check_addresses("split.evil.test", ["93.184.216.34", "10.0.0.1"], policy) == \
        f"refused: private address 10.0.0.1 {HINT}"
    assert check_addresses("cdn.example", ["93.184.216.34"], policy) is None
    assert check_addresses("localhost", resolve("localhost"), policy) == f"refused: loopback address 127.0.0.1 {HINT}"


def test_the_recipes_start_hosts_are_trusted_by_name_not_by_address() -> None:
    policy = url_policy(recipe(["http://127.0.0.1:8000/", "http://intranet.example/people"]))
    assert check_url("http://127.0.0.1:9000/a.jpg", policy) is None
    assert check_addresses("intranet.example", ["10.0.0.7"], policy) is None
    assert check_addresses("localhost", ["127.0.0.1"], policy) == f"refused: loopback address 127.0.0.1 {HINT}"


def _fetch_from_other_hosts(tmp_path, **crawl):
    """Fetch four images: one on the recipe's host, one on 127.0.0.2 at the cloud metadata
    path, one through `localhost` (a name for loopback) and one through a decimal IP."""
    site = serve({"/img/a.jpg": image(1)})
    other = serve({METADATA: image(2)}, OTHER_HOST)
    port = site.httpd.server_address[1]
    urls = [site.url("/img/a.jpg"), other.url(METADATA), f"http://localhost:{port}/img/a.jpg?copy",
            f"http://2130706433:{port}/img/a.jpg?decimal"]
    try:
        spec = recipe([site.url("/")], follow=False, **crawl)
        result = fetch.run(manifest(spec, site.url("/"), urls), spec, DatasetPaths.create(tmp_path), timeout=60)
    finally:
        site.stop()
        other.stop()
    return result.set_index("image_url").loc[urls], other, urls


def test_images_on_other_private_hosts_are_refused_and_the_rest_downloaded(tmp_path) -> None:
    result, other, urls = _fetch_from_other_hosts(tmp_path)
    assert other.paths() == []  # not even its robots.txt
    assert result.loc[urls[0], "status"] == mf.KEPT
    assert result.loc[urls[1], "reason"] == f"refused: loopback address {OTHER_HOST} {HINT}"
    assert result.loc[urls[2], "reason"] == f"refused: loopback address 127.0.0.1 {HINT}"
    assert result.loc[urls[3], "reason"] == f"refused: loopback address 127.0.0.1 {HINT}"
    assert list(result["status"]) == [mf.KEPT, mf.FAILED, mf.FAILED, mf.FAILED]


def test_allow_private_hosts_lets_the_user_name_them(tmp_path) -> None:
    result, other, urls = _fetch_from_other_hosts(tmp_path, allow_private_hosts=[OTHER_HOST, "localhost", "127.0.0.0/8"])
    assert (result["status"] == mf.KEPT).all(), result["reason"].tolist()
    assert METADATA in other.paths()
