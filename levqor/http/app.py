"""The application factory and its lifespan, which owns every process resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from levqor.config import ConfigError, Settings
from levqor.db.engine import Database
from levqor.http.errors import EXCEPTION_HANDLERS
from levqor.http.graphql import graphql_app
from levqor.http.middleware import BodyLimitMiddleware, RequestContextMiddleware
from levqor.resolvers.health import PublicMetricsCache, record_uptime_sample
from levqor.rest import health, jobs, users
from levqor.rest.openapi import build_openapi

logger = logging.getLogger(__name__)

UPTIME_SAMPLE_INTERVAL_S = 60
CORS_METHODS = ["GET", "POST", "OPTIONS", "PATCH", "PUT", "DELETE"]
CORS_HEADERS = ["Content-Type", "Authorization", "X-Api-Key", "Idempotency-Key"]
CORS_MAX_AGE_S = 600


def check_startup(settings: Settings) -> None:
    """Refuse to serve production without keys; warn loudly when development serves without them."""
    if settings.api_keys:
        return
    if settings.is_production:
        raise ConfigError("LEVQOR_ENV=production needs API keys: set API_KEYS")
    logger.warning("no API keys are configured: development mode lets every request through")


def build_routes(settings: Settings) -> list[BaseRoute]:
    graphql = graphql_app()
    api_routes: list[BaseRoute] = [
        *health.routes(),
        *jobs.routes(dev_routes=not settings.is_production),
        *users.routes(),
    ]

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document)

    document = build_openapi(api_routes)
    return [
        *api_routes,
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
    ]


async def _sample_uptime(db: Database) -> None:
    while True:
        try:
            await anyio.to_thread.run_sync(record_uptime_sample, db)
        except Exception:
            logger.exception("could not record an uptime sample")
        await asyncio.sleep(UPTIME_SAMPLE_INTERVAL_S)


def create_app(settings: Settings, *, db: Database | None = None) -> Starlette:
    """Build the ASGI app. A `db` passed in is the caller's to dispose of; otherwise the lifespan
    opens one from `settings` and disposes of it at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        check_startup(settings)
        own_db = db is None
        app.state.db = db or Database(settings.db_url)
        sampler = asyncio.create_task(_sample_uptime(app.state.db), name="uptime-sampler")
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            if own_db:
                app.state.db.dispose()

    middleware = [
        Middleware(RequestContextMiddleware),
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            expose_headers=[
                "X-Request-Id",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
            max_age=CORS_MAX_AGE_S,
        ),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
    ]
    app = Starlette(
        routes=build_routes(settings),
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.public_metrics = PublicMetricsCache()
    return app
