"""The floor under Levqor's status GET that bench/http.py measures: a measuring stick, not a server
anyone should run.

`GET /api/v1/status/{job_id}` must, whatever the code looks like: give the request an id, charge the
rate limit, check the API key, read the job off the event loop, encode its body, set the contract's
headers, count the request in the metrics and write the access line. This app does exactly that, with
Levqor's own parts (the in-process rate-limit windows, the status read and its batcher, the metrics,
the JSON log formatter), straight on ASGI (no Starlette, no pydantic) and as lean as Python allows.
Between the bare Starlette route (bench/bare_app.py) and Levqor, it splits the gap: what the duties
cost, and what Levqor spends beyond them.

It serves only what bench/http.py sends: no CORS, no caller's X-Request-Id, no `Authorization: Bearer`
or managed keys, no HEAD; everything else is 404. A request without a key is served, as Levqor serves
its public status route; a request with a wrong one gets 401.

Run by bench/http.py as `uvicorn bench.floor_app:app` from the repository root, configured by the
environment: `SQLITE_PATH` (the SQLite file of the Levqor server of the same run, which holds the jobs;
WAL lets both read it), `FLOOR_LOG` (the file of its access log) and `API_KEYS` (the one static key).
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import os
import time
import uuid
from functools import partial
from typing import IO

from starlette.types import Receive, Scope, Send

from levqor.db.batching import MAX_IN_LIST_BATCH, Batcher
from levqor.db.engine import Database
from levqor.http.app import GC_YOUNG_THRESHOLD
from levqor.http.errors import error_body, json_bytes
from levqor.http.gateway import new_request_id
from levqor.http.metrics import UNMATCHED_ROUTE, HttpMetrics
from levqor.http.middleware import SECURITY_HEADERS_RAW
from levqor.http.ratelimit_counters import LocalKey, LocalWindows, Verdict
from levqor.logs import ACCESS_LOGGER, JsonFormatter, JsonLinesHandler
from levqor.resolvers.auth import static_principal
from levqor.resolvers.job_reads import JobStatusView, read_job_statuses
from levqor.rest.shapes import unix_s

STATUS_PREFIX = "/api/v1/status/"
STATUS_TEMPLATE = STATUS_PREFIX + "{job_id}"
# As bench/http.py sets RATE_BURST and RATE_GLOBAL: the limiter stays on the path but never refuses.
RATE_LIMIT = 1_000_000_000
RATE_WINDOW_S = 60
UNKNOWN_CLIENT = "unknown"
# The keys Levqor's limiter gives the two limits (levqor/http/ratelimit.py, `_hit_local`).
_WHOLE_SERVICE: LocalKey = ("all", "all", RATE_LIMIT, RATE_WINDOW_S)

# `json_bytes`'s encoding (compact, UTF-8, as Levqor encodes its bodies), with the encoder built once.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_JSON = (b"content-type", b"application/json")
_VARY = (b"vary", b"Origin")  # no `Origin`, no CORS: caches must still keep browsers' answers apart
_CHALLENGE = (b"www-authenticate", b'Bearer realm="levqor"')


def _setting(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise RuntimeError(f"{name} is not set (bench/http.py sets it)")
    return value


class Serving:
    """What the floor holds while it serves: built in the lifespan's startup, closed at shutdown."""

    def __init__(self, sqlite_path: str, log_path: str, api_key: str) -> None:
        self.db = Database(f"sqlite:///{sqlite_path}")
        # A read fails for all its ids or none: nothing to retry alone (as Levqor's status batcher).
        self.reads: Batcher[uuid.UUID, JobStatusView | None] = Batcher(
            partial(read_job_statuses, self.db), max_batch=MAX_IN_LIST_BATCH, retry_alone=lambda _exc: False
        )
        self.windows = LocalWindows()
        self.key_digest = hashlib.sha256(api_key.encode()).digest()
        self.key_id = static_principal(api_key).key_id
        self.metrics = HttpMetrics(None)
        self.formatter = JsonFormatter()
        # Levqor's own access-log handler: the lines of one loop turn go out in one write at its end.
        self.log_file: IO[str] = open(log_path, "a", encoding="utf-8")  # noqa: SIM115  # closed in stop
        self.log = JsonLinesHandler()
        self.log.setStream(self.log_file)

    async def start(self) -> None:
        await self.reads.start("floor-status-reads")

    async def stop(self) -> None:
        await self.reads.stop()
        self.log.flush()
        self.log_file.close()
        self.db.dispose()

    async def http(self, scope: Scope, send: Send) -> None:
        started = time.perf_counter()
        request_id = new_request_id()
        user_agent: str | None = None
        presented: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                if user_agent is None:
                    user_agent = value.decode("latin-1")
            elif name == b"x-api-key" and presented is None:
                presented = value
        client = scope.get("client")
        client_ip = client[0] if client else UNKNOWN_CLIENT
        method: str = scope["method"]
        path: str = scope["path"]
        raw_id = path[len(STATUS_PREFIX) :] if method == "GET" and path.startswith(STATUS_PREFIX) else ""
        key_id: str | None = None
        if not raw_id or "/" in raw_id:
            route = UNMATCHED_ROUTE
            status, body = 404, json_bytes(error_body("not_found", "Not Found", request_id=request_id))
            extra: list[tuple[bytes, bytes]] = []
        else:
            route = STATUS_TEMPLATE
            verdict = self.charge(client_ip)
            extra = verdict.raw_headers()
            if not verdict.allowed:
                message = f"rate limit reached; retry in {max(1, verdict.reset_s)} s"
                status, body = 429, json_bytes(error_body("rate_limited", message, request_id=request_id))
            else:
                if presented is not None and not hmac.compare_digest(
                    hashlib.sha256(presented.strip()).digest(), self.key_digest
                ):
                    status = 401
                    body = json_bytes(error_body("unauthorized", "invalid API key", request_id=request_id))
                    extra.insert(0, _CHALLENGE)
                else:
                    key_id = None if presented is None else self.key_id
                    status, body = await self.status(raw_id, request_id)
        headers = [
            (b"content-length", b"%d" % len(body)),
            _JSON,
            *extra,
            _VARY,
            *SECURITY_HEADERS_RAW,
            (b"x-request-id", request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        # Counted before the last byte leaves, as Levqor does: a client that has its answer finds it counted.
        self.metrics.observe(method, route, status, time.perf_counter() - started)
        await send({"type": "http.response.body", "body": body})
        fields = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "client_ip": client_ip,
            "user_agent": user_agent,
            "request_id": request_id,
            "key_id": key_id,
        }
        self.log.add_line(self.formatter.line(time.time(), "INFO", ACCESS_LOGGER, "request", fields))

    def charge(self, client_ip: str) -> Verdict:
        """The client's limit, then the whole service's (only if the client's passed), as Levqor
        charges them; the tighter verdict gives the headers."""
        now = time.time()
        per_client: LocalKey = ("ip", client_ip, RATE_LIMIT, RATE_WINDOW_S)
        verdict = self.windows.charge(per_client, RATE_LIMIT, RATE_WINDOW_S, 1, now)
        if not verdict.allowed:
            return verdict
        whole = self.windows.charge(_WHOLE_SERVICE, RATE_LIMIT, RATE_WINDOW_S, 1, now)
        if not whole.allowed or (whole.remaining, whole.limit or 0) < (verdict.remaining, verdict.limit or 0):
            return whole
        return verdict

    async def status(self, raw_id: str, request_id: str) -> tuple[int, bytes]:
        try:
            key = uuid.UUID(raw_id)
        except ValueError:
            message = f"no job with id {raw_id[:64]!r}"
            return 404, json_bytes(error_body("not_found", message, request_id=request_id))
        job = await self.reads.call(key)
        if job is None:
            return 404, json_bytes(error_body("not_found", f"no job with id '{key}'", request_id=request_id))
        body = {
            "job_id": str(job.id),
            "status": job.status,
            "created_at": int(job.created_at.timestamp()),
            "result": job.result,
            "error": job.error,
            "attempts": job.attempts,
            "started_at": unix_s(job.started_at),
            "finished_at": unix_s(job.finished_at),
        }
        return 200, _ENCODER.encode(body).encode()


class Floor:
    """The ASGI app: HTTP requests once the lifespan has started it, and the lifespan."""

    def __init__(self) -> None:
        self.serving: Serving | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            serving = self.serving
            if serving is None:
                raise RuntimeError("the floor serves only once its lifespan has started")
            await serving.http(scope, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    serving = Serving(_setting("SQLITE_PATH"), _setting("FLOOR_LOG"), _setting("API_KEYS"))
                    await serving.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                self.serving = serving
                # As Levqor's lifespan does: what start-up built is never garbage, so the collections
                # that requests trigger stop walking it, and young collections come less often.
                gc.freeze()
                thresholds = gc.get_threshold()
                gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                gc.set_threshold(*thresholds)
                gc.unfreeze()
                if self.serving is not None:
                    await self.serving.stop()
                    self.serving = None
                await send({"type": "lifespan.shutdown.complete"})
                return


app = Floor()
