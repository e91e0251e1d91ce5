"""Headless Chromium for the page tests: Debian's /usr/bin/chromium driven by Playwright.

Playwright's own browser download is not possible here, so it launches the system
Chromium with the flags that keep it off the (closed) network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000  # an upper bound to wait for, not a timing assertion

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")


@contextlib.contextmanager
def open_page(width: int = 1280, height: int = 900, **context: Any) -> Iterator[Any]:
    """A page that collects JavaScript errors and console errors in `page.errors`;
    `context` goes to Playwright's new_context (e.g. accept_downloads)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": width, "height": height}, **context).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.errors = []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
            yield page
        finally:
            browser.close()


# axe-core, vendored from the npm registry (tests/e2e/vendor/axe-core, MPL-2.0).
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
# Where page tests leave their screenshots (git-ignored).
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """Run axe-core on the page as it is; the violations of the given impacts, described.

    The script is handed to the page through CDP (Runtime.evaluate is not subject to the
    page's Content-Security-Policy), so the pages are checked under their real policy.
    """
    session = page.context.new_cdp_session(page)
    try:
        session.send("Runtime.evaluate", {"expression": AXE.read_text(), "returnByValue": True})
    finally:
        session.detach()
    results = page.evaluate(
        "() => axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map("
        "v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))})))"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {', '.join(v['nodes'][:5])}"
        for v in results
        if v["impact"] in impacts
    ]


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
