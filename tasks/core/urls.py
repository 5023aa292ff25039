"""The one URL policy: which URLs faceset may request, and in words why not.

faceset follows links and image URLs that web pages (and shared manifests) hand it, so
a hostile page must not lead it to a local file, another protocol, or a machine on the
user's own network. Crawl, fetch, rendering and hydrate all ask here:

- http and https only (`file://`, `ftp://`, `data:` ... are refused);
- a page stays on its source's hosts (`host_allowed`), redirects and browser
  navigations included (the caller passes the hosts);
- loopback, private, link-local (169.254.x.x, where clouds serve their credentials) and
  other non-global addresses are refused, unless the host is one the recipe names: a
  start URL's host (a local test site, an intranet directory) or an entry of
  `crawl.allow_private_hosts` (a host, an address or a network).

The address rule applies to the addresses a host *resolves* to, since a name that
resolves to 127.0.0.1 is loopback all the same. `check_url` needs no network (it judges
IP literals itself); `check_addresses` judges a name's addresses, resolved by the
caller: the Scrapy process uses its caching resolver, hydrate `resolve`. Either way the
connection must go to an address that was checked, or a name that changes its answer in
between (DNS rebinding) gets past. Every refusal is a sentence starting with "refused:",
the manifest's row reason.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from tasks.core.recipe import Recipe, Source

SCHEMES = frozenset({"http", "https"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv4 addresses reached through a NAT64 gateway

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class UrlPolicy:
    """Where non-global addresses may be requested: hosts named by the recipe, and networks."""

    trusted_hosts: frozenset[str] = frozenset()
    trusted_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def allowing(cls, entries: Iterable[str]) -> "UrlPolicy":
        """A policy trusting `entries`: host names, or IP addresses and networks ("10.1.0.0/16"),
        which trust every host resolving into them."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            entry = normal_host(entry)
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks))


def normal_host(host: str) -> str:
    """A host as compared here: lower case, without a trailing dot."""
    return host.strip().lower().rstrip(".")


def host_of(url: str) -> str:
    """The URL's host ("" when it has none or cannot be read)."""
    try:
        return normal_host(urlsplit(url).hostname or "")
    except ValueError:
        return ""


def source_hosts(source: Source) -> frozenset[str]:
    """A source's hosts: its start URLs' hosts and its `allowed_domains`."""
    return frozenset({host_of(u) for u in source.start_urls} | {normal_host(d) for d in source.allowed_domains})


def url_policy(recipe: Recipe) -> UrlPolicy:
    """The recipe's policy: non-global addresses only on its start URLs' hosts (by host, not
    by address: another name resolving to the same address is not trusted) and on what
    `crawl.allow_private_hosts` names."""
    named = UrlPolicy.allowing(recipe.crawl.allow_private_hosts)
    started = {host_of(url) for source in recipe.sources for url in source.start_urls}
    return replace(named, trusted_hosts=named.trusted_hosts | started)


def host_allowed(host: str, hosts: Collection[str]) -> bool:
    """Whether `host` is one of `hosts` or a subdomain of one."""
    host = normal_host(host)
    return any(host == h or host.endswith("." + h) for h in hosts)


def ip_literal(host: str) -> IPAddress | None:
    """The address when `host` is an IP literal ("127.0.0.1", "::1" or "[::1]"), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _effective(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), or itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_kind(address: str | IPAddress) -> str | None:
    """What makes an address off limits ("loopback", "private", "link-local", ...), None for a global one."""
    ip = _effective(ipaddress.ip_address(address) if isinstance(address, str) else address)
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-global"


def check_addresses(host: str, addresses: Iterable[str], policy: UrlPolicy) -> str | None:
    """Why `host`, resolving to `addresses`, may not be requested; None when it may."""
    if normal_host(host).strip("[]") in policy.trusted_hosts:
        return None
    for address in addresses:
        ip = ipaddress.ip_address(address)
        kind = address_kind(ip)
        if kind and not any(ip in network or _effective(ip) in network for network in policy.trusted_networks):
            return (f"refused: {kind} address {ip} (not a host of the recipe's start URLs; "
                    "crawl.allow_private_hosts can allow it)")
    return None


def check_url(url: str, policy: UrlPolicy, hosts: Collection[str] | None = None) -> str | None:
    """Why `url` may not be requested, without resolving its host; None when it may.

    `hosts`: the hosts the URL must stay on (a source's, for pages); None allows any.
    An IP-literal host is judged by the address rule here; a host name is judged by
    `check_addresses` on what it resolves to.
    """
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return "refused: not a valid URL"
    if not scheme:
        return "refused: not an absolute URL"
    if scheme not in SCHEMES:
        return f"refused: {scheme}: URL (faceset requests http: and https: URLs only)"
    host = host_of(url)
    if not host:
        return "refused: the URL has no host"
    if hosts is not None and not host_allowed(host, hosts):
        return f"refused: {host} is not a host of this source (start URLs and allowed_domains)"
    address = ip_literal(host)
    return None if address is None else check_addresses(host, [str(address)], policy)


def resolve(host: str) -> list[str]:
    """Every address `host` resolves to (IPv4 first); an OSError when it does not resolve."""
    infos = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
    found = dict.fromkeys(str(info[4][0]) for info in sorted(infos, key=lambda info: info[0] != socket.AF_INET))
    return list(found)


def checked_connector(policy: UrlPolicy, refuse: Callable[[str], Exception]) -> Callable[..., socket.socket]:
    """`socket.create_connection` that connects only to addresses the policy accepts, and to
    the very address it checked (no second lookup a DNS rebinding could answer otherwise);
    a refused host raises `refuse(reason)`. Set as an http.client connection's
    `_create_connection` by every faceset client outside Scrapy (hydrate, recipe new)."""

    def create_connection(address: tuple[str, int], timeout: float | None = None,
                          source_address: Any = None) -> socket.socket:
        host, port = address
        addresses = [host.strip("[]")] if ip_literal(host) is not None else resolve(host)
        why = check_addresses(host, addresses, policy)
        if why:
            raise refuse(why)
        error: OSError | None = None
        for ip in addresses:
            try:
                return socket.create_connection((ip, port), timeout, source_address)
            except OSError as exc:
                error = exc
        raise error or OSError(f"{host} has no address")

    return create_connection
