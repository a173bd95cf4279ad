"""The seed's health routes, the protected ops health and the public metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from levqor import SERVICE_NAME, __version__
from levqor.http.context import context_for
from levqor.resolvers import health
from levqor.rest.routing import ApiPath, ApiRoute, Operation, api_paths, json_response
from levqor.rest.shapes import ErrorBody, HealthBody, OpsHealthBody, PublicMetricsBody, ServiceInfo


async def root(_request: Request) -> Response:
    return json_response(ServiceInfo(ok=True, service=SERVICE_NAME, version=__version__))


async def health_check(_request: Request) -> Response:
    return json_response(HealthBody(ok=True, ts=health.now_ts()))


async def ops_health(request: Request) -> Response:
    report = await health.ops_health(context_for(request))
    body = OpsHealthBody(
        ok=report.ok, ts=report.ts, db=report.db, queue_depth=report.queue_depth, workers=report.workers
    )
    return json_response(body, 200 if report.ok else 503)


async def public_metrics(request: Request) -> Response:
    metrics = await request.app.state.public_metrics.get(context_for(request))
    return json_response(
        PublicMetricsBody(
            uptime_rolling_7d=metrics.uptime_rolling_7d,
            jobs_today=metrics.jobs_today,
            audit_coverage=metrics.audit_coverage,
            last_updated=metrics.last_updated,
        )
    )


def routes() -> list[ApiPath]:
    return api_paths(
        [
            ApiRoute(
                "GET",
                "/",
                root,
                Operation("Service name and version", {200: ServiceInfo}, "health", seed=True),
            ),
            ApiRoute(
                "GET", "/health", health_check, Operation("Liveness", {200: HealthBody}, "health", seed=True)
            ),
            ApiRoute(
                "GET",
                "/public/metrics",
                public_metrics,
                Operation(
                    "Public service metrics", {200: PublicMetricsBody, 429: ErrorBody}, "health", seed=True
                ),
            ),
            ApiRoute(
                "GET",
                "/api/v1/ops/health",
                ops_health,
                Operation(
                    "Health with a database round-trip, the queue depth and the live workers",
                    {200: OpsHealthBody, 401: ErrorBody, 429: ErrorBody, 503: OpsHealthBody},
                    "health",
                    key_required=True,
                    seed=True,
                ),
            ),
        ]
    )
