"""`/dashboard`: sign-in and sign-out, and the mount that holds every dashboard page (issue 14).

Sign-in takes an API key once, checks it through the same `Authenticator` as the API (a wrong key
counts against the address's refused-key allowance, as on the API), and sets the session cookie
(levqor/dashboard/session.py): `HttpOnly`, `SameSite=Strict`, `Path=/dashboard`, `Secure` when the
request came over https, expiring with the session.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router

from levqor.dashboard import admin, jobs, overview, runs, schedules
from levqor.dashboard.pages import (
    DASHBOARD_CSP,
    PREFIX,
    STATIC_DIR,
    STATIC_PATH,
    WithDashboardHeaders,
    codec_of,
    dashboard_page,
    field,
    principal_of,
    read_form,
    render,
    session_of,
)
from levqor.dashboard.session import COOKIE_NAME, COOKIE_PATH, SESSION_ENDED_STATE
from levqor.errors import NotFound, Unauthorized
from levqor.http.assets import assets_mount
from levqor.http.ratelimit import RateLimiter, refusal
from levqor.resolvers.auth import Authenticator
from levqor.resolvers.context import ANONYMOUS, DEV_PRINCIPAL

MAX_KEY_CHARS = 512


def _next_page(raw: str) -> str:
    # Only back into the dashboard, never to another site (`//host` or `/dashboard.evil`).
    if raw.startswith(f"{PREFIX}/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return f"{PREFIX}/"


def _signed_out(response: Response, request: Request) -> Response:
    response.delete_cookie(
        COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_is_https(request)
    )
    return response


def _is_https(request: Request) -> bool:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter.client_address.is_https(request.scope)


@dashboard_page
async def login_form(request: Request) -> Response:
    principal = principal_of(request)
    next_page = _next_page(request.query_params.get("next", ""))
    if principal is DEV_PRINCIPAL or session_of(request) is not None:
        return RedirectResponse(next_page, status_code=303)
    ended = request.scope.get("state", {}).get(SESSION_ENDED_STATE)
    response = render(
        request,
        "login.html",
        next=next_page,
        ended=ended,
        signed_out=request.query_params.get("signed_out") == "1",
    )
    # A cookie whose key has been revoked is of no more use: it goes.
    return _signed_out(response, request) if ended else response


@dashboard_page
async def login(request: Request) -> Response:
    fields = await read_form(request)
    next_page = _next_page(field(fields, "next"))
    key = field(fields, "key")
    if not key or len(key) > MAX_KEY_CHARS:
        return render(
            request, "login.html", status=400, next=next_page, problem="Enter an API key to sign in."
        )
    limiter: RateLimiter = request.app.state.rate_limiter
    client_ip: str = request.scope["state"]["client_ip"]
    verdict = await limiter.may_present_key(client_ip)
    if not verdict.allowed:
        raise refusal(verdict)
    authenticator: Authenticator = request.app.state.authenticator
    try:
        principal = await authenticator.authenticate(key)
    except Unauthorized as exc:
        await limiter.key_refused(client_ip)
        return render(
            request, "login.html", status=401, next=next_page, problem=f"Not signed in: {exc.message}."
        )
    if principal is DEV_PRINCIPAL or principal is ANONYMOUS:
        return RedirectResponse(next_page, status_code=303)  # development mode needs no sign-in
    codec = codec_of(request)
    response = RedirectResponse(next_page, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        codec.encode(codec.new(principal.id)),
        max_age=codec.max_age_s,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_is_https(request),
    )
    return response


@dashboard_page
async def logout(request: Request) -> Response:
    await read_form(request)
    return _signed_out(RedirectResponse(f"{PREFIX}/login?signed_out=1", status_code=303), request)


@dashboard_page
async def not_found(request: Request) -> Response:
    raise NotFound(f"the dashboard has no page at {request.url.path[:200]}")


async def to_dashboard(_request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=308, headers={"Content-Security-Policy": DASHBOARD_CSP})


def dashboard_routes() -> list[BaseRoute]:
    pages: list[BaseRoute] = [
        assets_mount(STATIC_PATH.removeprefix(PREFIX), STATIC_DIR, "dashboard-static"),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        *overview.routes(),
        *jobs.routes(),
        *admin.routes(),
        *schedules.routes(),
        *runs.routes(),
        Route("/{rest:path}", not_found, methods=["GET", "POST"]),
    ]
    return [
        Route(PREFIX, to_dashboard, methods=["GET"]),
        Mount(PREFIX, app=WithDashboardHeaders(Router(pages)), name="dashboard"),
    ]
