"""REST adapters for jobs: parse HTTP, call the resolver, shape the seed's JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from levqor.http.context import context_for
from levqor.resolvers import job_control, job_updates, jobs
from levqor.resolvers.context import Context, Scope
from levqor.rest.body import read_json
from levqor.rest.openapi import SSE_MEDIA_TYPE
from levqor.rest.routing import ApiPath, ApiRoute, HeaderParam, Operation, api_paths, json_response
from levqor.rest.shapes import (
    BudgetExceededBody,
    ErrorBody,
    JobAccepted,
    JobBody,
    JobDetailBody,
    JobList,
    JobStatusBody,
    JobUpdateBody,
    OkBody,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_PARAM = HeaderParam(
    IDEMPOTENCY_HEADER, {"type": "string", "pattern": jobs.IDEMPOTENCY_KEY_PATTERN}
)
STATUS_PATH = "/api/v1/status/{job_id}"
LAST_EVENT_ID_PARAM = HeaderParam(
    job_updates.LAST_EVENT_ID, {"type": "string", "pattern": job_updates.LAST_EVENT_ID_PATTERN}
)
SSE_PING_S = 15  # a comment line this often keeps proxies from closing a quiet stream


async def intake(request: Request) -> Response:
    ctx = context_for(request)
    submitted = await jobs.submit_job(
        ctx, await read_json(request), idempotency_key=request.headers.get(IDEMPOTENCY_HEADER)
    )
    # 202 names where to follow the job (RFC 9110 §15.3.3), a replay too.
    headers = {"Location": STATUS_PATH.format(job_id=submitted.job.id)}
    if not submitted.created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(JobAccepted.from_row(submitted.job), 202, headers)


async def status(request: Request) -> Response:
    job = await jobs.get_job_status(context_for(request), request.path_params["job_id"])
    return json_response(JobStatusBody.from_row(job))


async def dev_complete(request: Request) -> Response:
    ctx = context_for(request)
    await jobs.dev_complete_job(
        ctx, request.path_params["job_id"], await read_json(request, allow_empty=True)
    )
    return json_response(OkBody(ok=True))


async def list_jobs(request: Request) -> Response:
    page = await jobs.list_jobs(context_for(request), dict(request.query_params))
    return json_response(
        JobList(jobs=[JobBody.from_row(job) for job in page.jobs], next_cursor=page.next_cursor)
    )


async def job_detail(request: Request) -> Response:
    detail = await jobs.get_job_detail(context_for(request), request.path_params["job_id"])
    return json_response(JobDetailBody.from_rows(detail.job, detail.events, detail.deliveries))


async def cancel(request: Request) -> Response:
    job = await job_control.cancel_job(context_for(request), request.path_params["job_id"])
    return json_response(JobBody.from_row(job))


async def retry(request: Request) -> Response:
    job = await job_control.retry_job(context_for(request), request.path_params["job_id"])
    return json_response(JobBody.from_row(job))


async def event_stream(request: Request) -> Response:
    return await job_update_stream(
        context_for(request), request.path_params["job_id"], request.headers.get(job_updates.LAST_EVENT_ID)
    )


async def job_update_stream(ctx: Context, job_id: str, last_event_id: str | None) -> Response:
    """A job's updates as server-sent events after `last_event_id` (this route's and the dashboard's)."""
    after = job_updates.parse_event_id(last_event_id)
    stream = await job_updates.open_job_updates(ctx, job_id, after_event_id=after)
    if stream.finished:
        stream.close()
        # The job has ended and the client has every event: 204 tells an EventSource to stop
        # reconnecting (HTML, "Server-sent events", §9.2.3).
        return Response(status_code=204)
    # The task closes the stream however the response ends, also when no event was ever asked
    # for (HEAD); the generator closes it as soon as the client goes.
    return EventSourceResponse(_events(stream), ping=SSE_PING_S, background=BackgroundTask(stream.aclose))


async def _events(stream: job_updates.JobUpdates) -> AsyncIterator[ServerSentEvent]:
    async with stream:
        async for update in stream:
            # No `event:` name, so an EventSource's `onmessage` gets every update.
            yield ServerSentEvent(
                data=JobUpdateBody.from_update(update).model_dump_json(), id=str(update.event.id)
            )


_ERRORS: dict[int, type[ErrorBody] | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 429: ErrorBody}


def routes(*, dev_routes: bool) -> list[ApiPath]:
    found = {404: ErrorBody}
    table = [
        ApiRoute(
            "POST",
            "/api/v1/intake",
            intake,
            Operation(
                "Submit a job",
                {
                    202: JobAccepted,
                    402: BudgetExceededBody,
                    409: ErrorBody,
                    413: ErrorBody,
                    415: ErrorBody,
                    **_ERRORS,
                },
                "jobs",
                body=jobs.JobSubmitInput,
                scope=Scope.JOBS_WRITE,
                seed=True,
                headers=(IDEMPOTENCY_PARAM,),
                response_headers={
                    202: {
                        "Location": "The job's status route, /api/v1/status/<job_id>",
                        "Idempotent-Replayed": "`true` when an Idempotency-Key returned an earlier job",
                    }
                },
            ),
        ),
        ApiRoute(
            "GET",
            STATUS_PATH,
            status,
            Operation("A job's status", {200: JobStatusBody, **found, **_ERRORS}, "jobs", seed=True),
        ),
        ApiRoute(
            "GET",
            "/api/v1/jobs",
            list_jobs,
            Operation(
                "List jobs, newest first",
                {200: JobList, **_ERRORS},
                "jobs",
                query=jobs.JobListFilter,
                scope=Scope.JOBS_READ,
            ),
        ),
        ApiRoute(
            "GET",
            "/api/v1/jobs/{job_id}",
            job_detail,
            Operation(
                "A job with its events",
                {200: JobDetailBody, **found, **_ERRORS},
                "jobs",
                scope=Scope.JOBS_READ,
            ),
        ),
        ApiRoute(
            "GET",
            "/api/v1/jobs/{job_id}/events/stream",
            event_stream,
            Operation(
                "A job's state changes and progress reports as they happen, until it is terminal "
                "(server-sent events; each event's `id` is the job event's, for `Last-Event-ID`)",
                {200: JobUpdateBody, 204: None, **found, **_ERRORS},
                "jobs",
                scope=Scope.JOBS_READ,
                headers=(LAST_EVENT_ID_PARAM,),
                media_types={200: SSE_MEDIA_TYPE},
            ),
        ),
        ApiRoute(
            "POST",
            "/api/v1/jobs/{job_id}/cancel",
            cancel,
            Operation(
                "Cancel a job: queued ones at once, running ones at their next heartbeat",
                {200: JobBody, **found, 409: ErrorBody, **_ERRORS},
                "jobs",
                scope=Scope.JOBS_WRITE,
            ),
        ),
        ApiRoute(
            "POST",
            "/api/v1/jobs/{job_id}/retry",
            retry,
            Operation(
                "Run a failed or cancelled job again, with a fresh set of attempts",
                {200: JobBody, **found, 409: ErrorBody, **_ERRORS},
                "jobs",
                scope=Scope.JOBS_WRITE,
            ),
        ),
    ]
    if dev_routes:
        table.append(
            ApiRoute(
                "POST",
                "/api/v1/_dev/complete/{job_id}",
                dev_complete,
                Operation(
                    "Complete a job by hand (development only)",
                    {200: OkBody, **found, 409: ErrorBody, **_ERRORS},
                    "development",
                    body=jobs.DevCompleteInput,
                    scope=Scope.JOBS_WRITE,
                    seed=True,
                ),
            )
        )
    return api_paths(table)
