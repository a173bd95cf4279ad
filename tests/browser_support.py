"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright, with every
request that leaves loopback blocked and recorded, and the console's errors collected."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    WebSocket,
    sync_playwright,
)

from tests.conftest import service_unavailable

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
SCREENSHOTS = Path(__file__).resolve().parent / ".screenshots"  # git-ignored
LOOPBACK = "127.0.0.1"
FORGIVE_WAIT_S = 5.0


@contextmanager
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        service_unavailable("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Guard:
    """What a page did that it must not: requests off loopback (blocked), console errors."""

    off_loopback: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def only_loopback(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname == LOOPBACK:
            route.continue_()
        else:
            self.off_loopback.append(route.request.url)
            route.abort()

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def on_websocket(self, socket: WebSocket) -> None:
        if urlsplit(socket.url).hostname != LOOPBACK:
            self.off_loopback.append(socket.url)

    def forgive(self, page: Page, status: int, count: int) -> None:
        """Drop the console's notes of `count` answers with `status`, once they have all arrived:
        Chromium logs every 4xx as an error, also the refusals a test asks for on purpose."""
        note = f"the server responded with a status of {status}"
        deadline = time.monotonic() + FORGIVE_WAIT_S
        while sum(note in error for error in self.console_errors) < count and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        self.console_errors = [error for error in self.console_errors if note not in error]

    def watch_context(self, context: BrowserContext) -> None:
        context.route("**/*", self.only_loopback)
        context.on("page", self.watch_page)

    def watch_page(self, page: Page) -> None:
        page.on("console", self.on_console)
        page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        page.on("websocket", self.on_websocket)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
