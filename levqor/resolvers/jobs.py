"""Jobs: intake with validation and idempotency, lookup, listing, and the seed's dev completion."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol, TypeVar

import anyio.to_thread
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from sqlalchemy import ColumnElement, Text, cast, func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from levqor.callbacks.attempts import DeliveryRecord, deliveries_of_job
from levqor.callbacks.guard import AddressRefused, check_url
from levqor.callbacks.secrets import can_sign
from levqor.costs.ledger import Grant, reserve
from levqor.costs.metrics import BUDGET_REFUSALS
from levqor.db.models import Job, JobEvent, JobStatus, Priority, User
from levqor.db.principals import MANAGED_PRINCIPAL_PREFIX, managed_key_id, managed_principal_id
from levqor.db.types import utcnow
from levqor.errors import BudgetExceeded, Conflict, FieldCode, InvalidRequest, NotFound
from levqor.queue import control, events
from levqor.queue.intake import BUDGET_KEY, DEFER, apply_grant, ask_of, job_row, mark_limited
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.job_reads import JobStatusView, read_job_statuses
from levqor.resolvers.validation import (
    QUERY_INTEGER,
    WHOLE_NUMBER,
    IsoDateTime,
    WorkflowName,
    parse_id,
    parse_input,
)
from levqor.workflows.registry import registry_for, workflow_limits

R = TypeVar("R", covariant=True)
IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY_LEN = 255
MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 20
MAX_SEQ = 2**63 - 1  # jobs.seq is a BIGINT
UNSIGNED_CALLBACK = (
    "nothing would sign this job's callbacks: set LEVQOR_WEBHOOK_SECRET on the server, or submit with "
    "a managed API key (each has a webhook secret of its own)"
)

# Printable ASCII (RFC 9110 field values without control characters).
IDEMPOTENCY_KEY_PATTERN = rf"^[ -~]{{1,{MAX_IDEMPOTENCY_KEY_LEN}}}$"


def _cursor_pattern() -> str:
    """Exactly the unpadded url-safe base64 of `seq:` and 1 to 19 digits, the cursors this API
    returns, so OpenAPI can say which strings `cursor` accepts. Base64 maps 3 bytes to 4
    characters; a digit is 0x30-0x39, which fixes the characters each position can take."""
    low = "[AEIMQUYcgk]"  # a digit's low 4 bits, then the next digit's high 2 (always 00)
    last = "[w-z0-5]"  # a digit's low 6 bits
    first = "(?:[MN][DTjz]|O[DT])"  # a digit's high 6 bits and low 2, before the next digit
    lone = "(?:[MN][AQgw]|O[AQ])"  # one digit alone at the end
    # "seq" is c2Vx; ":" and the first digit begin Oj.
    return rf"^c2Vx(?:Oj{low}|Oj{low}{last}(?:{first}{low}{last}){{0,5}}(?:{lone}|{first}{low})?)$"


CURSOR_PATTERN = _cursor_pattern()
_CURSOR = re.compile(CURSOR_PATTERN)


class JobTemplateInput(BaseModel):
    """The intake body without `run_at`: what a schedule submits at each of its fires."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workflow: WorkflowName
    payload: dict[str, Any]
    callback_url: Annotated[AnyHttpUrl | None, Field(strict=False)] = None
    priority: Annotated[Priority, Field(strict=False)] = Priority.NORMAL
    user_id: Annotated[uuid.UUID | None, Field(strict=False)] = None
    max_attempts: Annotated[int, Field(ge=1, le=25), WHOLE_NUMBER] | None = None
    timeout_s: Annotated[int, Field(ge=1, le=86_400), WHOLE_NUMBER] | None = None
    # What to do when a budget has no room for the job: refuse it (402), or keep it queued until
    # the budget's next reset (CONTRACT.md §9).
    budget_policy: Literal["reject", "defer"] = "reject"

    @field_validator("callback_url")
    @classmethod
    def _callback_scheme(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if value is not None and len(str(value)) > 2048:
            raise ValueError("callback_url must be at most 2048 characters")
        return value


class JobSubmitInput(JobTemplateInput):
    """The intake body (seed: workflow, payload, callback_url, priority) plus the scheduling fields."""

    run_at: Annotated[datetime | None, Field(strict=False)] = None

    @field_validator("run_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # ISO-8601 without an offset is taken as UTC
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past the last representable day
            raise ValueError("run_at must fall between the years 1 and 9999 in UTC") from None


# A job's `submitted_by` names the managed key that submitted it: `key:<api key id>`. The filter takes
# that, or the key's id alone (as /api/v1/keys lists it).
KEY_ID_PATTERN = r"^(key:)?[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}$"
MAX_TEXT_LEN = 200


class JobListFilter(BaseModel):
    """The job list's filters, all optional and combined with AND. `created_after` is inclusive and
    `created_before` exclusive; `text` is a case-insensitive substring of the job's payload or error
    as JSON text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    status: Annotated[JobStatus | None, Field(strict=False)] = None
    workflow: WorkflowName | None = None
    key_id: Annotated[str, StringConstraints(pattern=KEY_ID_PATTERN)] | None = Field(
        default=None, description="The managed API key that submitted the job: its id, or `key:<id>`."
    )
    user_id: Annotated[uuid.UUID | None, Field(strict=False)] = None
    created_after: IsoDateTime | None = None
    created_before: IsoDateTime | None = None
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_LEN)] | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_LIMIT), QUERY_INTEGER] = DEFAULT_LIST_LIMIT
    cursor: Annotated[str, StringConstraints(pattern=CURSOR_PATTERN)] | None = None

    def submitted_by(self) -> str | None:
        """`key_id` as the jobs store it."""
        if self.key_id is None:
            return None
        return managed_principal_id(uuid.UUID(self.key_id.removeprefix(MANAGED_PRINCIPAL_PREFIX)))

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE terms of these filters (the cursor's aside)."""
        terms: list[ColumnElement[bool]] = []
        if self.status is not None:
            terms.append(col(Job.status) == self.status.value)
        if self.workflow is not None:
            terms.append(col(Job.workflow) == self.workflow)
        if self.key_id is not None:
            terms.append(col(Job.submitted_by) == self.submitted_by())
        if self.user_id is not None:
            terms.append(col(Job.user_id) == self.user_id)
        if self.created_after is not None:
            terms.append(col(Job.created_at) >= self.created_after)
        if self.created_before is not None:
            terms.append(col(Job.created_at) < self.created_before)
        if self.text is not None:
            terms.append(_text_match(self.text))
        return terms


def _text_match(needle: str) -> ColumnElement[bool]:
    """`needle` in the payload or error JSON text, ignoring case, in SQL both dialects run: LIKE on
    the lower-cased text, its wildcards escaped. The needle is tried as typed and as JSON writes it
    inside a string (quotes and backslashes escaped; SQLite stores other than ASCII as \\u escapes,
    PostgreSQL's jsonb as the characters), so a value's text matches however it was stored."""
    lowered = needle.lower()
    forms = dict.fromkeys([lowered, json.dumps(lowered, ensure_ascii=False)[1:-1], json.dumps(lowered)[1:-1]])
    columns = [func.lower(cast(col(Job.payload), Text)), func.lower(cast(col(Job.error), Text))]
    return or_(*(column.contains(form, autoescape=True) for column in columns for form in forms))


@dataclass(frozen=True, slots=True)
class SubmitResult:
    job: Job
    created: bool  # False when an Idempotency-Key returned the job of an earlier request


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


def _request_hash(fields: JobSubmitInput) -> str:
    canonical = json.dumps(fields.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_idempotency_key(raw: str) -> str:
    if re.fullmatch(IDEMPOTENCY_KEY_PATTERN, raw) is None:
        raise InvalidRequest.for_field(
            "Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters"
        )
    return raw


async def check_callback_url(ctx: Context, url: str) -> None:
    """400 at intake for a callback the guard would refuse to send (CONTRACT.md §8); delivery
    checks again, since what a name resolves to can change."""
    try:
        await check_url(url, allow_private=ctx.settings.callback_allow_private, resolver=ctx.resolver)
    except AddressRefused as exc:
        raise InvalidRequest.for_field("callback_url", str(exc), FieldCode.INVALID) from exc


@dataclass(frozen=True, slots=True)
class PreparedSubmit:
    """An intake request that passed every check made before the transaction (scope, fields,
    workflow, payload, callback URL), ready to be stored in a transaction of the caller's: intake's
    own, or a schedule's fire with its fire row."""

    principal_id: str
    fields: JobSubmitInput
    values: dict[str, Any]
    budget: dict[str, Any]
    scoped_key: str | None = None
    request_hash: str | None = None

    def keyed(self, idempotency_key: str | None) -> PreparedSubmit:
        """The same submit under an Idempotency-Key (None: none)."""
        if idempotency_key is None:
            return replace(self, scoped_key=None, request_hash=None)
        scoped = f"{self.principal_id}:{check_idempotency_key(idempotency_key)}"
        return replace(self, scoped_key=scoped, request_hash=_request_hash(self.fields))

    def find_existing(self, session: Session) -> SubmitResult | None:
        if self.scoped_key is None:
            return None
        existing = session.exec(select(Job).where(Job.idempotency_key == self.scoped_key)).first()
        if existing is None:
            return None
        if existing.created_at < utcnow() - IDEMPOTENCY_WINDOW:
            existing.idempotency_key = None  # the window has passed: the key is free again
            session.add(existing)
            session.flush()
            return None
        if existing.request_hash != self.request_hash:
            raise Conflict("this Idempotency-Key was already used with a different request body")
        return SubmitResult(job=existing, created=False)

    def store(self, session: Session) -> SubmitResult:
        """Reserve the budget and store the job (or find the one its Idempotency-Key made)."""
        found = self.find_existing(session)
        if found is not None:
            return found
        fields = self.fields
        if fields.user_id is not None and session.get(User, fields.user_id) is None:
            raise InvalidRequest.for_field(
                "user_id", f"no user with id '{fields.user_id}'", FieldCode.NOT_FOUND
            )
        row = job_row(
            **self.values,
            **self.budget,
            user_id=fields.user_id,
            run_at=fields.run_at,
            idempotency_key=self.scoped_key,
            request_hash=self.request_hash,
        )
        now = utcnow()
        (granted,) = reserve(session, [ask_of(row, now)], now)
        _admitted(granted)
        assert isinstance(granted, Grant)
        apply_grant(row, granted)
        mark_limited(session, [row])
        row.pop(BUDGET_KEY)
        row.pop(DEFER)
        job = Job(**row)
        events.enqueue(session, job)
        return SubmitResult(job=job, created=True)


async def prepare_submit(ctx: Context, data: Any) -> PreparedSubmit:
    """Every check of intake that needs no transaction; `PreparedSubmit.store` does the rest."""
    ctx.principal.require(Scope.JOBS_WRITE)
    return await prepare_fields(ctx, parse_input(JobSubmitInput, data))


async def prepare_fields(ctx: Context, fields: JobSubmitInput) -> PreparedSubmit:
    """`prepare_submit` of fields already parsed (a run's steps are parsed with their run)."""
    flow = registry_for(ctx.settings).get(fields.workflow)  # 400 naming an unknown workflow
    flow.validate(fields.payload)  # 400 naming the failing payload path
    estimate = flow.estimate_cost(fields.payload)  # the worst case, in micro-USD (None: no cost model)
    if fields.callback_url is not None:
        if not can_sign(ctx.principal, ctx.settings):
            raise InvalidRequest.for_field("callback_url", UNSIGNED_CALLBACK, FieldCode.INVALID)
        await check_callback_url(ctx, str(fields.callback_url))
    key_id = managed_key_id(ctx.principal.id)
    # What the job takes from the request and its workflow, the same on both paths of intake.
    values: dict[str, Any] = {
        "workflow": fields.workflow,
        "payload": fields.payload,
        "callback_url": str(fields.callback_url) if fields.callback_url else None,
        "priority": fields.priority.rank,
        "max_attempts": fields.max_attempts or flow.max_attempts,
        "timeout_s": fields.timeout_s or flow.timeout_s,
        # Which managed key submitted it (its secret signs the callbacks); None for development
        # mode and `API_KEYS` keys, which share LEVQOR_WEBHOOK_SECRET, so their jobs cost the
        # partial index on `submitted_by` nothing.
        "submitted_by": ctx.principal.id if key_id is not None else None,
        "cost_estimate_micros": estimate,
        # Its workflow's limit, from the settings; its key's is read where it is stored.
        "concurrency_limited": fields.workflow in workflow_limits(ctx.settings),
    }
    # Not columns: whose budget applies, and the policy (read by the reservation, levqor/costs).
    budget = {BUDGET_KEY: key_id, DEFER: fields.budget_policy == "defer"}
    return PreparedSubmit(principal_id=ctx.principal.id, fields=fields, values=values, budget=budget)


async def submit_job(ctx: Context, data: Any, *, idempotency_key: str | None = None) -> SubmitResult:
    prepared = (await prepare_submit(ctx, data)).keyed(idempotency_key)
    fields = prepared.fields
    if ctx.batches is not None and prepared.scoped_key is None and fields.user_id is None:
        # Nothing to read first: the row joins the next group commit.
        row = job_row(**prepared.values, **prepared.budget, run_at=fields.run_at)
        return SubmitResult(job=_admitted(await ctx.batches.intake.call(row)), created=True)
    return await store_once(ctx, prepared)


class Keyed(Protocol[R]):
    """A submit that may carry an Idempotency-Key (`scoped_key`): a job's or a run's."""

    @property
    def scoped_key(self) -> str | None: ...

    def store(self, session: Session) -> R: ...

    def find_existing(self, session: Session) -> R | None: ...


async def store_once(ctx: Context, prepared: Keyed[R]) -> R:
    """Store `prepared`, or answer with what its Idempotency-Key stored first: a concurrent request
    with the same key that won the unique index is found after the insert conflicts."""
    try:
        return await ctx.db.write(prepared.store)
    except IntegrityError:
        if prepared.scoped_key is None:
            raise
        found = await ctx.db.write(prepared.find_existing)
        if found is None:
            raise
        return found


def _admitted(granted: Any) -> Any:
    """The intake's answer, or its budget's refusal raised (and counted)."""
    if isinstance(granted, BudgetExceeded):
        subject = granted.details[0]["subject"] if granted.details else "unknown"
        BUDGET_REFUSALS.labels(subject=subject).inc()
        raise granted
    return granted


def cursor_of(job: Job) -> str:
    """The cursor that pages past `job`."""
    assert job.seq is not None
    return _encode_cursor(job.seq)


async def get_job(ctx: Context, job_id: str | uuid.UUID) -> Job:
    key = parse_id(job_id, kind="job")
    job = await ctx.db.read(lambda session: session.exec(select(Job).where(Job.id == key)).first())
    if job is None:
        raise NotFound(f"no job with id '{key}'")
    return job


async def get_job_status(ctx: Context, job_id: str | uuid.UUID) -> JobStatusView:
    """What the seed's public status route shows of a job."""
    key = parse_id(job_id, kind="job")
    if ctx.batches is not None:
        found = await ctx.batches.status.call(key)
    else:
        found = (await anyio.to_thread.run_sync(read_job_statuses, ctx.db, [key]))[0]
    if found is None:
        raise NotFound(f"no job with id '{key}'")
    return found


@dataclass(frozen=True, slots=True)
class JobDetail:
    job: Job
    events: list[JobEvent]
    deliveries: list[DeliveryRecord]


async def get_job_detail(ctx: Context, job_id: str | uuid.UUID) -> JobDetail:
    """The whole job with its event log and callback deliveries: payloads may be private, so this
    needs `jobs:read` (the seed's status route, which shows no payload, stays public)."""
    ctx.principal.require(Scope.JOBS_READ)
    key = parse_id(job_id, kind="job")

    def run(session: Session) -> JobDetail:
        job = session.exec(select(Job).where(Job.id == key)).first()
        if job is None:
            raise NotFound(f"no job with id '{key}'")
        events = session.exec(select(JobEvent).where(JobEvent.job_id == key).order_by(col(JobEvent.id)))
        return JobDetail(job=job, events=list(events), deliveries=deliveries_of_job(session, key))

    return await ctx.db.read(run)


async def get_job_events(ctx: Context, job_id: uuid.UUID) -> list[JobEvent]:
    """The event log of a job (GraphQL resolves `Job.events` lazily through this)."""
    ctx.principal.require(Scope.JOBS_READ)

    def run(session: Session) -> list[JobEvent]:
        return list(
            session.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.id)))
        )

    return await ctx.db.read(run)


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    # The pattern first: base64 decoding skips characters outside its alphabet.
    if _CURSOR.fullmatch(cursor) is None:
        raise InvalidRequest.for_field("cursor", "not a cursor this API returned", FieldCode.PATTERN)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    match = re.fullmatch(r"seq:(\d{1,19})", raw)
    # A forged cursor past the largest BIGINT would make the database refuse the query.
    if match is None or int(match.group(1)) > MAX_SEQ:
        raise InvalidRequest.for_field("cursor", "not a cursor this API returned", FieldCode.INVALID)
    return int(match.group(1))


async def list_jobs(ctx: Context, data: Any) -> JobPage:
    """Newest first, keyset-paginated by an opaque cursor."""
    ctx.principal.require(Scope.JOBS_READ)
    query = parse_input(JobListFilter, data)
    before = _decode_cursor(query.cursor) if query.cursor else None

    def run(session: Session) -> JobPage:
        statement = select(Job).where(*query.conditions())
        if before is not None:
            statement = statement.where(col(Job.seq) < before)
        rows = list(session.exec(statement.order_by(col(Job.seq).desc()).limit(query.limit + 1)))
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        last_seq = rows[-1].seq if rows else None
        return JobPage(jobs=rows, next_cursor=_encode_cursor(last_seq) if more and last_seq else None)

    return await ctx.db.read(run)


async def dev_complete_job(ctx: Context, job_id: str | uuid.UUID, data: Any) -> Job:
    """The seed's simulated completion: a queued or running job succeeds with `result`."""
    if ctx.settings.is_production:
        raise NotFound("not found")
    ctx.principal.require(Scope.JOBS_WRITE)
    key = parse_id(job_id, kind="job")
    fields = parse_input(DevCompleteInput, data)

    # The queue's state rules: queued or running succeed, a finished job is a Conflict.
    return await ctx.db.write(lambda session: control.force_complete(session, key, fields.result))


class DevCompleteInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    result: dict[str, Any] = Field(default_factory=dict)
