"""Prometheus metrics at `/metrics`: requests by route template, jobs by state read at scrape time.

Request labels are the method, the route template (`/api/v1/status/{job_id}`, never the raw path, so
ids cannot blow up the number of series) and the status. With several server processes
(`levqor serve --workers N`) each process writes its samples to files in `PROMETHEUS_MULTIPROC_DIR`
(prometheus-client's multiprocess mode, set up by `multiprocess_metrics`) and a scrape answered by
any process sums them all, so the figures do not depend on which process the scraper reached.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import anyio.to_thread
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.types import Scope

from levqor.callbacks.attempts import outbox_figures
from levqor.config import Settings
from levqor.costs.ledger import budget_figures
from levqor.costs.metrics import BUDGET_REFUSALS
from levqor.db.engine import Database
from levqor.db.models import JobStatus
from levqor.resolvers.health import jobs_by_state, live_workers

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "unmatched"  # 404s: one series, whatever paths clients try
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
REQUEST_LABELS = ("method", "route", "status")


class HttpMetrics:
    """The request counter and latency histogram of one server process."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "levqor_http_requests",
            "HTTP requests answered, by method, route template and status.",
            REQUEST_LABELS,
            registry=registry,
        )
        self.latency = Histogram(
            "levqor_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response, in seconds.",
            REQUEST_LABELS,
            registry=registry,
        )

        # The series of each label set, looked up once: `labels()` checks and locks on every call.
        # Bounded, as the labels are: known methods, route templates and statuses.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, duration_s: float) -> None:
        series = self._series.get((method, route, status))
        if series is None:
            labels = (method if method in KNOWN_METHODS else OTHER_METHOD, route, str(status))
            series = (self.requests.labels(*labels), self.latency.labels(*labels))
            if method in KNOWN_METHODS:
                self._series[(method, route, status)] = series
        series[0].inc()
        series[1].observe(duration_s)


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route that served (or would have served) the request."""
    route = scope.get("route")
    if route is None:
        # Answered before routing (413 from the body limit, 429, 401): find the route it was for.
        route = next((r for r in routes if r.matches(scope)[0] is not Match.NONE), None)
    if isinstance(route, Mount):
        return route.path + "/{path}"
    if isinstance(route, Route | WebSocketRoute):
        return route.path
    return UNMATCHED_ROUTE


class JobsCollector:
    """Jobs by state, live workers and whether the database answered, queried at each scrape."""

    def __init__(self, database: Callable[[], Database], lease_s: int) -> None:
        self.database = database
        self.lease_s = lease_s

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        jobs, workers, pending, failing, spent, reserved, crossed, up = self._families()

        def read(session: Session) -> tuple[dict[JobStatus, int], int, tuple[int, int], tuple[int, int, int]]:
            return (
                jobs_by_state(session),
                live_workers(session, self.lease_s),
                outbox_figures(session),
                budget_figures(session),
            )

        try:
            counts, live, (waiting, marked), (spent_micros, held_micros, crossings) = (
                self.database().read_sync(read)
            )
        except SQLAlchemyError:
            logger.warning("metrics: the database did not answer", exc_info=True)
            up.add_metric([], 0)
            return [up]
        for state, count in counts.items():
            jobs.add_metric([state.value], count)
        workers.add_metric([], live)
        pending.add_metric([], waiting)
        failing.add_metric([], marked)
        spent.add_metric([], spent_micros)
        reserved.add_metric([], held_micros)
        crossed.add_metric([], crossings)
        up.add_metric([], 1)
        return [jobs, workers, pending, failing, spent, reserved, crossed, up]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily | CounterMetricFamily, ...]:
        return (
            GaugeMetricFamily("levqor_jobs", "Jobs in the database, by state.", labels=["state"]),
            GaugeMetricFamily("levqor_workers_live", "Workers that heartbeated within three leases."),
            GaugeMetricFamily(
                "levqor_callback_deliveries_pending",
                "Callbacks waiting for their next attempt or being sent.",
            ),
            GaugeMetricFamily(
                "levqor_callback_endpoints_failing",
                "Callback URLs marked failing (no success for LEVQOR_CALLBACK_FAILING_AFTER_S).",
            ),
            CounterMetricFamily(
                "levqor_budget_spent_micros",
                "USD micro-dollars settled against budgets, in all their periods (from the database).",
            ),
            GaugeMetricFamily(
                "levqor_budget_reserved_micros",
                "USD micro-dollars budgets hold for jobs not yet finished.",
            ),
            CounterMetricFamily(
                "levqor_budget_soft_limit_crossings",
                "Budget periods whose use crossed the soft limit (each logged once).",
            ),
            GaugeMetricFamily("levqor_database_up", "1 when the database answered this scrape, else 0."),
        )


def build_metrics(
    settings: Settings, database: Callable[[], Database]
) -> tuple[HttpMetrics, CollectorRegistry]:
    """The process's request metrics and the registry `/metrics` exposes."""
    # `*_created` series double the output and no dashboard reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    exposed = CollectorRegistry()
    # The library picks files or memory for its values when it is imported, from the environment.
    multiprocess = values.ValueClass is not values.MutexValue
    if settings.metrics_multiproc_dir and not multiprocess:
        logger.warning("%s is not in this process's environment: its metrics stay its own", MULTIPROC_ENV)
    if settings.metrics_multiproc_dir and multiprocess:
        # Samples go to files, not to a registry; the collector sums every process's files.
        http = HttpMetrics(registry=None)
        MultiProcessCollector(exposed, path=settings.metrics_multiproc_dir)  # type: ignore[no-untyped-call]
    else:
        http = HttpMetrics(registry=exposed)
        ProcessCollector(registry=exposed)
        exposed.register(BUDGET_REFUSALS)
    exposed.register(JobsCollector(database, settings.lease_s))
    return http, exposed


async def metrics_endpoint(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    # The jobs collector queries the database: keep it off the event loop.
    body = await anyio.to_thread.run_sync(generate_latest, registry)
    return Response(body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


@contextlib.contextmanager
def multiprocess_metrics(settings: Settings, workers: int) -> Iterator[None]:
    """Around `levqor serve`: give several server processes one empty directory for their metrics.

    A configured `PROMETHEUS_MULTIPROC_DIR` is emptied of the last run's files (their counters would
    otherwise be added to this run's); with several workers and none configured, a temporary one is
    made, handed to the server processes through the environment, and removed at the end."""
    if settings.metrics_multiproc_dir:
        configured = Path(settings.metrics_multiproc_dir)
        configured.mkdir(parents=True, exist_ok=True)
        for stale in configured.glob("*.db"):
            stale.unlink()
        # It may come from `.env`, which the spawned server processes' metrics library does not read.
        os.environ[MULTIPROC_ENV] = str(configured)
        yield
        return
    if workers <= 1:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="levqor-metrics-") as directory:
        # Server processes are spawned, not forked: they read it from the environment at start.
        os.environ[MULTIPROC_ENV] = directory
        try:
            yield
        finally:
            os.environ.pop(MULTIPROC_ENV, None)
