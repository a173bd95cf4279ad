"""The dashboard's job pages: the filtered list with bulk retry and cancel, one job with its timeline
and deliveries, and the job's live updates (the same stream as the REST route, signed in by session).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from levqor.dashboard.pages import PREFIX, dashboard_page, field, page_context, read_form, render
from levqor.db.models import Job, JobStatus
from levqor.errors import InvalidRequest, LevqorError
from levqor.resolvers import deliveries, job_control, jobs, workflows
from levqor.resolvers.context import Scope
from levqor.resolvers.usage import job_tokens
from levqor.rest.jobs import job_update_stream

# The list's filters as the page's query carries them; the others in the address are ignored.
LIST_FILTERS = ("status", "workflow", "limit", "cursor")
MAX_BULK_JOBS = 100  # a page's worth at most
BULK_ACTIONS = {"retry": job_control.retry_job, "cancel": job_control.cancel_job}


@dataclass(frozen=True, slots=True)
class ExtraFilter:
    """A filter field the list form shows beside state and workflow."""

    name: str
    label: str
    type: str = "text"
    maxlength: int = 200
    placeholder: str = ""


# The list resolver's other filters (`JobListFilter`), as fields of the form and of the address.
EXTRA_FILTERS: tuple[ExtraFilter, ...] = (
    ExtraFilter("key_id", "Key id", maxlength=64),
    ExtraFilter("user_id", "User id", maxlength=64),
    ExtraFilter("created_after", "Created from (UTC)", type="datetime-local", maxlength=40),
    ExtraFilter("created_before", "Created before (UTC)", type="datetime-local", maxlength=40),
    ExtraFilter("text", "Text in payload or error", type="search", maxlength=jobs.MAX_TEXT_LEN),
)


def list_query(request: Request) -> dict[str, str]:
    """The filters in the address that are set, as the list resolver reads them."""
    names = LIST_FILTERS + tuple(extra.name for extra in EXTRA_FILTERS)
    return {name: value for name in names if (value := request.query_params.get(name, "").strip())}


@dashboard_page
async def job_list(request: Request) -> Response:
    ctx = page_context(request)
    query = list_query(request)
    page = await jobs.list_jobs(ctx, query)
    names = [flow.name for flow in await workflows.list_workflows(ctx)]
    without_cursor = {name: value for name, value in query.items() if name != "cursor"}
    next_url = None
    if page.next_cursor is not None:
        next_url = f"{PREFIX}/jobs?{urlencode({**without_cursor, 'cursor': page.next_cursor})}"
    first_url = f"{PREFIX}/jobs" + (f"?{urlencode(without_cursor)}" if without_cursor else "")
    here = f"{PREFIX}/jobs" + (f"?{urlencode(query)}" if query else "")
    filters = {name: query.get(name, "") for name in (*LIST_FILTERS, *(e.name for e in EXTRA_FILTERS))}
    filters["limit"] = query.get("limit", str(jobs.DEFAULT_LIST_LIMIT))
    return render(
        request,
        "jobs.html",
        section="jobs",
        page=page,
        states=[state.value for state in JobStatus],
        workflows=names,
        filters=filters,
        extra_filters=EXTRA_FILTERS,
        filtered=bool(without_cursor),
        next_url=next_url,
        first_url=first_url,
        here=here,
    )


@dataclass(frozen=True, slots=True)
class BulkResult:
    id: str
    job: Job | None
    error: str | None


def _back_to(raw: str) -> str:
    # Only back into the dashboard: a form's `back` must not send anyone to another site.
    return raw if raw.startswith(f"{PREFIX}/") and not raw.startswith("//") else f"{PREFIX}/jobs"


@dashboard_page
async def bulk_action(request: Request) -> Response:
    """Retry or cancel the selected jobs: first a confirmation page, then each job through the same
    resolver as the APIs, with what happened to each."""
    fields = await read_form(request)
    action = field(fields, "action")
    verb = BULK_ACTIONS.get(action)
    if verb is None:
        raise InvalidRequest.for_field("action", "must be retry or cancel")
    ids = list(dict.fromkeys(value.strip() for value in fields.get("job", []) if value.strip()))
    back = _back_to(field(fields, "back"))
    if not ids:
        raise InvalidRequest("select at least one job first")
    if len(ids) > MAX_BULK_JOBS:
        raise InvalidRequest(f"select at most {MAX_BULK_JOBS} jobs at once")
    ctx = page_context(request)
    if field(fields, "confirmed") != "yes":
        # Asking is free, but a key that could not act is told so now rather than after confirming.
        ctx.principal.require(Scope.JOBS_WRITE)
        return render(request, "bulk_confirm.html", section="jobs", action=action, ids=ids, back=back)
    results: list[BulkResult] = []
    for job_id in ids:
        try:
            results.append(BulkResult(job_id, await verb(ctx, job_id), None))
        except LevqorError as exc:
            if exc.status in {401, 403}:
                raise  # the key may not do this at all: one answer for the whole request
            results.append(BulkResult(job_id, None, exc.message))
    done = sum(1 for result in results if result.job is not None)
    return render(
        request, "bulk_result.html", section="jobs", action=action, results=results, done=done, back=back
    )


@dashboard_page
async def job_page(request: Request) -> Response:
    ctx = page_context(request)
    detail = await jobs.get_job_detail(ctx, request.path_params["job_id"])
    job = detail.job
    return render(
        request,
        "job.html",
        section="jobs",
        job=job,
        events=detail.events,
        deliveries=detail.deliveries,
        tokens=job_tokens(job),
        last_event_id=detail.events[-1].id if detail.events else 0,
        finished=job.job_status.is_terminal,
    )


@dashboard_page
async def job_events(request: Request) -> Response:
    """The job's updates as server-sent events, after the page's last event (`?after=`) or the
    EventSource's `Last-Event-ID` on a reconnect."""
    after: Any = request.headers.get("last-event-id") or request.query_params.get("after")
    return await job_update_stream(page_context(request), request.path_params["job_id"], after)


@dashboard_page
async def resend(request: Request) -> Response:
    await read_form(request)
    job_id = request.path_params["job_id"]
    await deliveries.resend_delivery(page_context(request), job_id, request.path_params["delivery_id"])
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/jobs", job_list, methods=["GET"]),
        Route("/jobs/bulk", bulk_action, methods=["POST"]),
        Route("/jobs/{job_id}", job_page, methods=["GET"]),
        Route("/jobs/{job_id}/events", job_events, methods=["GET"]),
        Route("/jobs/{job_id}/deliveries/{delivery_id}/resend", resend, methods=["POST"]),
    ]
