"""Static files served with a digest of their content in their URLs (`?v=...`), cached for a year:
GraphiQL's vendored files and the dashboard's own. The pages that link them are revalidated on every
load, so a new release's files are picked up at once."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"  # one year: the URL changes with the file
DIGEST_CHARS = 16


@cache
def asset_url(name: str, assets_dir: Path, mount_path: str) -> str:
    """The same-origin URL of an asset, with a digest of its content to make it safe to cache."""
    digest = hashlib.sha256((assets_dir / name).read_bytes()).hexdigest()[:DIGEST_CHARS]
    return f"{mount_path}/{name}?v={digest}"


class WithAssetHeaders:
    """Marks the assets' successful answers as cacheable for a year."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_cache_control(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in {200, 304}:
                MutableHeaders(scope=message)["Cache-Control"] = ASSET_CACHE_CONTROL
            await send(message)

        await self.app(scope, receive, send_with_cache_control)


def assets_mount(mount_path: str, assets_dir: Path, name: str) -> Mount:
    return Mount(mount_path, app=WithAssetHeaders(StaticFiles(directory=assets_dir)), name=name)
