"""The public pages (legal notices and FAQ) from `public/`, at pretty paths and at their file paths.

`/legal/privacy`, `/legal/terms`, `/legal/cookies` and `/faq` answer with the page files; everything
under `public/` is also served as it lies at `/public/...`. Pages get a Content-Security-Policy that
allows nothing but their own stylesheet: they have no scripts, forms, frames or third-party assets.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

PUBLIC_DIR = Path(__file__).resolve().parents[2] / "public"
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
PAGES = {
    "/legal/privacy": "legal/privacy.html",
    "/legal/terms": "legal/terms.html",
    "/legal/cookies": "legal/cookies.html",
    "/faq": "faq/index.html",
}
PAGES_PREFIX = "/public"
PAGE_CACHE_CONTROL = "public, max-age=300"  # pages change with releases; a few minutes stale is fine


class WithPageHeaders:
    """Adds the pages' Content-Security-Policy to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_csp(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("Content-Security-Policy", PAGE_CSP)
            await send(message)

        await self.app(scope, receive, send_with_csp)


def _page_endpoint(file: Path) -> Callable[[Request], Awaitable[Response]]:
    async def page(_request: Request) -> Response:
        return FileResponse(
            file,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": PAGE_CACHE_CONTROL},
        )

    return page


def page_routes(public_dir: Path = PUBLIC_DIR) -> list[BaseRoute]:
    """The pretty paths and the `/public` mount; none when the directory is not there (an install
    without the source tree), with a warning, since the API works without its pages."""
    if not public_dir.is_dir():
        logger.warning("public pages not served: %s is not a directory", public_dir)
        return []
    routes: list[BaseRoute] = [
        Route(path, _page_endpoint(public_dir / file), methods=["GET"], name=f"page {path}")
        for path, file in PAGES.items()
    ]
    files = StaticFiles(directory=public_dir, html=True)
    routes.append(Mount(PAGES_PREFIX, app=WithPageHeaders(files), name="public"))
    return routes
