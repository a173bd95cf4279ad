"""The auth matrix: every route and every GraphQL field, for every kind of caller, with keys configured.

Callers: no key, a key nobody issued, a revoked key, an expired key, a key with every scope but the
one needed, a key with just the scope needed, and a static `API_KEYS` key. The route list is read from
the app and the field list from the schema, so a new route or field without a row fails here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from starlette.routing import Mount, Route, WebSocketRoute

from levqor.db.engine import Database
from levqor.db.models import ApiKey
from levqor.resolvers.context import Scope
from levqor.rest.routing import ApiRoute
from levqor.schema import schema
from tests.conftest import LiveServer

STATIC_KEY = "static-matrix-key-0123456789"
ANY_KEY = "any key"  # the route needs a key, of any scope
PUBLIC = None

CALLERS = ("none", "unknown", "revoked", "expired", "lacking", "scoped", "static")


@dataclass
class World:
    """Keys and objects the matrix calls work on, made with the static (all-scope) key."""

    http: httpx.Client
    db: Database
    secrets: dict[str, str] = field(default_factory=dict)  # caller kind → secret, per needed scope
    job_id: str = ""
    user_id: str = ""
    email: str = ""

    def admin(self) -> dict[str, str]:
        return {"X-Api-Key": STATIC_KEY}

    def make_key(self, scopes: list[str], name: str = "matrix") -> tuple[str, str]:
        response = self.http.post("/api/v1/keys", json={"name": name, "scopes": scopes}, headers=self.admin())
        assert response.status_code == 201, response.text
        body = response.json()
        return body["key"]["id"], body["secret"]

    def fresh_job(self) -> str:
        response = self.http.post(
            "/api/v1/intake", json={"workflow": "echo", "payload": {"n": 1}}, headers=self.admin()
        )
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    def fresh_delivery(self) -> tuple[str, str]:
        """A job cancelled before it ran, with the delivery of its callback: (job id, delivery id)."""
        body = {
            "workflow": "echo",
            "payload": {},
            "callback_url": "http://127.0.0.1:9/matrix",
            "run_at": "2999-01-01T00:00:00Z",
        }
        response = self.http.post("/api/v1/intake", json=body, headers=self.admin())
        assert response.status_code == 202, response.text
        job_id = str(response.json()["job_id"])
        assert self.http.post(f"/api/v1/jobs/{job_id}/cancel", headers=self.admin()).status_code == 200
        detail = self.http.get(f"/api/v1/jobs/{job_id}", headers=self.admin()).json()
        return job_id, str(detail["deliveries"][0]["id"])

    def finished_job(self) -> str:
        job_id = self.fresh_job()
        done = self.http.post(f"/api/v1/_dev/complete/{job_id}", json={}, headers=self.admin())
        assert done.status_code == 200, done.text
        return job_id

    def fresh_key_id(self) -> str:
        return self.make_key([Scope.JOBS_READ], name="to revoke")[0]

    def budgeted(self, subject: str) -> str:
        """The id of a key (fresh) or of the world's user, with a budget set on it."""
        subject_id = self.fresh_key_id() if subject == "keys" else self.user_id
        body = {"period": "day", "limit_micros": 1_000_000}
        response = self.http.put(f"/api/v1/budgets/{subject}/{subject_id}", json=body, headers=self.admin())
        assert response.status_code == 200, response.text
        return subject_id

    def schedule(self) -> str:
        """A fresh schedule's id (an hourly echo)."""
        body = {"name": _fresh_name(), "every_s": 3600, "job": {"workflow": "echo", "payload": {}}}
        response = self.http.post("/api/v1/schedules", json=body, headers=self.admin())
        assert response.status_code == 201, response.text
        return str(response.json()["schedule"]["id"])

    def run(self) -> str:
        """A fresh run's id (two echo steps, the second after the first)."""
        steps = [
            {"key": "a", "workflow": "echo", "payload": {}},
            {"key": "b", "workflow": "echo", "payload": {}, "depends_on": ["a"]},
        ]
        response = self.http.post("/api/v1/runs", json={"steps": steps}, headers=self.admin())
        assert response.status_code == 202, response.text
        return str(response.json()["run_id"])

    def key_for(self, caller: str, need: str | None) -> str | None:
        """The secret a caller of this kind sends to a route that needs `need`."""
        if caller == "none":
            return None
        if caller == "unknown":
            return "lvq_" + "x" * 43
        if caller == "static":
            return STATIC_KEY
        if caller in ("revoked", "expired"):
            return self.secrets[caller]
        wanted = _scopes_for(caller, need)
        cache_key = f"{caller}:{need}"
        if cache_key not in self.secrets:
            self.secrets[cache_key] = self.make_key(wanted)[1]
        return self.secrets[cache_key]


def _fresh_name() -> str:
    """A schedule name no other has (names are unique)."""
    return f"matrix-{uuid.uuid4().hex[:12]}"


def _scopes_for(caller: str, need: str | None) -> list[str]:
    if need in (PUBLIC, ANY_KEY):
        # Any key at all passes these; "lacking" then means a key with the least a key can have.
        return [Scope.JOBS_READ] if caller == "lacking" else [Scope.WORKER]
    if caller == "lacking":
        return sorted(Scope.ALL - {need})
    return [need]


def expected_outcome(caller: str, need: str | None) -> str:
    """'ok', 'unauthorized' (401 / UNAUTHENTICATED) or 'forbidden' (403 / FORBIDDEN)."""
    if caller in ("unknown", "revoked", "expired"):
        return "unauthorized"  # on any route, even a public one
    if need is PUBLIC or caller in ("scoped", "static"):
        return "ok"
    if caller == "none":
        return "unauthorized"
    return "ok" if need == ANY_KEY else "forbidden"


# --- REST ---------------------------------------------------------------------------------------

Call = Callable[[World], tuple[str, str, dict[str, Any]]]


@dataclass(frozen=True)
class RestRow:
    need: str | None
    call: Call
    ok_status: int


def _get(path: str) -> Call:
    return lambda world: ("GET", path.format(job_id=world.job_id, user_id=world.user_id), {})


def _post(path: str, body: Callable[[World], Any], ok_path_job: bool = False) -> Call:
    def call(world: World) -> tuple[str, str, dict[str, Any]]:
        job_id = world.fresh_job() if ok_path_job else world.job_id
        return "POST", path.format(job_id=job_id, user_id=world.user_id), {"json": body(world)}

    return call


def _worker_body(extra: dict[str, Any]) -> Callable[[World], Any]:
    return lambda _world: {"worker_id": "matrix-worker", "attempt": 1, **extra}


REST_MATRIX: dict[tuple[str, str], RestRow] = {
    ("GET", "/"): RestRow(PUBLIC, _get("/"), 200),
    ("GET", "/health"): RestRow(PUBLIC, _get("/health"), 200),
    ("GET", "/public/metrics"): RestRow(PUBLIC, _get("/public/metrics"), 200),
    ("GET", "/api/v1/ops/health"): RestRow(ANY_KEY, _get("/api/v1/ops/health"), 200),
    ("POST", "/api/v1/intake"): RestRow(
        Scope.JOBS_WRITE, _post("/api/v1/intake", lambda _w: {"workflow": "echo", "payload": {}}), 202
    ),
    ("GET", "/api/v1/status/{job_id}"): RestRow(PUBLIC, _get("/api/v1/status/{job_id}"), 200),
    ("GET", "/api/v1/jobs"): RestRow(Scope.JOBS_READ, _get("/api/v1/jobs"), 200),
    ("GET", "/api/v1/overview"): RestRow(Scope.JOBS_READ, _get("/api/v1/overview"), 200),
    ("GET", "/api/v1/jobs/{job_id}"): RestRow(Scope.JOBS_READ, _get("/api/v1/jobs/{job_id}"), 200),
    # A finished job's stream: its state, then the end.
    ("GET", "/api/v1/jobs/{job_id}/events/stream"): RestRow(
        Scope.JOBS_READ,
        lambda world: ("GET", f"/api/v1/jobs/{world.finished_job()}/events/stream", {}),
        200,
    ),
    ("POST", "/api/v1/_dev/complete/{job_id}"): RestRow(
        Scope.JOBS_WRITE, _post("/api/v1/_dev/complete/{job_id}", lambda _w: {"result": {}}, True), 200
    ),
    ("POST", "/api/v1/jobs/{job_id}/cancel"): RestRow(
        Scope.JOBS_WRITE, _post("/api/v1/jobs/{job_id}/cancel", lambda _w: {}, True), 200
    ),
    # Authorised, then refused by the state machine: a queued job cannot be retried (409).
    ("POST", "/api/v1/jobs/{job_id}/retry"): RestRow(
        Scope.JOBS_WRITE, _post("/api/v1/jobs/{job_id}/retry", lambda _w: {}, True), 409
    ),
    ("GET", "/api/v1/workflows"): RestRow(PUBLIC, _get("/api/v1/workflows"), 200),
    ("POST", "/api/v1/users/upsert"): RestRow(
        Scope.USERS_WRITE,
        _post(
            "/api/v1/users/upsert",
            lambda _w: {"email": f"{uuid.uuid4().hex[:10]}@example.com", "name": "Matrix"},
        ),
        201,
    ),
    ("GET", "/api/v1/users"): RestRow(
        PUBLIC, lambda world: ("GET", "/api/v1/users", {"params": {"email": world.email}}), 200
    ),
    ("GET", "/api/v1/users/{user_id}"): RestRow(PUBLIC, _get("/api/v1/users/{user_id}"), 200),
    ("PATCH", "/api/v1/users/{user_id}"): RestRow(
        Scope.USERS_WRITE,
        lambda world: ("PATCH", f"/api/v1/users/{world.user_id}", {"json": {"name": "Renamed"}}),
        200,
    ),
    ("POST", "/api/v1/workers/claim"): RestRow(
        Scope.WORKER,
        _post("/api/v1/workers/claim", lambda _w: {"worker_id": "matrix-worker", "workflows": ["sleep"]}),
        204,  # authorised, and nothing of that workflow is queued
    ),
    # Authorised, then fenced: the job is not running under this worker (409, lease lost).
    ("POST", "/api/v1/jobs/{job_id}/heartbeat"): RestRow(
        Scope.WORKER, _post("/api/v1/jobs/{job_id}/heartbeat", _worker_body({})), 409
    ),
    ("POST", "/api/v1/jobs/{job_id}/complete"): RestRow(
        Scope.WORKER, _post("/api/v1/jobs/{job_id}/complete", _worker_body({"result": {}})), 409
    ),
    ("POST", "/api/v1/jobs/{job_id}/fail"): RestRow(
        Scope.WORKER, _post("/api/v1/jobs/{job_id}/fail", _worker_body({"error": "boom"})), 409
    ),
    ("POST", "/api/v1/keys"): RestRow(
        Scope.ADMIN, _post("/api/v1/keys", lambda _w: {"name": "made", "scopes": ["jobs:read"]}), 201
    ),
    ("GET", "/api/v1/keys"): RestRow(Scope.ADMIN, _get("/api/v1/keys"), 200),
    ("PATCH", "/api/v1/keys/{key_id}"): RestRow(
        Scope.ADMIN,
        lambda world: ("PATCH", f"/api/v1/keys/{world.fresh_key_id()}", {"json": {"max_running": 2}}),
        200,
    ),
    ("DELETE", "/api/v1/keys/{key_id}"): RestRow(
        Scope.ADMIN, lambda world: ("DELETE", f"/api/v1/keys/{world.fresh_key_id()}", {}), 200
    ),
    ("POST", "/api/v1/keys/{key_id}/webhook-secret"): RestRow(
        Scope.ADMIN,
        lambda world: ("POST", f"/api/v1/keys/{world.fresh_key_id()}/webhook-secret", {"json": {}}),
        200,
    ),
    ("POST", "/api/v1/jobs/{job_id}/deliveries/{delivery_id}/resend"): RestRow(
        Scope.ADMIN,
        lambda world: (
            "POST",
            "/api/v1/jobs/{}/deliveries/{}/resend".format(*world.fresh_delivery()),
            {"json": {}},
        ),
        202,
    ),
    ("GET", "/api/v1/budgets"): RestRow(Scope.ADMIN, _get("/api/v1/budgets"), 200),
    ("PUT", "/api/v1/budgets/keys/{key_id}"): RestRow(
        Scope.ADMIN,
        lambda world: (
            "PUT",
            f"/api/v1/budgets/keys/{world.fresh_key_id()}",
            {"json": {"period": "day", "limit_micros": 1000}},
        ),
        200,
    ),
    ("DELETE", "/api/v1/budgets/keys/{key_id}"): RestRow(
        Scope.ADMIN, lambda world: ("DELETE", f"/api/v1/budgets/keys/{world.budgeted('keys')}", {}), 200
    ),
    ("PUT", "/api/v1/budgets/users/{user_id}"): RestRow(
        Scope.ADMIN,
        lambda world: (
            "PUT",
            f"/api/v1/budgets/users/{world.user_id}",
            {"json": {"period": "month", "limit_micros": 1000, "soft_limit_micros": 500}},
        ),
        200,
    ),
    ("DELETE", "/api/v1/budgets/users/{user_id}"): RestRow(
        Scope.ADMIN, lambda world: ("DELETE", f"/api/v1/budgets/users/{world.budgeted('users')}", {}), 200
    ),
    # Any key with `jobs:read` sees its own usage; an admin everyone's.
    ("GET", "/api/v1/usage"): RestRow(
        Scope.JOBS_READ, lambda _w: ("GET", "/api/v1/usage", {"params": {"group_by": "workflow"}}), 200
    ),
    ("POST", "/api/v1/schedules"): RestRow(
        Scope.JOBS_WRITE,
        _post(
            "/api/v1/schedules",
            lambda _w: {"name": _fresh_name(), "every_s": 60, "job": {"workflow": "echo", "payload": {}}},
        ),
        201,
    ),
    ("GET", "/api/v1/schedules"): RestRow(Scope.JOBS_READ, _get("/api/v1/schedules"), 200),
    ("GET", "/api/v1/schedules/{schedule_id}"): RestRow(
        Scope.JOBS_READ, lambda world: ("GET", f"/api/v1/schedules/{world.schedule()}", {}), 200
    ),
    ("PATCH", "/api/v1/schedules/{schedule_id}"): RestRow(
        Scope.JOBS_WRITE,
        lambda world: ("PATCH", f"/api/v1/schedules/{world.schedule()}", {"json": {"enabled": False}}),
        200,
    ),
    ("DELETE", "/api/v1/schedules/{schedule_id}"): RestRow(
        Scope.JOBS_WRITE, lambda world: ("DELETE", f"/api/v1/schedules/{world.schedule()}", {}), 200
    ),
    ("POST", "/api/v1/schedules/{schedule_id}/run"): RestRow(
        Scope.JOBS_WRITE, lambda world: ("POST", f"/api/v1/schedules/{world.schedule()}/run", {}), 202
    ),
    ("POST", "/api/v1/runs"): RestRow(
        Scope.JOBS_WRITE,
        _post("/api/v1/runs", lambda _w: {"steps": [{"key": "a", "workflow": "echo", "payload": {}}]}),
        202,
    ),
    ("GET", "/api/v1/runs/{run_id}"): RestRow(
        Scope.JOBS_READ, lambda world: ("GET", f"/api/v1/runs/{world.run()}", {}), 200
    ),
    ("POST", "/api/v1/runs/{run_id}/cancel"): RestRow(
        Scope.JOBS_WRITE, lambda world: ("POST", f"/api/v1/runs/{world.run()}/cancel", {}), 200
    ),
    ("GET", "/openapi.json"): RestRow(PUBLIC, _get("/openapi.json"), 200),
    ("GET", "/metrics"): RestRow(PUBLIC, _get("/metrics"), 200),
    ("GET", "/legal/privacy"): RestRow(PUBLIC, _get("/legal/privacy"), 200),
    ("GET", "/legal/terms"): RestRow(PUBLIC, _get("/legal/terms"), 200),
    ("GET", "/legal/cookies"): RestRow(PUBLIC, _get("/legal/cookies"), 200),
    ("GET", "/faq"): RestRow(PUBLIC, _get("/faq"), 200),
    ("GET", "/public/{path}"): RestRow(PUBLIC, _get("/public/legal/privacy.html"), 200),
    ("GET", "/graphql/assets/{path}"): RestRow(PUBLIC, _get("/graphql/assets/explorer.js"), 200),
    # The dashboard's pages sign in by session cookie (tests/integration/test_dashboard.py); a key
    # header is judged as on every route.
    ("GET", "/dashboard"): RestRow(PUBLIC, _get("/dashboard"), 308),
    ("GET", "/dashboard/{path}"): RestRow(PUBLIC, _get("/dashboard/static/dashboard.css"), 200),
    # GraphQL over GET runs queries; its fields have their own matrix below.
    ("GET", "/graphql"): RestRow(
        PUBLIC, lambda _w: ("GET", "/graphql", {"params": {"query": "{ health { ok } }"}}), 200
    ),
    ("POST", "/graphql"): RestRow(
        PUBLIC, lambda _w: ("POST", "/graphql", {"json": {"query": "{ health { ok } }"}}), 200
    ),
}


def _error_code(path: str, response: httpx.Response) -> str | None:
    """The contract's error code; /graphql answers a refusal with a GraphQL error body instead."""
    body = response.json()
    if path == "/graphql":
        graphql_codes = {"UNAUTHENTICATED": "unauthorized", "FORBIDDEN": "forbidden"}
        return graphql_codes.get(body["errors"][0]["extensions"]["code"])
    return str(body["error"])


def app_routes(live: LiveServer) -> set[tuple[str, str]]:
    """(method, path) of every HTTP route the running app serves; WebSockets are ("WS", path)."""
    found: set[tuple[str, str]] = set()
    for route in live.server.config.app.routes:
        if isinstance(route, ApiRoute):
            found.add((route.method, route.path))
        elif isinstance(route, Route):
            found.update((method, route.path) for method in (route.methods or set()) - {"HEAD"})
        elif isinstance(route, Mount):
            found.add(("GET", route.path + "/{path}"))
        elif isinstance(route, WebSocketRoute):
            found.add(("WS", route.path))
        else:
            raise AssertionError(f"the matrix does not know routes of type {type(route).__name__}")
    return found


@pytest.fixture
def world(make_server: Callable[..., LiveServer], db: Database) -> Iterator[tuple[LiveServer, World]]:
    live = make_server(API_KEYS=STATIC_KEY)
    with live.client() as http:
        w = World(http=http, db=db)
        w.job_id = w.fresh_job()
        w.email = f"{uuid.uuid4().hex[:10]}@example.com"
        upserted = http.post(
            "/api/v1/users/upsert", json={"email": w.email, "name": "Matrix"}, headers=w.admin()
        )
        assert upserted.status_code == 201, upserted.text
        w.user_id = upserted.json()["user"]["id"]

        revoked_id, w.secrets["revoked"] = w.make_key(sorted(Scope.ALL), name="revoked")
        assert http.delete(f"/api/v1/keys/{revoked_id}", headers=w.admin()).status_code == 200
        expired_id, w.secrets["expired"] = w.make_key(sorted(Scope.ALL), name="expired")
        past = datetime.now(UTC) - timedelta(hours=1)
        db.write_sync(
            lambda session: session.execute(
                update(ApiKey).where(ApiKey.id == uuid.UUID(expired_id)).values(expires_at=past)
            )
        )
        yield live, w


def test_every_rest_route_has_a_matrix_row(world: tuple[LiveServer, World]) -> None:
    live, _ = world
    served = app_routes(live) - {("WS", "/graphql")}  # the WebSocket handshake: see test_auth_keys.py
    missing = sorted(served - set(REST_MATRIX))
    stale = sorted(set(REST_MATRIX) - served)
    assert not missing, f"routes without an auth-matrix row: {missing}"
    assert not stale, f"matrix rows for routes the app does not serve: {stale}"


def test_rest_auth_matrix(world: tuple[LiveServer, World]) -> None:
    live, w = world
    failures: list[str] = []
    for (method, path), row in sorted(REST_MATRIX.items()):
        if (method, path) not in app_routes(live):
            continue  # reported by test_every_rest_route_has_a_matrix_row
        for caller in CALLERS:
            secret = w.key_for(caller, row.need)
            verb, url, kwargs = row.call(w)
            headers = {"X-Api-Key": secret} if secret is not None else {}
            # Half the callers send the key as a bearer token: both headers must work alike.
            if secret is not None and caller in ("revoked", "scoped"):
                headers = {"Authorization": f"Bearer {secret}"}
            response = w.http.request(verb, url, headers=headers, **kwargs)
            outcome = expected_outcome(caller, row.need)
            want = {"ok": row.ok_status, "unauthorized": 401, "forbidden": 403}[outcome]
            if response.status_code != want:
                failures.append(f"{method} {path} as {caller}: {response.status_code}, want {want}")
            elif outcome != "ok" and _error_code(path, response) != outcome:
                failures.append(f"{method} {path} as {caller}: error body {response.text[:200]}")
            elif outcome == "unauthorized" and "www-authenticate" not in response.headers:
                # Whichever layer refused it (the key check, or a resolver for a keyless caller).
                failures.append(f"{method} {path} as {caller}: 401 without WWW-Authenticate")
    assert not failures, "\n".join(failures)


# --- GraphQL ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphQLRow:
    need: str | None
    document: Callable[[World], tuple[str, dict[str, Any]]]


def _doc(text: str, variables: Callable[[World], dict[str, Any]] | None = None) -> Any:
    return lambda world: (text, variables(world) if variables else {})


_WORKER = {"workerId": "matrix-worker", "attempt": 1}

GRAPHQL_MATRIX: dict[tuple[str, str], GraphQLRow] = {
    ("Query", "health"): GraphQLRow(PUBLIC, _doc("{ health { ok } }")),
    ("Query", "publicMetrics"): GraphQLRow(PUBLIC, _doc("{ publicMetrics { jobsToday } }")),
    ("Query", "user"): GraphQLRow(
        PUBLIC, _doc("query($id: ID!) { user(id: $id) { id } }", lambda w: {"id": w.user_id})
    ),
    ("Query", "userByEmail"): GraphQLRow(
        PUBLIC, _doc("query($e: String!) { userByEmail(email: $e) { id } }", lambda w: {"e": w.email})
    ),
    ("Query", "job"): GraphQLRow(
        Scope.JOBS_READ,
        _doc("query($id: ID!) { job(id: $id) { id events { type } } }", lambda w: {"id": w.job_id}),
    ),
    ("Query", "jobs"): GraphQLRow(Scope.JOBS_READ, _doc("{ jobs(first: 1) { edges { cursor } } }")),
    ("Query", "overview"): GraphQLRow(
        Scope.JOBS_READ, _doc("{ overview(windowS: 600) { counts { queued } workers { id } } }")
    ),
    ("Query", "apiKeys"): GraphQLRow(Scope.ADMIN, _doc("{ apiKeys { id prefix } }")),
    ("Query", "workflows"): GraphQLRow(PUBLIC, _doc("{ workflows { name } }")),
    ("Query", "budgets"): GraphQLRow(Scope.ADMIN, _doc("{ budgets { id remainingMicros } }")),
    ("Query", "usage"): GraphQLRow(
        Scope.JOBS_READ, _doc("{ usage(groupBy: KEY) { from rows { group jobs spentMicros } } }")
    ),
    ("Mutation", "setBudget"): GraphQLRow(
        Scope.ADMIN,
        _doc(
            "mutation($id: ID!) { setBudget(input: {subject: KEY, subjectId: $id, period: TOTAL, "
            "limitMicros: 5000000000}) { budget { limitMicros } userErrors { code } } }",
            lambda w: {"id": w.fresh_key_id()},
        ),
    ),
    ("Mutation", "deleteBudget"): GraphQLRow(
        Scope.ADMIN,
        _doc(
            "mutation($id: ID!) { deleteBudget(subject: USER, subjectId: $id) "
            "{ budget { id } userErrors { code } } }",
            lambda w: {"id": w.budgeted("users")},
        ),
    ),
    ("Query", "schedules"): GraphQLRow(
        Scope.JOBS_READ, _doc("{ schedules(first: 5) { edges { node { id nextFireTimes } } } }")
    ),
    ("Query", "schedule"): GraphQLRow(
        Scope.JOBS_READ,
        _doc("query($id: ID!) { schedule(id: $id) { id } }", lambda w: {"id": w.schedule()}),
    ),
    ("Mutation", "createSchedule"): GraphQLRow(
        Scope.JOBS_WRITE,
        _doc(
            "mutation($name: String!) { createSchedule(input: {name: $name, everyS: 60, "
            'job: {workflow: "echo", payload: {}}}) { schedule { id } userErrors { code } } }',
            lambda _w: {"name": _fresh_name()},
        ),
    ),
    ("Mutation", "updateSchedule"): GraphQLRow(
        Scope.JOBS_WRITE,
        _doc(
            "mutation($id: ID!) { updateSchedule(id: $id, input: {enabled: false}) "
            "{ schedule { enabled } userErrors { code } } }",
            lambda w: {"id": w.schedule()},
        ),
    ),
    ("Mutation", "deleteSchedule"): GraphQLRow(
        Scope.JOBS_WRITE,
        _doc(
            "mutation($id: ID!) { deleteSchedule(id: $id) { schedule { id } userErrors { code } } }",
            lambda w: {"id": w.schedule()},
        ),
    ),
    ("Mutation", "runSchedule"): GraphQLRow(
        Scope.JOBS_WRITE,
        _doc(
            "mutation($id: ID!) { runSchedule(id: $id) { jobId userErrors { code } } }",
            lambda w: {"id": w.schedule()},
        ),
    ),
    ("Query", "run"): GraphQLRow(
        Scope.JOBS_READ,
        _doc("query($id: ID!) { run(id: $id) { id status } }", lambda w: {"id": w.run()}),
    ),
    ("Mutation", "submitRun"): GraphQLRow(
        Scope.JOBS_WRITE,
        _doc(
            'mutation { submitRun(input: {steps: [{key: "a", workflow: "echo", payload: {}}]}) '
            "{ run { id } userErrors { code } } }"
        ),
    ),
    ("Mutation", "cancelRun"): GraphQLRow(
        Scope.JOBS_WRITE,
        _doc(
            "mutation($id: ID!) { cancelRun(id: $id) { run { status } userErrors { code } } }",
            lambda w: {"id": w.run()},
        ),
    ),
    ("Mutation", "cancelJob"): GraphQLRow(
        Scope.JOBS_WRITE,
        _doc(
            "mutation($id: ID!) { cancelJob(id: $id) { job { status } userErrors { code } } }",
            lambda w: {"id": w.fresh_job()},
        ),
    ),
    ("Mutation", "retryJob"): GraphQLRow(
        Scope.JOBS_WRITE,
        _doc(
            "mutation($id: ID!) { retryJob(id: $id) { job { status } userErrors { code } } }",
            lambda w: {"id": w.fresh_job()},
        ),
    ),
    ("Mutation", "submitJob"): GraphQLRow(
        Scope.JOBS_WRITE,
        _doc(
            'mutation { submitJob(input: {workflow: "echo", payload: {}}) '
            "{ job { id } userErrors { code } } }"
        ),
    ),
    ("Mutation", "completeJob"): GraphQLRow(
        Scope.JOBS_WRITE,
        _doc(
            "mutation($id: ID!) { completeJob(id: $id) { job { status } userErrors { code } } }",
            lambda w: {"id": w.fresh_job()},
        ),
    ),
    ("Mutation", "upsertUser"): GraphQLRow(
        Scope.USERS_WRITE,
        _doc(
            'mutation($e: String!) { upsertUser(input: {email: $e, name: "M"}) { user { id } } }',
            lambda _w: {"e": f"{uuid.uuid4().hex[:10]}@example.com"},
        ),
    ),
    ("Mutation", "updateUser"): GraphQLRow(
        Scope.USERS_WRITE,
        _doc(
            'mutation($id: ID!) { updateUser(id: $id, input: {name: "N"}) { user { id } } }',
            lambda w: {"id": w.user_id},
        ),
    ),
    ("Mutation", "createApiKey"): GraphQLRow(
        Scope.ADMIN,
        _doc(
            'mutation { createApiKey(input: {name: "g", scopes: ["jobs:read"]}) '
            "{ secret userErrors { code } } }"
        ),
    ),
    ("Mutation", "updateApiKey"): GraphQLRow(
        Scope.ADMIN,
        _doc(
            "mutation($id: ID!) { updateApiKey(id: $id, input: {maxRunning: 2, rateLimit: 60}) "
            "{ apiKey { maxRunning rateLimit } userErrors { code } } }",
            lambda w: {"id": w.fresh_key_id()},
        ),
    ),
    ("Mutation", "revokeApiKey"): GraphQLRow(
        Scope.ADMIN,
        _doc(
            "mutation($id: ID!) { revokeApiKey(id: $id) { apiKey { active } userErrors { code } } }",
            lambda w: {"id": w.fresh_key_id()},
        ),
    ),
    ("Mutation", "rotateWebhookSecret"): GraphQLRow(
        Scope.ADMIN,
        _doc(
            "mutation($id: ID!) { rotateWebhookSecret(id: $id) { webhookSecret userErrors { code } } }",
            lambda w: {"id": w.fresh_key_id()},
        ),
    ),
    ("Mutation", "resendDelivery"): GraphQLRow(
        Scope.ADMIN,
        _doc(
            "mutation($j: ID!, $d: ID!) { resendDelivery(jobId: $j, deliveryId: $d) "
            "{ delivery { id } userErrors { code } } }",
            lambda w: dict(zip(("j", "d"), w.fresh_delivery(), strict=True)),
        ),
    ),
    ("Mutation", "claimJobs"): GraphQLRow(
        Scope.WORKER,
        _doc(
            'mutation { claimJobs(input: {workerId: "matrix-worker", workflows: ["sleep"]}) { jobs { id } } }'
        ),
    ),
    ("Mutation", "heartbeatJob"): GraphQLRow(
        Scope.WORKER,
        _doc(
            "mutation($id: ID!, $in: HeartbeatJobInput!) { heartbeatJob(id: $id, input: $in) "
            "{ userErrors { code } } }",
            lambda w: {"id": w.job_id, "in": _WORKER},
        ),
    ),
    ("Mutation", "completeJobRun"): GraphQLRow(
        Scope.WORKER,
        _doc(
            "mutation($id: ID!, $in: CompleteJobRunInput!) { completeJobRun(id: $id, input: $in) "
            "{ userErrors { code } } }",
            lambda w: {"id": w.job_id, "in": {**_WORKER, "result": {}}},
        ),
    ),
    ("Mutation", "failJobRun"): GraphQLRow(
        Scope.WORKER,
        _doc(
            "mutation($id: ID!, $in: FailJobRunInput!) { failJobRun(id: $id, input: $in) "
            "{ userErrors { code } } }",
            lambda w: {"id": w.job_id, "in": {**_WORKER, "error": "boom"}},
        ),
    ),
}


# Served over the WebSocket only: tests/integration/test_job_updates.py has their matrix.
OVER_WEBSOCKET = frozenset({("Subscription", "jobUpdates")})


def schema_fields() -> set[tuple[str, str]]:
    graphql_schema = schema._schema
    found: set[tuple[str, str]] = set()
    for root in (graphql_schema.query_type, graphql_schema.mutation_type, graphql_schema.subscription_type):
        if root is not None:
            found.update((root.name, name) for name in root.fields)
    return found


def test_every_graphql_field_has_a_matrix_row() -> None:
    fields = schema_fields() - OVER_WEBSOCKET
    missing = sorted(fields - set(GRAPHQL_MATRIX))
    stale = sorted(set(GRAPHQL_MATRIX) - fields)
    assert not missing, f"GraphQL fields without an auth-matrix row: {missing}"
    assert not stale, f"matrix rows for fields the schema does not have: {stale}"


def test_graphql_auth_matrix(world: tuple[LiveServer, World]) -> None:
    _, w = world
    failures: list[str] = []
    for (root, name), row in sorted(GRAPHQL_MATRIX.items()):
        if (root, name) not in schema_fields():
            continue  # reported by test_every_graphql_field_has_a_matrix_row
        for caller in CALLERS:
            secret = w.key_for(caller, row.need)
            text, variables = row.document(w)
            headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
            response = w.http.post("/graphql", json={"query": text, "variables": variables}, headers=headers)
            outcome = expected_outcome(caller, row.need)
            codes = [error.get("extensions", {}).get("code") for error in response.json().get("errors", [])]
            where = f"{root}.{name} as {caller}"
            if outcome == "ok":
                if response.status_code != 200 or codes or response.json()["data"][name] is None:
                    failures.append(f"{where}: {response.status_code} {response.text[:200]}")
            elif caller in ("unknown", "revoked", "expired"):
                # Refused before GraphQL runs: HTTP 401 with a GraphQL error body.
                if response.status_code != 401 or codes != ["UNAUTHENTICATED"]:
                    failures.append(f"{where}: {response.status_code} {codes}, want 401 UNAUTHENTICATED")
            else:
                want = "UNAUTHENTICATED" if outcome == "unauthorized" else "FORBIDDEN"
                data = response.json()["data"]
                if codes != [want] or (data is not None and data.get(name)):
                    failures.append(f"{where}: {codes}, want [{want}]")
    assert not failures, "\n".join(failures)


def test_a_key_without_admin_sees_only_its_own_usage(world: tuple[LiveServer, World]) -> None:
    _, w = world
    own_id, own = w.make_key([Scope.JOBS_READ, Scope.JOBS_WRITE], name="own")
    other_id, other = w.make_key([Scope.JOBS_READ, Scope.JOBS_WRITE], name="other")
    for secret in (own, own, other):
        body = {"workflow": "echo", "payload": {}}
        assert w.http.post("/api/v1/intake", json=body, headers={"X-Api-Key": secret}).status_code == 202
    as_own = {"X-Api-Key": own}
    rows = w.http.get("/api/v1/usage", params={"group_by": "key"}, headers=as_own).json()["usage"]
    assert [(row["group"], row["jobs"]) for row in rows] == [(own_id, 2)]
    everyone = w.http.get("/api/v1/usage", params={"group_by": "key"}, headers=w.admin()).json()["usage"]
    assert {(row["group"], row["jobs"]) for row in everyone} >= {(own_id, 2), (other_id, 1)}

    response = w.http.get("/api/v1/usage", params={"key_id": other_id}, headers=as_own)
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden"
    graphql = w.http.post(
        "/graphql",
        json={"query": "query($k: ID) { usage(keyId: $k) { rows { jobs } } }", "variables": {"k": other_id}},
        headers=as_own,
    ).json()
    assert [error["extensions"]["code"] for error in graphql["errors"]] == ["FORBIDDEN"]
    assert graphql["errors"][0]["message"] == response.json()["message"]
