"""GraphiQL at /graphql, served whole by Levqor, so the page works with no internet (issue 14, item 4).

The page loads React, GraphiQL and its explorer plugin from `levqor/http/static/graphiql/` (vendored
from the npm registry, with their licences: see the README there) and its own script and stylesheet
from `levqor/http/static/`, all under `/graphql/assets/`. Nothing comes from another origin, which the
page's Content-Security-Policy enforces: scripts, stylesheets and connections (`fetch` to /graphql and
the `graphql-transport-ws` socket) from 'self' only, with no inline script, no `eval`, and no inline
style but the one GraphiQL's dialogs write, allowed by its hash.
GraphiQL's stylesheet embeds its fonts and a few icons as `data:` URLs, hence `font-src` and `img-src`.

Asset URLs carry a digest of the file (`?v=...`), so they are cached for a year, immutable; the page
itself is revalidated on every load, so a new release's files are picked up at once.
"""

from __future__ import annotations

from functools import cache
from html import escape
from pathlib import Path

from starlette.responses import HTMLResponse
from starlette.routing import Mount

from levqor.http.assets import asset_url, assets_mount

ASSETS_DIR = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/graphql/assets"
PAGE_CACHE_CONTROL = "no-cache"
# The one `<style>` GraphiQL writes itself: the scroll lock its dialogs (settings, shortcuts) put on the
# page (`react-remove-scroll-bar`, bundled in graphiql.min.js), allowed by its hash and nothing else.
# Its text is fixed while the page has no scroll bar; the browser test opens a dialog to prove it.
DIALOG_SCROLL_LOCK_STYLE = "'sha256-Y/huXlwoYkVyQlxwSVcCi1RCDGDCSVBzDt0hYP9qlTc='"
GRAPHIQL_CSP = (
    f"default-src 'none'; script-src 'self'; style-src 'self' {DIALOG_SCROLL_LOCK_STYLE}; "
    "connect-src 'self'; img-src 'self' data:; font-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
# In the order the page needs them: React before GraphiQL, GraphiQL before its plugin and the page.
STYLESHEETS = ("graphiql/graphiql.min.css", "graphiql/plugin-explorer.css", "explorer.css")
SCRIPTS = (
    "graphiql/react.production.min.js",
    "graphiql/react-dom.production.min.js",
    "graphiql/graphiql.min.js",
    "graphiql/plugin-explorer.umd.js",
    "explorer.js",
)


def graphiql_asset_url(name: str) -> str:
    return asset_url(name, ASSETS_DIR, ASSETS_PATH)


@cache
def graphiql_html() -> str:
    links = "\n".join(
        f'    <link rel="stylesheet" href="{escape(graphiql_asset_url(name))}">' for name in STYLESHEETS
    )
    scripts = "\n".join(f'    <script src="{escape(graphiql_asset_url(name))}"></script>' for name in SCRIPTS)
    # An empty `data:` icon, so the browser does not ask for /favicon.ico.
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Levqor GraphiQL</title>
    <link rel="icon" href="data:,">
{links}
  </head>
  <body>
    <div id="graphiql">Loading...</div>
{scripts}
  </body>
</html>
"""


def graphiql_response() -> HTMLResponse:
    return HTMLResponse(
        graphiql_html(),
        headers={"Content-Security-Policy": GRAPHIQL_CSP, "Cache-Control": PAGE_CACHE_CONTROL},
    )


def graphiql_assets_route(assets_dir: Path = ASSETS_DIR) -> Mount:
    return assets_mount(ASSETS_PATH, assets_dir, "graphiql")
