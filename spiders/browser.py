"""Headless Chromium for pages built by JavaScript, with nothing downloaded at run time.

faceset uses Debian's `chromium` and `chromium-driver` (scripts/setup.sh installs them)
and gives Selenium the driver path explicitly, with SE_OFFLINE=true, so Selenium
Manager never tries the network. Each browser gets a fresh profile folder, removed
when it quits, so runs never share cookies or caches.

A rendered page's scripts may load or navigate anywhere, and the browser would go there
before faceset sees the final URL. So each browser reaches only the recipe's hosts
(`host_resolver_rules`): their names pinned to addresses the URL policy checked, every
other host unresolvable (spiders/rendering.py adds a subdomain of a recipe host, checked
the same way, when a page there is rendered). And a page never leaves by itself: a script
navigation (`location.replace`, a link clicked, a meta refresh) is cancelled before any
request is sent (the Navigation API's `navigate` event, hooked into every document before
its scripts run) and its target is handed back as the page's final URL, so the crawl
checks that URL (hosts, addresses, robots.txt) before a browser ever loads it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import FacesetError
from tasks.core.urls import UrlPolicy, check_addresses, ip_literal, resolve

CHROMIUM = os.environ.get("FACESET_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FACESET_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--window-size=1280,1024",
)


def require_browser() -> tuple[str, str]:
    """The Chromium and chromedriver paths, or a FacesetError saying how to install them."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() and os.access(p, os.X_OK))]
    if missing:
        raise FacesetError(
            f"this recipe renders pages with headless Chromium, but {', '.join(missing)} is missing",
            "run scripts/setup.sh (it installs Debian's chromium and chromium-driver), "
            "or set render: false if the site's pages work without JavaScript",
        )
    return CHROMIUM, CHROMEDRIVER


@dataclass
class Browser:
    """One headless Chromium with its driver and private profile folder."""

    driver: object
    profile: Path

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


# Runs in every document before its own scripts: cancels each navigation to another document
# and keeps the first target, which `page_state` reports as the page's final URL.
HOLD_NAVIGATIONS = """
navigation.addEventListener('navigate', (event) => {
  if (event.destination.sameDocument) return;
  if (!window.__facesetNavigation) window.__facesetNavigation = event.destination.url;
  event.preventDefault();
});
"""


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def host_resolver_rules(hosts: Iterable[str], policy: UrlPolicy) -> str:
    """Chromium's `--host-resolver-rules`: only `hosts` resolve, each name to an address the
    policy allows (resolved here, once: blocking); a host the policy refuses is left out."""
    pinned: list[str] = []
    literals: list[str] = []
    for host in sorted(hosts):
        if ip_literal(host) is not None:
            if check_addresses(host, [host.strip("[]")], policy) is None:
                literals.append(f"EXCLUDE {_bracketed(host.strip('[]'))}")
            continue
        try:
            addresses = resolve(host)
        except OSError:
            continue
        if addresses and check_addresses(host, addresses, policy) is None:
            pinned.append(f"MAP {host} {_bracketed(addresses[0])}")
    return ", ".join([*pinned, "MAP * ~NOTFOUND", *literals])


def start_browser(user_agent: str, page_timeout: float, resolver_rules: str) -> Browser:
    """Start one headless Chromium reaching only what `resolver_rules` resolves
    (blocking: call it from a worker thread, never the reactor)."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = require_browser()
    profile = Path(tempfile.mkdtemp(prefix="faceset-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--user-agent={user_agent}")
    options.add_argument(f"--host-resolver-rules={resolver_rules}")
    try:
        driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    except Exception:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    driver.set_page_load_timeout(page_timeout)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOLD_NAVIGATIONS})
    return Browser(driver, profile)


SELECTOR_WAIT = 8.0  # seconds a rendered page gets for the selector it is read with, when no wait_for is given


def element_of(selector: str | None) -> str | None:
    """The element part of a CSS selector (`a.staff::attr(href)` -> `a.staff`), to wait for in
    the browser; None for an XPath, which the browser's wait does not take."""
    if not selector or selector.startswith(("/", "(")):
        return None
    css = re.sub(r"::(attr\([^)]*\)|text)\s*$", "", selector).strip()
    return css or None


def render(browser: Browser, url: str, wait_for: str | None, timeout: float) -> tuple[str, str]:
    """Load `url`, wait until `wait_for` (CSS) is present, and return (final URL, HTML)."""
    open_page(browser, url, wait_for, timeout)
    return page_state(browser)


def open_page(browser: Browser, url: str, wait_for: str | None, timeout: float) -> None:
    """Load `url` and wait until `wait_for` (CSS) is present.

    When `wait_for` never appears the page is kept as it is: the extraction then finds
    nothing and the crawl report says so, which is more useful than a timeout error.
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser.driver
    driver.get(url)
    if wait_for:
        try:
            WebDriverWait(driver, timeout).until(
                expected_conditions.presence_of_element_located((By.CSS_SELECTOR, wait_for))
            )
        except TimeoutException:
            pass


def page_state(browser: Browser) -> tuple[str, str]:
    """(the page's final URL, its HTML as its scripts left it). The final URL is where the page
    tried to navigate, if it did (the navigation was held back), else the browser's URL (a
    server redirect followed while loading)."""
    driver = browser.driver
    held = driver.execute_script("return window.__facesetNavigation || null;")
    return (held if isinstance(held, str) and held else driver.current_url), driver.page_source


# The page's size: its height and its element count, so content added without growing the
# page (a grid filling a fixed box) is seen too.
_SIZE = "return [document.documentElement.scrollHeight, document.getElementsByTagName('*').length];"
_SCROLL = "window.scrollTo(0, document.documentElement.scrollHeight);"
_CLICK = "arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();"
GROWTH_WAIT = 3.0  # seconds a page gets to add content after a scroll or a click


def _grew(driver, before: list[int], wait: float) -> bool:
    """Whether the page's size changes from `before` within `wait` seconds."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, wait, poll_frequency=0.05).until(lambda d: d.execute_script(_SIZE) != before)
        return True
    except TimeoutException:
        return False


def load_more(browser: Browser, scroll: int, click: str | None, max_clicks: int, timeout: float) -> tuple[int, int]:
    """Make a result page load more: scroll to its bottom up to `scroll` times, then click the
    `click` button up to `max_clicks` times, each time waiting for new content and stopping
    as soon as the page stops growing (or the button is gone). Returns (scrolls, clicks) that
    brought new content. Both together cover pages that scroll until a 'more' button shows."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By

    driver, wait = browser.driver, min(GROWTH_WAIT, timeout)
    scrolled = clicked = 0
    for _ in range(scroll):
        before = driver.execute_script(_SIZE)
        driver.execute_script(_SCROLL)
        if not _grew(driver, before, wait):
            break
        scrolled += 1
    for _ in range(max_clicks if click else 0):
        buttons = [b for b in driver.find_elements(By.CSS_SELECTOR, click) if b.is_displayed() and b.is_enabled()]
        if not buttons:
            break
        before = driver.execute_script(_SIZE)
        try:
            driver.execute_script(_CLICK, buttons[0])
        except (StaleElementReferenceException, WebDriverException):
            break  # the button went away between finding and clicking it
        if not _grew(driver, before, wait):
            break
        clicked += 1
    return scrolled, clicked
