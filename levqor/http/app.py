"""The application factory and its lifespan, which owns every process resource."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from levqor.callbacks.guard import HostResolver
from levqor.config import ConfigError, Settings
from levqor.dashboard.routes import dashboard_routes
from levqor.dashboard.session import SessionCodec
from levqor.db.engine import Database
from levqor.http.access import AccessMiddleware
from levqor.http.body_limit import BodyLimitMiddleware
from levqor.http.context import SERVICES_ATTRIBUTE
from levqor.http.cors import CorsMiddleware
from levqor.http.errors import EXCEPTION_HANDLERS
from levqor.http.graphiql import graphiql_assets_route
from levqor.http.graphql import graphql_app
from levqor.http.metrics import HttpMetrics, build_metrics, metrics_endpoint
from levqor.http.pages import page_routes
from levqor.http.ratelimit import RateLimiter
from levqor.http.request_context import InternalErrorMiddleware, RequestContextMiddleware
from levqor.queue.pruner import Pruner
from levqor.resolvers.auth import Authenticator
from levqor.resolvers.batches import RequestBatches
from levqor.resolvers.context import Context
from levqor.resolvers.health import PublicMetricsCache, record_uptime_sample
from levqor.resolvers.job_feed import JobUpdateFeed
from levqor.resolvers.keys import any_active_managed_key, any_managed_key
from levqor.rest import budgets, deliveries, health, jobs, keys, overview, runs, schedules, users, workers
from levqor.rest import workflows as workflow_routes
from levqor.rest.openapi import build_openapi
from levqor.scheduling.scheduler import Scheduler
from levqor.worker.process import WorkerServices
from levqor.workflows.registry import registry_for

logger = logging.getLogger(__name__)

UPTIME_SAMPLE_INTERVAL_S = 60
GC_YOUNG_THRESHOLD = 50_000


def check_startup(settings: Settings, db: Database | None = None) -> None:
    """Refuse to serve production without a key; warn loudly when development serves without one.

    Without `db` only `API_KEYS` is known, so production is refused only when a database is given.
    Production needs LEVQOR_SESSION_SECRET too: the dashboard's sign-ins must survive a restart and
    hold in every server process."""
    _check_keys(settings, db)
    if settings.is_production and settings.session_secret is None:
        raise ConfigError(
            "LEVQOR_ENV=production needs LEVQOR_SESSION_SECRET (at least 32 random characters), which "
            "signs the dashboard's session cookies"
        )


def _check_keys(settings: Settings, db: Database | None) -> None:
    if settings.api_keys or (db is not None and db.read_sync(any_active_managed_key)):
        return
    if settings.is_production:
        if db is None:
            return
        raise ConfigError(
            "LEVQOR_ENV=production needs an API key: set API_KEYS, or create one with "
            "`levqor keys create --name admin --scopes admin`"
        )
    if db is not None and db.read_sync(any_managed_key):
        logger.warning(
            "every managed API key is revoked or expired: only public routes answer until you "
            "create one with `levqor keys create`"
        )
        return
    logger.warning(
        "NO API KEYS ARE CONFIGURED: development mode lets every request through, with every "
        "scope. Set API_KEYS or run `levqor keys create` before exposing this server."
    )


def build_routes(settings: Settings) -> list[BaseRoute]:
    graphql = graphql_app(settings=settings)
    api_routes: list[BaseRoute] = [
        *health.routes(),
        *jobs.routes(dev_routes=not settings.is_production),
        *deliveries.routes(),
        *users.routes(),
        *workers.routes(),
        *workflow_routes.routes(),
        *keys.routes(),
        *budgets.routes(),
        *schedules.routes(),
        *runs.routes(),
        *overview.routes(),
    ]

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document)

    document = build_openapi(api_routes, registry_for(settings))
    return [
        # First: Starlette tries routes in order, and /graphql overlaps no other path.
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        graphiql_assets_route(),
        *api_routes,
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *dashboard_routes(),
        *page_routes(),
    ]


async def _sample_uptime(db: Database) -> None:
    while True:
        try:
            await anyio.to_thread.run_sync(record_uptime_sample, db)
        except Exception:
            logger.exception("could not record an uptime sample")
        await asyncio.sleep(UPTIME_SAMPLE_INTERVAL_S)


def middleware(settings: Settings, metrics: HttpMetrics | None) -> list[Middleware]:
    """Levqor's layers, outermost first, between Starlette's error middleware and its router."""
    return [
        # ids, security headers, the access log, metrics, head size and the last-resort 500
        Middleware(RequestContextMiddleware, metrics=metrics, max_header_bytes=settings.max_header_bytes),
        Middleware(CorsMiddleware, settings=settings),
        # a 500 inside CORS, so a browser page can read the request id it carries
        Middleware(InternalErrorMiddleware),
        # API keys and rate limits: 401 and 429 before the body is read or a route runs
        Middleware(AccessMiddleware),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
    ]


def create_app(
    settings: Settings, *, db: Database | None = None, resolver: HostResolver | None = None
) -> Starlette:
    """Build the ASGI app. A `db` passed in is the caller's to dispose of; otherwise the lifespan
    opens one from `settings` and disposes of it at shutdown. `resolver` answers for callback URL
    hosts at intake and when the in-process worker sends callbacks (tests stand in for DNS with it);
    by default, the system's resolver."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own_db = db is None
        app.state.db = db or Database(settings.db_url)
        await anyio.to_thread.run_sync(check_startup, settings, app.state.db)
        app.state.authenticator = Authenticator(app.state.db, settings)
        await app.state.authenticator.start()
        app.state.rate_limiter = RateLimiter(settings)
        if not await app.state.rate_limiter.check():
            logger.warning("rate-limit storage %s does not answer", settings.rate_storage.split("@")[-1])
        sampler = asyncio.create_task(_sample_uptime(app.state.db), name="uptime-sampler")
        # The wake-up for new jobs and, unless LEVQOR_INPROCESS_WORKER=false, the in-process worker.
        worker_services = WorkerServices(app.state.db, settings, resolver=resolver)
        app.state.wakeup = await worker_services.start()
        app.state.batches = RequestBatches(app.state.db)
        await app.state.batches.start()
        job_updates = JobUpdateFeed(app.state.db, settings)
        await job_updates.start()
        scheduler = Scheduler(app.state.db, settings, resolver=resolver)  # unless LEVQOR_SCHEDULER=false
        scheduler.start()
        pruner = Pruner(app.state.db, settings)  # when LEVQOR_RETENTION_DAYS is set
        pruner.start()
        services = Context(
            db=app.state.db,
            settings=settings,
            wakeup=app.state.wakeup,
            batches=app.state.batches,
            job_updates=job_updates,
            resolver=resolver,
        )
        setattr(app, SERVICES_ATTRIBUTE, services)
        # Objects alive now live as long as the server: kept out of the collector's walks. Young
        # collections are made rarer; a request's objects are freed by reference counting.
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
        try:
            yield
        finally:
            setattr(app, SERVICES_ATTRIBUTE, None)
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            await pruner.stop()
            await scheduler.stop()
            await job_updates.stop()  # streams still open end now
            await app.state.batches.stop()  # writes and answers the submits already waiting
            await worker_services.stop()  # graceful: running jobs finish or go back to the queue
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await app.state.rate_limiter.close()
            await app.state.authenticator.stop()
            if own_db:
                app.state.db.dispose()

    routes = build_routes(settings)
    http_metrics, metrics_registry = build_metrics(settings, lambda: app.state.db)
    app = Starlette(
        routes=routes,
        middleware=middleware(settings, http_metrics),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.dashboard_sessions = SessionCodec(settings)
    app.state.public_metrics = PublicMetricsCache()
    app.state.metrics_registry = metrics_registry
    return app
