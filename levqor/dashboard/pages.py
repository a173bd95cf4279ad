"""How a dashboard page answers: templates, the page's context, forms, CSRF and errors.

Every page is rendered by Jinja2 with autoescaping on, under a strict Content-Security-Policy (no
inline script or style, nothing from another origin). What a page may show or do is decided by the
resolvers it calls with the signed-in key's principal; templates only hide the controls the key's
scopes would refuse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from levqor.dashboard.session import SESSION_STATE, Session, SessionCodec
from levqor.errors import Forbidden, InvalidRequest, LevqorError, Unauthorized, UnsupportedMediaType
from levqor.http.assets import asset_url
from levqor.http.context import context_for
from levqor.resolvers.context import DEV_PRINCIPAL, Context, Principal, Scope

logger = logging.getLogger(__name__)

PREFIX = "/dashboard"
STATIC_PATH = f"{PREFIX}/static"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 64 * 1024  # the largest form the dashboard has (100 job ids) is ~4 KiB
MAX_FIELD_CHARS = 4096
# Sec-Fetch-Site values a browser sends for the dashboard's own forms (and typed-in URLs).
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})

NOTHING = "\u2013"  # an en dash, for a figure that has no value
Handler = Callable[[Request], Awaitable[Response]]


def _micros(value: int | None) -> str:
    """Micro-dollars as dollars, to the cent (or finer for small amounts)."""
    if value is None:
        return NOTHING
    dollars = value / 1_000_000
    return f"${dollars:,.2f}" if abs(dollars) >= 1 or value == 0 else f"${dollars:.6f}".rstrip("0")


def _when(value: datetime | None) -> str:
    return NOTHING if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


ENVIRONMENT = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters.update(micros=_micros, when=_when, pretty_json=_pretty_json)
ENVIRONMENT.globals["asset"] = lambda name: asset_url(name, STATIC_DIR, STATIC_PATH)


def session_of(request: Request) -> Session | None:
    session: Session | None = request.scope.get("state", {}).get(SESSION_STATE)
    return session


def codec_of(request: Request) -> SessionCodec:
    codec: SessionCodec = request.app.state.dashboard_sessions
    return codec


def principal_of(request: Request) -> Principal:
    principal: Principal = context_for(request).principal
    return principal


def page_context(request: Request) -> Context:
    return context_for(request)


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    section: str | None = None,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    principal = principal_of(request)
    session = session_of(request)
    body = ENVIRONMENT.get_template(template).render(
        principal=principal,
        can_read=Scope.JOBS_READ in principal.scopes,
        can_write=Scope.JOBS_WRITE in principal.scopes,
        is_admin=Scope.ADMIN in principal.scopes,
        dev_mode=principal is DEV_PRINCIPAL,
        signed_in=session is not None,
        csrf=codec_of(request).csrf_token(session),
        section=section,
        request_id=request.scope.get("state", {}).get("request_id"),
        **values,
    )
    return HTMLResponse(body, status_code=status, headers=headers)


def error_page(request: Request, exc: LevqorError) -> Response:
    if isinstance(exc, Unauthorized) and request.method == "GET":
        # Not signed in (or the key has been revoked since): sign in, then come back here.
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': target})}", status_code=303)
    return render(request, "error.html", status=exc.status, error=exc, headers=exc.http_headers() or None)


def check_same_origin(request: Request) -> None:
    """Refuse a POST that a browser says comes from another site (`Sec-Fetch-Site`), or whose
    `Origin` is not this server's."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in SAME_SITE_FETCHES:
        raise Forbidden("a dashboard form was sent from another site; it has been refused")
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
            raise Forbidden("a dashboard form was sent from another origin; it has been refused")


async def read_form(request: Request) -> dict[str, list[str]]:
    """An `application/x-www-form-urlencoded` body (what the dashboard's forms send), checked for
    its origin and its CSRF token."""
    check_same_origin(request)
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("the dashboard's forms are sent as application/x-www-form-urlencoded")
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise InvalidRequest(f"the form is larger than {MAX_FORM_BYTES // 1024} KiB")
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the form could not be read: send UTF-8 with at most 200 fields") from None
    if any(len(value) > MAX_FIELD_CHARS for values in fields.values() for value in values):
        raise InvalidRequest(f"a form field is longer than {MAX_FIELD_CHARS} characters")
    tokens = fields.get(CSRF_FIELD)
    token = tokens[0] if tokens else None
    if not codec_of(request).csrf_valid(session_of(request), token):
        raise Forbidden(
            "this form has expired or did not come from the dashboard: reload the page and try again"
        )
    return fields


def field(fields: dict[str, list[str]], name: str, default: str = "") -> str:
    values = fields.get(name)
    return values[0].strip() if values else default


def dashboard_page(handler: Handler) -> Handler:
    """A dashboard endpoint whose domain errors render as dashboard pages (401 sends to sign-in)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except LevqorError as exc:
            return error_page(request, exc)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


class WithDashboardHeaders:
    """Every dashboard answer gets the dashboard's policy; pages are never stored by caches."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", DASHBOARD_CSP)
                headers.setdefault("Cache-Control", "no-store")
                headers.setdefault("Referrer-Policy", "same-origin")
            await send(message)

        await self.app(scope, receive, send_with_headers)
