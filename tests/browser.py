"""Headless Chromium for the browser tests: Debian's `chromium`, driven by Playwright.

Playwright cannot download its own browsers here, so it is pointed at the system Chromium
(``COURSE_CHROMIUM`` overrides the path). Where no Chromium is installed the browser tests are
skipped with a message saying how to install it, except under CI (``CI`` set), where a missing
browser is a failure: `.ci/run` installs it.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

# Flags that keep Chromium quiet on a closed network (no background connections, no updates) and
# let it run as root in a container.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}

# axe-core's rules for WCAG 2.0, 2.1 and 2.2 levels A and AA, and its best practices (which hold
# heading-order and the landmark rules).
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa", "best-practice"]
#: Violations of these impacts fail a test; lesser ones are reported.
AXE_FAILING_IMPACTS = ("serious", "critical")
#: Rules that fail a test whatever impact axe-core gives them: axe calls a skipped heading level
#: "moderate", the course requires headings in order.
AXE_FAILING_RULES = ("heading-order",)


def chromium_path() -> str:
    """The Chromium executable, or a skip (a failure under CI) when none is installed."""
    candidates = [os.environ.get("COURSE_CHROMIUM", ""), "/usr/bin/chromium",
                  shutil.which("chromium") or "", shutil.which("chromium-browser") or ""]
    for path in candidates:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    message = ("no Chromium found for the browser tests: install Debian's `chromium` package "
               "(sudo apt-get install chromium) or set COURSE_CHROMIUM to a Chromium executable")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium() -> Iterator[object]:
    """A running headless Chromium (a Playwright ``Browser``)."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - requirements.txt installs it
        pytest.fail("playwright is not installed: run `make venv`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True,
                                             args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def axe_script() -> str:
    """axe-core's JavaScript, as bundled by the pinned PyPI package axe-playwright-python (read
    from the installed package: nothing is downloaded)."""
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:  # pragma: no cover - requirements.txt installs it
        pytest.fail("axe-playwright-python is not installed: run `make venv`")
    return Axe().axe_script


def run_axe(page, script: str) -> dict:
    """Run axe-core on the page as it is now (WCAG 2 A/AA and best practices); returns axe's
    results object (``violations``, ``passes``, ``incomplete``, ``inapplicable``, ``testEngine``).
    """
    page.evaluate(script)
    options = {"runOnly": {"type": "tag", "values": AXE_TAGS},
               "resultTypes": ["violations"]}
    return page.evaluate("options => axe.run(document, options)", options)


def axe_fails(violation: dict) -> bool:
    """Whether an axe-core violation fails the tests (serious, critical or a required rule)."""
    return violation["impact"] in AXE_FAILING_IMPACTS or violation["id"] in AXE_FAILING_RULES


def axe_report(where: str, violations: list[dict], nodes_shown: int = 5) -> str:
    """A readable report of axe-core violations: for each, where (page, mode, window), the rule,
    its impact, what it checks and its help page, then the elements (selector, an HTML snippet,
    axe's explanation), at most ``nodes_shown`` per rule."""
    lines = []
    for violation in violations:
        lines.append(f"{where}: {violation['id']} ({violation['impact']}): {violation['help']}"
                     f" [{len(violation['nodes'])} element(s)] {violation['helpUrl']}")
        for node in violation["nodes"][:nodes_shown]:
            target = " ".join(str(t) for t in node["target"])
            snippet = " ".join(node.get("html", "").split())[:160]
            why = " ".join((node.get("failureSummary") or "").split())[:240]
            lines.append(f"    {target}\n      {snippet}\n      {why}")
        if len(violation["nodes"]) > nodes_shown:
            lines.append(f"    ... and {len(violation['nodes']) - nodes_shown} more")
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class PageProblems:
    """What went wrong while pages loaded: console errors, failed or off-site requests."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    offsite_requests: list[str] = field(default_factory=list)

    def is_local(self, url: str) -> bool:
        parsed = urlparse(url)
        if parsed.scheme in {"data", "blob", "about"}:
            return True
        return f"{parsed.scheme}://{parsed.netloc}" == self.origin

    def watch(self, context) -> None:
        """Record problems of every page in a Playwright ``BrowserContext``; block off-site
        requests (recording them) so that a test never depends on the network."""

        def route(route) -> None:
            if self.is_local(route.request.url):
                route.continue_()
            else:
                self.offsite_requests.append(route.request.url)
                route.abort()

        def on_page(page) -> None:
            page.on("console", lambda msg: self.console_errors.append(
                f"{page.url}: {msg.text}") if msg.type == "error" else None)
            page.on("pageerror", lambda err: self.console_errors.append(f"{page.url}: {err}"))
            page.on("requestfailed", lambda req: None if not self.is_local(req.url) else
                    self.failed_requests.append(f"{req.url}: {req.failure}"))
            page.on("response", lambda resp: self.failed_requests.append(
                f"{resp.url}: HTTP {resp.status}") if resp.status >= 400 else None)

        context.route("**/*", route)
        context.on("page", on_page)

    def summary(self) -> dict[str, list[str]]:
        return {name: found for name, found in (("console errors", self.console_errors),
                                                ("failed requests", self.failed_requests),
                                                ("off-site requests", self.offsite_requests))
                if found}
