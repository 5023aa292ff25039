"""One image download for `faceset hydrate`, under the URL policy (tasks.core.urls).

A shared manifest is data from someone else: its URLs may point at a local file, another
protocol, or a machine on the user's own network (a cloud's credentials at
169.254.169.254), directly or through a redirect. So every request here:

- starts from a URL that `check_url` accepts (http or https);
- connects only to an address `check_addresses` accepts, resolved once, and to that very
  address (a name that answers differently between check and connection gains nothing);
- follows a redirect only to a URL that passes the same checks (no `ftp:`, no refused
  address), hop after hop;
- ends at a deadline for the whole download, however slowly the server sends;
- counts a body shorter than its Content-Length as an incomplete download.

Proxies from the environment are not used: the checks are on the addresses connected to.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from tasks.core.urls import UrlPolicy, check_url, checked_connector

MAX_BYTES = 20_000_000
GONE_STATUSES = {404, 410, 451}
CHUNK = 1 << 16


@dataclass(frozen=True)
class Outcome:
    """The bytes, or why not: `kind` is "refused", "gone" (the server says so) or "failed"."""

    data: bytes | None = None
    kind: str = ""
    why: str = ""


class Refused(Exception):
    """The URL policy refuses a request (or a redirect); the message is the row's reason."""


class Failed(Exception):
    """The body did not arrive whole and in time; the message is the row's reason."""


def _guarded(connection_class: type[http.client.HTTPConnection], policy: UrlPolicy
             ) -> Callable[..., http.client.HTTPConnection]:
    def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = connection_class(host, **kwargs)
        conn._create_connection = checked_connector(policy, Refused)  # http.client's hook for opening its socket
        return conn

    return connection


class _GuardedHTTP(urllib.request.HTTPHandler):
    def __init__(self, policy: UrlPolicy) -> None:
        super().__init__()
        self.policy = policy

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_guarded(http.client.HTTPConnection, self.policy), req)


class _GuardedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, policy: UrlPolicy) -> None:
        super().__init__()
        self.policy = policy

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_guarded(http.client.HTTPSConnection, self.policy), req, context=self._context)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the policy accepts (its address is checked on connecting)."""

    def __init__(self, policy: UrlPolicy) -> None:
        super().__init__()
        self.policy = policy

    def http_error_302(self, req, fp, code, msg, headers):  # noqa: ANN001 - urllib's signature
        target = headers.get("location") or headers.get("uri")
        if target:
            newurl = urljoin(req.full_url, target)
            why = check_url(newurl, self.policy)
            if why:
                fp.close()
                raise Refused(f"{why}; the server redirected {req.full_url} to {newurl}")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def opener(policy: UrlPolicy) -> urllib.request.OpenerDirector:
    """An opener for http(s) only, checked at every hop; no proxy, no file:, ftp: or data: handler."""
    director = urllib.request.OpenerDirector()
    for handler in (_GuardedHTTP(policy), _GuardedHTTPS(policy), _CheckedRedirects(policy),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
        director.add_handler(handler)
    return director


def _body(response: http.client.HTTPResponse, deadline: float, timeout: float) -> bytes:
    """The whole body, or Failed saying why not (too slow, too large, incomplete)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read1(CHUNK):
        size += len(chunk)
        if size > MAX_BYTES:
            raise Failed(f"image too large (over {MAX_BYTES} bytes)")
        if time.monotonic() > deadline:
            raise Failed(f"download failed: not complete after {timeout:g} s")
        chunks.append(chunk)
    expected = response.headers.get("Content-Length", "")
    if expected.isdigit() and size < int(expected):
        raise Failed(f"download incomplete: {size} of {expected} bytes arrived")
    return b"".join(chunks)


def _hydrate_hint(why: str) -> str:
    """The policy's reason, naming the option that allows an address here (hydrate has no recipe)."""
    return why.replace("not a host of the recipe's start URLs; crawl.allow_private_hosts can allow it",
                       "faceset hydrate --allow-private-hosts can allow it")


def download(url: str, policy: UrlPolicy, user_agent: str, timeout: float,
             director: urllib.request.OpenerDirector | None = None) -> Outcome:
    """The image at `url`, within `timeout` seconds in all, or why not."""
    why = check_url(url, policy)
    if why:
        return Outcome(kind="refused", why=_hydrate_hint(why))
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": user_agent, "Accept": "image/*"})
    try:
        with (director or opener(policy)).open(request, timeout=timeout) as response:
            return Outcome(data=_body(response, deadline, timeout))
    except Refused as exc:
        return Outcome(kind="refused", why=_hydrate_hint(str(exc)))
    except urllib.error.HTTPError as exc:
        exc.close()
        return Outcome(kind="gone" if exc.code in GONE_STATUSES else "failed", why=f"HTTP {exc.code}")
    except Failed as exc:
        return Outcome(kind="failed", why=str(exc))
    except http.client.IncompleteRead as exc:
        return Outcome(kind="failed", why=f"download incomplete: {len(exc.partial)} bytes arrived")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        return Outcome(kind="failed", why=f"download failed: {getattr(exc, 'reason', exc)}")
