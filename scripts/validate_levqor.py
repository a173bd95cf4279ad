#!/usr/bin/env python3
"""Validate a running Levqor backend over both surfaces, REST and GraphQL.

    BASE_URL=http://localhost:5000 API_KEY=lvq_... python scripts/validate_levqor.py

Hits every documented route (the seed's, the pages, `/metrics`, and every route the server's own
`/openapi.json` lists), checks status codes, response shapes and the security headers of every answer,
and prints one line per check. Exits 0 with the green line when everything passed, 1 naming each
failing route otherwise, 2 when the server cannot be reached.

Environment: `BASE_URL` (default http://localhost:5000); `API_KEY`, sent as `X-Api-Key` (a key with
every scope; leave it unset for a development server without keys); `CORS_ORIGIN`, an origin the server
allows (default https://levqor.ai). The script creates a few jobs and users named `validate_levqor`;
with an `API_KEY` it also creates one API key and revokes it at once. It needs only httpx.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

GREEN = "🟢 COCKPIT GREEN — Levqor backend validated"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "geolocation=(), microphone=()",
}
PAGES = {
    "/legal/privacy": "/public/legal/privacy.html",
    "/legal/terms": "/public/legal/terms.html",
    "/legal/cookies": "/public/legal/cookies.html",
    "/faq": "/public/faq/index.html",
}
REQUEST_TIMEOUT_S = 30
RATE_LIMIT_WAIT_BUDGET_S = 240  # the default limits are per minute: a few windows at most
SCHEDULE_AHEAD = timedelta(hours=1)  # keeps validation jobs away from workers until completed by hand
NOBODY = "00000000-0000-4000-8000-000000000000"  # a well-formed id that no record has
WORKER_ID = "validate_levqor"
Spec = dict[str, Any]


class Unreachable(Exception):
    pass


class Validator:
    def __init__(self, base_url: str, api_key: str | None, origin: str) -> None:
        headers = {"User-Agent": "validate_levqor/1"}
        if api_key:
            headers["X-Api-Key"] = api_key
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_S)
        self.has_key = bool(api_key)
        self.origin = origin
        self.failed: dict[str, list[str]] = {}
        self.passed = 0
        self.exercised: set[tuple[str, str]] = set()
        self.waited_s = 0.0

    # --- reporting -------------------------------------------------------------------------------

    def ok(self, route: str, detail: str) -> None:
        self.passed += 1
        print(f"✓ {route} — {detail}", flush=True)

    def fail(self, route: str, problem: str) -> None:
        self.failed.setdefault(route, []).append(problem)
        print(f"✗ {route} — {problem}", flush=True)

    def note(self, text: str) -> None:
        print(f"· {text}", flush=True)

    # --- HTTP ------------------------------------------------------------------------------------

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a 429 is waited out (Retry-After) and retried, within a total budget."""
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise Unreachable(f"{method} {path}: {exc}") from exc
            retry_after = response.headers.get("Retry-After", "")
            if response.status_code != 429 or not retry_after.isdigit():
                return response
            wait_s = int(retry_after) + 1
            if self.waited_s + wait_s > RATE_LIMIT_WAIT_BUDGET_S:
                return response
            self.note(f"rate limited on {method} {path}: waiting {wait_s} s as Retry-After asks")
            self.waited_s += wait_s
            time.sleep(wait_s)

    def call(
        self,
        method: str,
        template: str,
        expect: int | set[int],
        *,
        route: str | None = None,
        shape: Spec | None = None,
        check: Callable[[httpx.Response], str | None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response | None:
        """Request `template` (formatted with `params`), check status, headers, shape and `check`.

        Returns the response when its status was expected, else None (the failure is recorded)."""
        params = kwargs.pop("path", {})
        route = route or f"{method} {template}"
        self.exercised.add((method, template))
        response = self.send(method, template.format(**params), **kwargs)
        wanted = {expect} if isinstance(expect, int) else expect
        problems = header_problems(response)
        if response.status_code not in wanted:
            expected = " or ".join(str(code) for code in sorted(wanted))
            problems.insert(0, f"status {response.status_code}, expected {expected}: {snippet(response)}")
            for problem in problems:
                self.fail(route, problem)
            return None
        if shape is not None:
            problems.extend(shape_problems(json_of(response), shape))
        if check is not None and not problems:
            problem = check(response)
            if problem:
                problems.append(problem)
        for problem in problems:
            self.fail(route, problem)
        if not problems:
            self.ok(route, str(response.status_code))
        return response

    def graphql(
        self, name: str, query: str, variables: Spec | None = None, *, error_code: str | None = None
    ) -> Spec | None:
        """Run a GraphQL operation; returns `data`, or None after recording the failure.

        With `error_code`, the operation must fail with that `extensions.code` instead."""
        route = f"POST /graphql {name}"
        self.exercised.add(("POST", "/graphql"))
        response = self.send("POST", "/graphql", json={"query": query, "variables": variables or {}})
        problems = header_problems(response)
        body = json_of(response)
        errors = body.get("errors") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(body, dict):
            problems.insert(0, f"status {response.status_code}, expected 200: {snippet(response)}")
        elif error_code is not None:
            codes = [(error.get("extensions") or {}).get("code") for error in errors or []]
            if error_code not in codes:
                problems.append(f"expected a {error_code} error, got {json.dumps(body)[:300]}")
        elif errors:
            problems.append(f"errors: {json.dumps(errors)[:300]}")
        elif not isinstance(body.get("data"), dict):
            problems.append("no data")
        for problem in problems:
            self.fail(route, problem)
        if problems:
            return None
        self.ok(route, error_code or "data")
        data: Spec = body.get("data") or {}
        return data

    def payload_ok(self, route: str, payload: Spec | None, field: str, shape: Spec) -> Spec | None:
        """A GraphQL mutation payload: no userErrors, and the object under `field` of `shape`."""
        if payload is None:
            return None
        if payload.get("userErrors"):
            problems = [f"userErrors: {payload['userErrors']}"]
        else:
            problems = shape_problems(payload.get(field), shape)
        for problem in problems:
            self.fail(route, problem)
        result: Spec | None = payload.get(field) if not problems else None
        return result


# --- checks of single answers --------------------------------------------------------------------


def json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def snippet(response: httpx.Response) -> str:
    text = response.text.replace("\n", " ")
    return text[:300] + ("…" if len(text) > 300 else "")


def header_problems(response: httpx.Response) -> list[str]:
    problems = [
        f"header {name} is {response.headers.get(name)!r}, expected {value!r}"
        for name, value in SECURITY_HEADERS.items()
        if response.headers.get(name) != value
    ]
    if not response.headers.get("X-Request-Id"):
        problems.append("header X-Request-Id is missing")
    return problems


def shape_problems(body: Any, shape: Spec, where: str = "body") -> list[str]:
    """Each key of `shape` must be in `body`: a type (bool is not an int), a tuple of types, a value,
    or a nested spec."""
    if not isinstance(body, dict):
        return [f"{where} is not a JSON object: {str(body)[:200]}"]
    problems = []
    for key, want in shape.items():
        if key not in body:
            problems.append(f"{where} lacks {key!r}")
            continue
        value = body[key]
        if isinstance(want, dict):
            problems.extend(shape_problems(value, want, f"{where}.{key}"))
        elif isinstance(want, type | tuple):
            types = want if isinstance(want, tuple) else (want,)
            if isinstance(value, bool) and bool not in types:
                problems.append(f"{where}.{key} is a boolean, expected {types}")
            elif not isinstance(value, types):
                problems.append(f"{where}.{key} is {value!r}, expected {types}")
        elif value != want:
            problems.append(f"{where}.{key} is {value!r}, expected {want!r}")
    return problems


def later_iso() -> str:
    return (datetime.now(UTC) + SCHEDULE_AHEAD).isoformat()


def error_shape(code: str) -> Spec:
    return {"error": code, "message": str}


NUMBER = (int, float)
USER = {"id": str, "email": str, "name": str, "locale": str, "currency": str, "meta": dict}
USER["created_at"] = USER["updated_at"] = int


# --- the checks ----------------------------------------------------------------------------------


def check_health(v: Validator) -> None:
    v.call("GET", "/", 200, shape={"ok": True, "service": "levqor-backend", "version": str})
    v.call("GET", "/health", 200, shape={"ok": True, "ts": int})
    v.call(
        "GET",
        "/public/metrics",
        200,
        shape={"uptime_rolling_7d": NUMBER, "jobs_today": int, "audit_coverage": NUMBER, "last_updated": int},
    )
    v.call(
        "GET",
        "/api/v1/ops/health",
        200,
        shape={"ok": True, "ts": int, "db": True, "queue_depth": int, "workers": int},
    )


def check_jobs(v: Validator, documented: set[tuple[str, str]]) -> dict[str, str]:
    """Intake, status, dev completion, errors; returns the ids of the jobs it made."""
    jobs: dict[str, str] = {}
    accepted = v.call(
        "POST",
        "/api/v1/intake",
        202,
        json={"workflow": "echo", "payload": {"validate_levqor": True}, "priority": "high"},
        shape={"job_id": str, "status": "queued"},
    )
    if accepted is not None:
        jobs["echo"] = accepted.json()["job_id"]
        v.call(
            "GET",
            "/api/v1/status/{job_id}",
            200,
            path={"job_id": jobs["echo"]},
            shape={"job_id": jobs["echo"], "status": str, "created_at": int, "result": (dict, type(None))},
        )
    v.call(
        "GET",
        "/api/v1/status/{job_id}",
        404,
        route="GET /api/v1/status/{job_id} (unknown id)",
        path={"job_id": NOBODY},
        shape={"error": "not_found"},
    )
    v.call(
        "POST",
        "/api/v1/intake",
        400,
        route="POST /api/v1/intake (invalid body)",
        json={"workflow": "echo", "payload": "not an object"},
        shape=error_shape("invalid_request"),
    )
    v.call(
        "POST",
        "/api/v1/intake",
        415,
        route="POST /api/v1/intake (not JSON)",
        content=b"workflow=echo",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        shape=error_shape("unsupported_media_type"),
    )
    v.call(
        "GET",
        "/api/v1/intake",
        405,
        route="GET /api/v1/intake (wrong method)",
        shape=error_shape("method_not_allowed"),
    )
    later = later_iso()
    for name in ("dev", "cancel"):
        scheduled = v.call(
            "POST",
            "/api/v1/intake",
            202,
            route=f"POST /api/v1/intake (scheduled, for {name})",
            json={"workflow": "echo", "payload": {"validate_levqor": name}, "run_at": later},
            shape={"job_id": str, "status": "queued"},
        )
        if scheduled is not None:
            jobs[name] = scheduled.json()["job_id"]
    if "dev" in jobs:
        if ("POST", "/api/v1/_dev/complete/{job_id}") in documented:
            completed = v.call(
                "POST",
                "/api/v1/_dev/complete/{job_id}",
                200,
                path={"job_id": jobs["dev"]},
                json={"result": {"validated": True}},
                shape={"ok": True},
            )
            if completed is not None:
                v.call(
                    "GET",
                    "/api/v1/status/{job_id}",
                    200,
                    route="GET /api/v1/status/{job_id} (after dev completion)",
                    path={"job_id": jobs["dev"]},
                    shape={"status": "succeeded", "result": {"validated": True}},
                )
        else:
            v.note("POST /api/v1/_dev/complete/{job_id} is not served (production): not checked")
    return jobs


def check_job_routes(v: Validator, documented: set[tuple[str, str]], jobs: dict[str, str]) -> None:
    """The project's own job routes, each when the server documents it."""
    job_shape = {"id": str, "workflow": str, "status": str, "priority": str, "payload": dict, "attempts": int}
    if ("GET", "/api/v1/jobs") in documented:
        v.call("GET", "/api/v1/jobs", 200, params={"limit": 2}, shape={"jobs": list, "next_cursor": object})
        v.call(
            "GET",
            "/api/v1/jobs",
            200,
            route="GET /api/v1/jobs (filtered by text and creation time)",
            params={"text": "validate_levqor", "created_after": "2000-01-01T00:00:00Z", "limit": 2},
            shape={"jobs": list, "next_cursor": object},
        )
    if ("GET", "/api/v1/overview") in documented:
        v.call(
            "GET",
            "/api/v1/overview",
            200,
            params={"window_s": 600, "buckets": 10},
            shape={
                "window_s": 600,
                "counts": dict,
                "queue_depth": int,
                "scheduled": int,
                "buckets": list,
                "workers": list,
            },
            check=lambda r: None if len(json_of(r)["buckets"]) == 10 else "not 10 buckets",
        )
    if ("GET", "/api/v1/jobs/{job_id}") in documented and "echo" in jobs:
        v.call(
            "GET",
            "/api/v1/jobs/{job_id}",
            200,
            path={"job_id": jobs["echo"]},
            shape={**job_shape, "id": jobs["echo"], "events": list},
        )
    if ("GET", "/api/v1/workflows") in documented:
        v.call(
            "GET",
            "/api/v1/workflows",
            200,
            check=lambda r: None if "echo" in json.dumps(json_of(r)) else "the echo workflow is not listed",
        )
    stream = ("GET", "/api/v1/jobs/{job_id}/events/stream")
    if stream in documented and "dev" in jobs:
        # A finished job's stream sends what happened to it and ends.
        v.call(
            "GET",
            stream[1],
            200,
            path={"job_id": jobs["dev"]},
            check=lambda r: (
                None
                if r.headers.get("content-type", "").startswith("text/event-stream") and "succeeded" in r.text
                else f"not an event stream ending in succeeded: {snippet(r)}"
            ),
        )
    resend = ("POST", "/api/v1/jobs/{job_id}/deliveries/{delivery_id}/resend")
    if resend in documented and "echo" in jobs:
        # Without sending anything anywhere: a delivery the job does not have is not found.
        v.call(
            "POST",
            resend[1],
            404,
            route=f"{resend[0]} {resend[1]} (unknown delivery)",
            path={"job_id": jobs["echo"], "delivery_id": "00000000-0000-4000-8000-000000000000"},
            shape=error_shape("not_found"),
        )
    target = jobs.get("cancel")
    if target is None:
        return
    if ("POST", "/api/v1/jobs/{job_id}/cancel") in documented:
        v.call(
            "POST",
            "/api/v1/jobs/{job_id}/cancel",
            200,
            path={"job_id": target},
            shape={"status": "cancelled"},
        )
        if ("POST", "/api/v1/jobs/{job_id}/retry") in documented:
            v.call(
                "POST",
                "/api/v1/jobs/{job_id}/retry",
                200,
                path={"job_id": target},
                shape={"status": "queued"},
            )
    if (
        "dev" in jobs
        and ("POST", "/api/v1/jobs/{job_id}/cancel") in documented
        and (("POST", "/api/v1/_dev/complete/{job_id}") in documented)
    ):
        v.call(
            "POST",
            "/api/v1/jobs/{job_id}/cancel",
            409,
            route="POST /api/v1/jobs/{job_id}/cancel (finished job)",
            path={"job_id": jobs["dev"]},
            shape=error_shape("conflict"),
        )
    # The worker API, without taking work from real workers: a claim for a workflow that does not
    # exist is refused, and the fenced verbs from a worker that holds no lease get 409.
    if ("POST", "/api/v1/workers/claim") in documented:
        v.call(
            "POST",
            "/api/v1/workers/claim",
            400,
            route="POST /api/v1/workers/claim (unknown workflow)",
            json={"worker_id": WORKER_ID, "workflows": ["validate_levqor.none"], "max_jobs": 1, "wait_s": 0},
            shape=error_shape("invalid_request"),
        )
    fenced = {
        "heartbeat": {"worker_id": WORKER_ID, "attempt": 1},
        "complete": {"worker_id": WORKER_ID, "attempt": 1, "result": {}},
        "fail": {"worker_id": WORKER_ID, "attempt": 1, "error": {"message": "validate_levqor"}},
    }
    for verb, body in fenced.items():
        if ("POST", f"/api/v1/jobs/{{job_id}}/{verb}") in documented:
            v.call(
                "POST",
                f"/api/v1/jobs/{{job_id}}/{verb}",
                409,
                path={"job_id": target},
                json=body,
                shape=error_shape("conflict"),
            )


def check_users(v: Validator) -> str | None:
    email = f"validate_levqor+{uuid.uuid4().hex[:12]}@example.com"
    created = v.call(
        "POST",
        "/api/v1/users/upsert",
        201,
        json={"email": email, "name": "Validation", "locale": "en-GB", "currency": "GBP", "meta": {}},
        shape={"created": True, "user": {**USER, "email": email}},
    )
    v.call(
        "POST",
        "/api/v1/users/upsert",
        200,
        route="POST /api/v1/users/upsert (again)",
        json={"email": email.upper(), "name": "Validation Again"},
        shape={"updated": True, "user": {**USER, "email": email, "name": "Validation Again"}},
    )
    v.call("GET", "/api/v1/users", 200, params={"email": email}, shape={**USER, "email": email})
    v.call(
        "GET",
        "/api/v1/users",
        404,
        route="GET /api/v1/users (unknown email)",
        params={"email": f"nobody.{uuid.uuid4().hex}@example.com"},
        shape={"error": "not_found"},
    )
    v.call(
        "GET",
        "/api/v1/users/{user_id}",
        404,
        route="GET /api/v1/users/{user_id} (unknown id)",
        path={"user_id": NOBODY},
        shape={"error": "not_found"},
    )
    if created is None:
        return None
    user_id: str = created.json()["user"]["id"]
    v.call("GET", "/api/v1/users/{user_id}", 200, path={"user_id": user_id}, shape={**USER, "id": user_id})
    v.call(
        "PATCH",
        "/api/v1/users/{user_id}",
        200,
        path={"user_id": user_id},
        json={"currency": "EUR", "meta": {"validated": True}},
        shape={"updated": True, "user": {**USER, "currency": "EUR", "meta": {"validated": True}}},
    )
    v.call(
        "PATCH",
        "/api/v1/users/{user_id}",
        400,
        route="PATCH /api/v1/users/{user_id} (bad currency)",
        path={"user_id": user_id},
        json={"currency": "XXX"},
        shape=error_shape("invalid_request"),
    )
    return user_id


def check_keys(v: Validator, documented: set[tuple[str, str]]) -> None:
    if ("GET", "/api/v1/keys") in documented:
        v.call("GET", "/api/v1/keys", 200, shape={"keys": list})
    creatable = ("POST", "/api/v1/keys") in documented and ("DELETE", "/api/v1/keys/{key_id}") in documented
    if not creatable:
        return
    rotate = ("POST", "/api/v1/keys/{key_id}/webhook-secret")
    if not v.has_key:
        # On a server without keys, a new key would end its development mode for its owner.
        v.note(
            "POST /api/v1/keys, its webhook secret's rotation, its limits, its budget and DELETE need "
            "API_KEY: not checked"
        )
        v.exercised.update(
            {
                ("POST", "/api/v1/keys"),
                ("DELETE", "/api/v1/keys/{key_id}"),
                ("PATCH", "/api/v1/keys/{key_id}"),
                rotate,
                ("PUT", "/api/v1/budgets/keys/{key_id}"),
                ("DELETE", "/api/v1/budgets/keys/{key_id}"),
            }
        )
        return
    created = v.call(
        "POST",
        "/api/v1/keys",
        201,
        json={"name": "validate_levqor", "scopes": ["jobs:read"]},
        shape={"key": {"id": str, "name": "validate_levqor"}, "secret": str},
        check=lambda r: None if r.json()["secret"].startswith("lvq_") else "the secret lacks the lvq_ prefix",
    )
    if created is not None and rotate in documented:
        v.call(
            "POST",
            rotate[1],
            200,
            path={"key_id": created.json()["key"]["id"]},
            json={"overlap_s": 0},
            shape={"key": {"id": str}, "webhook_secret": str},
            check=lambda r: (
                None
                if r.json()["webhook_secret"].startswith("whsec_")
                else "the webhook secret lacks the whsec_ prefix"
            ),
        )
    update = ("PATCH", "/api/v1/keys/{key_id}")
    if created is not None and update in documented:
        key_id = created.json()["key"]["id"]
        v.call(
            "PATCH",
            update[1],
            200,
            path={"key_id": key_id},
            json={"max_running": 2, "rate_limit": 120},
            shape={"key": {"id": key_id, "max_running": 2, "rate_limit": 120}},
        )
        v.call(
            "PATCH",
            update[1],
            400,
            route="PATCH /api/v1/keys/{key_id} (a limit of 0)",
            path={"key_id": key_id},
            json={"max_running": 0},
            shape=error_shape("invalid_request"),
        )
    if created is not None:
        check_budget(v, documented, "key", created.json()["key"]["id"])
        v.call(
            "DELETE",
            "/api/v1/keys/{key_id}",
            200,
            path={"key_id": created.json()["key"]["id"]},
            shape={"key": {"active": False}},
        )


BUDGET = {
    "id": str,
    "subject": str,
    "subject_id": str,
    "period": "month",
    "limit_micros": 1_000_000,
    "spent_micros": int,
    "reserved_micros": int,
    "remaining_micros": int,
}


def check_budget(v: Validator, documented: set[tuple[str, str]], subject: str, subject_id: str) -> None:
    """Set a budget on a subject the script made, read it back, remove it."""
    template = f"/api/v1/budgets/{subject}s/{{{subject}_id}}"
    if ("PUT", template) not in documented or ("DELETE", template) not in documented:
        return
    path = {f"{subject}_id": subject_id}
    shape = {**BUDGET, "subject": subject, "subject_id": subject_id}
    v.call(
        "PUT",
        template,
        200,
        path=path,
        json={"period": "month", "limit_micros": 1_000_000, "soft_limit_micros": 800_000},
        shape={**shape, "soft_limit_micros": 800_000},
    )
    v.call(
        "PUT",
        template,
        400,
        route=f"PUT {template} (soft limit over the limit)",
        path=path,
        json={"period": "month", "limit_micros": 1, "soft_limit_micros": 2},
        shape=error_shape("invalid_request"),
    )
    v.call("DELETE", template, 200, path=path, shape=shape)
    v.call(
        "DELETE",
        template,
        404,
        route=f"DELETE {template} (no budget)",
        path=path,
        shape=error_shape("not_found"),
    )


def check_schedules(v: Validator, documented: set[tuple[str, str]]) -> None:
    """Create a schedule (paused, so nothing fires on its own), read, change, run and remove it; a
    second of its name is a conflict, and the listing pages."""
    one = "/api/v1/schedules/{schedule_id}"
    routes = {
        ("POST", "/api/v1/schedules"),
        ("GET", "/api/v1/schedules"),
        ("GET", one),
        ("PATCH", one),
        ("DELETE", one),
        ("POST", f"{one}/run"),
    }
    if not routes <= documented:
        return
    job = {"workflow": "echo", "payload": {"validated": True}}
    name = f"validate_levqor-{uuid.uuid4().hex[:12]}"  # names are unique; one left by a failed run stays
    body = {"name": name, "cron": "0 3 * * *", "timezone": "UTC", "job": job, "enabled": False}
    created = v.call(
        "POST",
        "/api/v1/schedules",
        201,
        json=body,
        shape={"schedule": {"id": str, "name": name, "enabled": False, "next_fire_times": list}},
    )
    if created is not None:
        v.call(
            "POST",
            "/api/v1/schedules",
            409,
            route="POST /api/v1/schedules (name taken)",
            json=body,
            shape=error_shape("conflict"),
        )
    v.call(
        "POST",
        "/api/v1/schedules",
        400,
        route="POST /api/v1/schedules (bad cron)",
        json={"name": "validate_levqor", "cron": "61 * * * *", "job": job},
        shape=error_shape("invalid_request"),
    )
    v.call(
        "GET", "/api/v1/schedules", 200, params={"limit": 1}, shape={"schedules": list, "next_cursor": object}
    )
    v.call(
        "GET",
        "/api/v1/schedules",
        400,
        route="GET /api/v1/schedules (bad cursor)",
        params={"cursor": "not-a-cursor"},
        shape=error_shape("invalid_request"),
    )
    if created is None:
        return
    path = {"schedule_id": created.json()["schedule"]["id"]}
    v.call("GET", one, 200, path=path, shape={"schedule": {"id": str, "fires": list}})
    v.call(
        "PATCH",
        one,
        200,
        path=path,
        json={"every_s": 86400},
        shape={"schedule": {"every_s": 86400, "cron": None}},
    )
    v.call(
        "POST",
        f"{one}/run",
        202,
        path=path,
        shape={"job_id": str, "fire": {"kind": "manual"}},
    )
    v.call("DELETE", one, 200, path=path, shape={"schedule": {"id": str}})
    v.call("GET", one, 404, route=f"GET {one} (removed)", path=path, shape=error_shape("not_found"))


def check_runs(v: Validator, documented: set[tuple[str, str]]) -> None:
    """Submit a run whose second step waits for its first, read it, cancel it, and see a cycle
    refused. The first step is due in an hour, so no worker can finish the run before the cancel."""
    one = "/api/v1/runs/{run_id}"
    if not {("POST", "/api/v1/runs"), ("GET", one), ("POST", f"{one}/cancel")} <= documented:
        return
    steps = [
        {"key": "first", "workflow": "echo", "payload": {"validated": True}, "run_at": later_iso()},
        {"key": "second", "workflow": "echo", "payload": {}, "depends_on": ["first"]},
    ]
    submitted = v.call(
        "POST",
        "/api/v1/runs",
        202,
        json={"steps": steps},
        shape={"run_id": str, "status": "queued", "jobs": {"first": str, "second": str}},
    )
    v.call(
        "POST",
        "/api/v1/runs",
        400,
        route="POST /api/v1/runs (cycle)",
        json={"steps": [{**steps[0], "depends_on": ["second"]}, steps[1]]},
        shape=error_shape("invalid_request"),
    )
    if submitted is None:
        return
    path = {"run_id": submitted.json()["run_id"]}
    v.call(
        "GET", one, 200, path=path, shape={"run_id": str, "status": "queued", "steps": list, "events": list}
    )
    v.call("POST", f"{one}/cancel", 200, path=path, shape={"run_id": str, "cancel_requested": True})
    v.call(
        "POST",
        f"{one}/cancel",
        409,
        route=f"POST {one}/cancel (again)",
        path=path,
        shape=error_shape("conflict"),
    )
    v.call(
        "GET",
        one,
        404,
        route=f"GET {one} (unknown)",
        path={"run_id": "00000000-0000-0000-0000-000000000000"},
        shape=error_shape("not_found"),
    )


def check_platform(v: Validator) -> None:
    v.call("GET", "/openapi.json", 200, shape={"openapi": str, "paths": dict})
    v.call(
        "GET",
        "/metrics",
        200,
        check=lambda r: (
            None
            if "levqor_http_requests_total" in r.text and "levqor_jobs{" in r.text
            else "no levqor_http_requests_total or levqor_jobs series"
        ),
    )
    v.call(
        "GET",
        "/validate-levqor-no-such-route",
        404,
        route="GET (unknown path)",
        shape=error_shape("not_found"),
    )
    for pretty, file in PAGES.items():
        for path in (pretty, file):
            v.call("GET", path, 200, check=page_problem)
    v.call(
        "GET",
        "/public/styles.css",
        200,
        check=lambda r: (
            None
            if "text/css" in r.headers.get("content-type", "")
            else f"content type {r.headers.get('content-type')}"
        ),
    )
    preflight = {
        "Origin": v.origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key, idempotency-key",
    }
    v.call(
        "OPTIONS",
        "/api/v1/intake",
        200,
        route=f"OPTIONS /api/v1/intake (preflight from {v.origin})",
        headers=preflight,
        check=lambda r: cors_problem(r, v.origin),
    )
    v.call(
        "OPTIONS",
        "/api/v1/intake",
        {400, 403},
        route="OPTIONS /api/v1/intake (preflight, foreign origin)",
        headers={**preflight, "Origin": "https://validate-levqor.invalid"},
        check=lambda r: (
            "a foreign origin is allowed" if r.headers.get("access-control-allow-origin") else None
        ),
    )


def page_problem(response: httpx.Response) -> str | None:
    if not response.headers.get("content-type", "").startswith("text/html"):
        return f"content type {response.headers.get('content-type')}"
    if not response.headers.get("Content-Security-Policy"):
        return "no Content-Security-Policy"
    if "<!DOCTYPE html>" not in response.text[:100] or "Levqor" not in response.text:
        return "not the Levqor page"
    return None


def cors_problem(response: httpx.Response, origin: str) -> str | None:
    headers = response.headers
    if headers.get("access-control-allow-origin") != origin:
        return f"allow-origin is {headers.get('access-control-allow-origin')!r}"
    methods = {m.strip() for m in headers.get("access-control-allow-methods", "").split(",")}
    allowed = {h.strip().lower() for h in headers.get("access-control-allow-headers", "").split(",")}
    missing = {"GET", "POST", "OPTIONS", "PATCH", "PUT", "DELETE"} - methods
    missing |= {"content-type", "authorization", "x-api-key", "idempotency-key"} - allowed
    return f"not allowed: {sorted(missing)}" if missing else None


JOB_FIELDS = "id workflow status priority payload result error attempts createdAt"
USER_FIELDS = "id email name locale currency meta createdAt updatedAt"


def check_graphql(v: Validator, jobs: dict[str, str]) -> None:
    schema = v.graphql(
        "introspection", "{ __schema { queryType { fields { name } } mutationType { fields { name } } } }"
    )
    fields: set[str] = set()
    if schema is not None:
        for root in ("queryType", "mutationType"):
            fields |= {field["name"] for field in (schema["__schema"].get(root) or {}).get("fields", [])}
    data = v.graphql(
        "health publicMetrics",
        "{ health { ok ts } publicMetrics { uptimeRolling7d jobsToday auditCoverage lastUpdated } }",
    )
    if data is not None:
        for problem in shape_problems(data.get("health"), {"ok": True, "ts": int}, "health"):
            v.fail("POST /graphql health", problem)
    get = v.send("GET", "/graphql", params={"query": "{ health { ok } }"})
    if get.status_code == 200 and (json_of(get) or {}).get("data") == {"health": {"ok": True}}:
        v.ok("GET /graphql query", "200")
    else:
        v.fail("GET /graphql query", f"status {get.status_code}: {snippet(get)}")
    mutation_over_get = v.send("GET", "/graphql", params={"query": "mutation { __typename }"})
    if mutation_over_get.status_code == 405:
        v.ok("GET /graphql mutation", "405")
    else:
        v.fail("GET /graphql mutation", f"status {mutation_over_get.status_code}, expected 405")
    v.exercised.add(("GET", "/graphql"))

    submitted = v.graphql(
        "submitJob",
        f"mutation($input: SubmitJobInput!) {{ submitJob(input: $input) {{ job {{ {JOB_FIELDS} }} "
        "userErrors { field message code } } }",
        # Scheduled ahead, so that no worker finishes it before completeJob below.
        {"input": {"workflow": "echo", "payload": {"validate_levqor": "graphql"}, "runAt": later_iso()}},
    )
    job = v.payload_ok(
        "POST /graphql submitJob",
        submitted and submitted.get("submitJob"),
        "job",
        {"id": str, "status": "QUEUED", "workflow": "echo"},
    )
    if job is not None:
        found = v.graphql(
            "job",
            f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} events {{ toStatus }} }} }}",
            {"id": job["id"]},
        )
        for problem in shape_problems(found and found.get("job"), {"id": job["id"], "events": list}, "job"):
            v.fail("POST /graphql job", problem)
    if "echo" in jobs:
        same = v.graphql(
            "job (REST parity)", "query($id: ID!) { job(id: $id) { id status } }", {"id": jobs["echo"]}
        )
        rest = v.send("GET", f"/api/v1/status/{jobs['echo']}")
        if same and same.get("job") and rest.status_code == 200:
            graphql_status = same["job"]["status"].lower()
            if graphql_status not in {rest.json()["status"], "running", "succeeded"}:
                v.fail("POST /graphql job (REST parity)", f"{graphql_status} vs REST {rest.json()['status']}")
    v.graphql(
        "job (unknown id)", "query($id: ID!) { job(id: $id) { id } }", {"id": NOBODY}, error_code="NOT_FOUND"
    )
    v.graphql(
        "jobs",
        f"{{ jobs(first: 2) {{ edges {{ cursor node {{ {JOB_FIELDS} }} }} pageInfo {{ hasNextPage }} }} }}",
    )
    if "schedules" in fields:
        v.graphql(
            "schedules",
            "{ schedules(first: 2) { edges { cursor node { id name nextFireTimes } } "
            "pageInfo { hasNextPage endCursor } } }",
        )

    email = f"validate_levqor+{uuid.uuid4().hex[:12]}@example.com"
    upserted = v.graphql(
        "upsertUser",
        f"mutation($input: UpsertUserInput!) {{ upsertUser(input: $input) {{ user {{ {USER_FIELDS} }} "
        "userErrors { field message code } } }",
        {"input": {"email": email, "name": "Validation GraphQL", "currency": "USD"}},
    )
    user = v.payload_ok(
        "POST /graphql upsertUser",
        upserted and upserted.get("upsertUser"),
        "user",
        {"id": str, "email": email, "currency": "USD"},
    )
    if user is not None:
        v.graphql("user", f"query($id: ID!) {{ user(id: $id) {{ {USER_FIELDS} }} }}", {"id": user["id"]})
        v.graphql(
            "userByEmail",
            f"query($e: String!) {{ userByEmail(email: $e) {{ {USER_FIELDS} }} }}",
            {"e": email.upper()},
        )
        updated = v.graphql(
            "updateUser",
            "mutation($id: ID!, $input: UpdateUserInput!) { updateUser(id: $id, input: $input) "
            f"{{ user {{ {USER_FIELDS} }} userErrors {{ field message code }} }} }}",
            {"id": user["id"], "input": {"name": "Validation GraphQL Renamed"}},
        )
        v.payload_ok(
            "POST /graphql updateUser",
            updated and updated.get("updateUser"),
            "user",
            {"name": "Validation GraphQL Renamed"},
        )
    if job is not None and "completeJob" in fields:
        completed = v.graphql(
            "completeJob",
            "mutation($id: ID!, $result: JSON) { completeJob(id: $id, result: $result) "
            "{ job { id status result } userErrors { field message code } } }",
            {"id": job["id"], "result": {"validated": True}},
        )
        v.payload_ok(
            "POST /graphql completeJob",
            completed and completed.get("completeJob"),
            "job",
            {"status": "SUCCEEDED"},
        )
    if "workflows" in fields:
        v.graphql("workflows", "{ workflows { name } }")
    if "overview" in fields:
        v.graphql("overview", "{ overview(windowS: 600) { counts { queued } queueDepth buckets { start } } }")


def check_uncovered(v: Validator, documented: set[tuple[str, str]]) -> None:
    """A documented route without a check of its own: a parameterless GET is still asked for a 200;
    anything else is named, so that the script is extended with the API."""
    for method, template in sorted(documented - v.exercised):
        if method == "GET" and "{" not in template:
            v.call(method, template, 200, check=lambda r: None if json_of(r) is not None else "not JSON")
        else:
            v.note(f"⚠ not checked: {method} {template} (documented, but this script has no check for it)")


def documented_routes(v: Validator) -> set[tuple[str, str]]:
    response = v.send("GET", "/openapi.json")
    body = json_of(response) if response.status_code == 200 else None
    paths = body.get("paths") if isinstance(body, dict) else None
    if not isinstance(paths, dict):
        return set()
    return {(method.upper(), path) for path, operations in paths.items() for method in operations}


def main() -> int:
    base_url = os.environ.get("BASE_URL", "http://localhost:5000").rstrip("/")
    v = Validator(
        base_url, os.environ.get("API_KEY") or None, os.environ.get("CORS_ORIGIN", "https://levqor.ai")
    )
    print(f"Validating {base_url} ({'with' if v.has_key else 'without'} an API key)", flush=True)
    try:
        documented = documented_routes(v)
        check_health(v)
        jobs = check_jobs(v, documented)
        check_job_routes(v, documented, jobs)
        user_id = check_users(v)
        if user_id is not None:
            check_budget(v, documented, "user", user_id)
        check_keys(v, documented)
        check_schedules(v, documented)
        check_runs(v, documented)
        check_platform(v)
        check_graphql(v, jobs)
        check_uncovered(v, documented)
    except Unreachable as exc:
        print(f"🔴 Levqor backend unreachable — {exc}", flush=True)
        return 2
    finally:
        v.http.close()
    if v.failed:
        print(f"🔴 {sum(map(len, v.failed.values()))} checks failed on: {', '.join(v.failed)}", flush=True)
        return 1
    print(f"{v.passed} checks passed", flush=True)
    print(GREEN, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
