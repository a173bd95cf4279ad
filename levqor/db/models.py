"""The tables. Domain enums live here too: their values are the wire strings."""

from __future__ import annotations

import enum
import unicodedata
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    event,
    text,
)
from sqlmodel import Field, SQLModel
from uuid_utils.compat import uuid7

from levqor.db.types import BigIntPK, JSONType, UtcDateTime, utcnow


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """Stored rank: lower runs first, so the claim index is ascending in every column."""
        return _PRIORITY_RANK[self]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        return _RANK_PRIORITY[rank]


_PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
_RANK_PRIORITY = {rank: priority for priority, rank in _PRIORITY_RANK.items()}


class Currency(enum.StrEnum):
    GBP = "GBP"
    USD = "USD"
    EUR = "EUR"


def email_key(email: str) -> str:
    """The form two addresses are compared in: NFKC, case-folded, NFKC again (Unicode's
    compatibility caseless match, §3.13; the NFKC_Casefold of UAX #31 identity projects use).
    So `straße@x.io` and `STRASSE@x.io` are one user, and so are `john@x.io` and the same
    address in full-width letters (U+FF4A U+FF4F U+FF48 U+FF4E)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email).casefold())


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    # As the user gave it, trimmed and lower-cased (what the API shows).
    email: str = Field(sa_type=String(320), unique=True, index=True)
    # `email_key(email)`, set on every write; its unique index makes upserts idempotent.
    email_key: str = Field(default="", sa_type=String(320), unique=True, index=True)
    name: str = Field(sa_type=String(200))
    locale: str = Field(default="en-GB", sa_type=String(35))
    currency: str = Field(default=Currency.GBP.value, sa_type=String(3))
    meta: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


@event.listens_for(User, "before_insert")
@event.listens_for(User, "before_update")
def _derive_email_key(_mapper: object, _connection: object, user: User) -> None:
    # Every way a user row is written (resolvers, CLI, tests) stores the key of its email.
    user.email_key = email_key(user.email)


# The predicates of the queue's partial indexes; the queue's statements repeat them word for word.
# A job under a concurrency limit (its key's or its workflow's `max_running`) is left out of the
# claim index, so the ordinary claim never meets one and costs what it did before limits existed;
# levqor/queue/limits.py claims those through their own index, a limit at a time.
# A step of a run that still waits for its parents (`waiting_on` > 0) is in neither claim index.
CLAIMABLE_WHERE = "status = 'queued' AND NOT concurrency_limited AND waiting_on = 0"
LEASED_WHERE = "status = 'running'"
LIMITED_QUEUED_WHERE = "status = 'queued' AND concurrency_limited AND waiting_on = 0"
LIMITED_RUNNING_WHERE = "status = 'running' AND concurrency_limited"
FINISHED_WHERE = "finished_at IS NOT NULL"


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        # The claim query walks this index in claim order; only claimable rows are in it.
        Index(
            "ix_jobs_claimable",
            "priority",
            "run_at",
            "seq",
            postgresql_where=text(CLAIMABLE_WHERE),
            sqlite_where=text(CLAIMABLE_WHERE),
        ),
        # The reaper looks only at running leases.
        Index(
            "ix_jobs_leases",
            "lease_expires_at",
            postgresql_where=text(LEASED_WHERE),
            sqlite_where=text(LEASED_WHERE),
        ),
        # Queued and running jobs under a concurrency limit, by the key and workflow that limit them;
        # a job without a limit is in neither.
        Index(
            "ix_jobs_limited_queued",
            "submitted_by",
            "workflow",
            "priority",
            "run_at",
            "seq",
            postgresql_where=text(LIMITED_QUEUED_WHERE),
            sqlite_where=text(LIMITED_QUEUED_WHERE),
        ),
        Index(
            "ix_jobs_limited_running",
            "submitted_by",
            "workflow",
            postgresql_where=text(LIMITED_RUNNING_WHERE),
            sqlite_where=text(LIMITED_RUNNING_WHERE),
        ),
        Index("ix_jobs_status_seq", "status", "seq"),
        # A run's steps; a job outside any run costs the index nothing.
        Index(
            "ix_jobs_run_id",
            "run_id",
            postgresql_where=text("run_id IS NOT NULL"),
            sqlite_where=text("run_id IS NOT NULL"),
        ),
        Index("ix_jobs_created_at", "created_at"),
        # Finished jobs by when they finished, for the overview's window (levqor/resolvers/overview.py);
        # partial, so queued and running jobs, whose rows change at every claim and heartbeat, cost it
        # nothing.
        Index(
            "ix_jobs_finished_at",
            "finished_at",
            postgresql_where=text(FINISHED_WHERE),
            sqlite_where=text(FINISHED_WHERE),
        ),
        # Partial: a job without a user or a submitter costs these indexes nothing, at intake and at
        # every state change (each change writes a new row version into every index of the row).
        Index(
            "ix_jobs_user_id",
            "user_id",
            postgresql_where=text("user_id IS NOT NULL"),
            sqlite_where=text("user_id IS NOT NULL"),
        ),
        Index(
            "ix_jobs_submitted_by",
            "submitted_by",
            postgresql_where=text("submitted_by IS NOT NULL"),
            sqlite_where=text("submitted_by IS NOT NULL"),
        ),
        Index(
            "ux_jobs_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
            sqlite_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    # `seq` gives arrival order and cheap keyset pagination; `id` is the public identifier.
    seq: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    # Time-ordered (version 7): a new job's id, and its events' `job_id`, land at the end of their
    # indexes, where version 4's random ids landed on any leaf of an index that outgrew the cache (at
    # a million jobs: 7.9 against 1.0 KB of WAL per submit on PostgreSQL, full-page images of those
    # leaves). Still a UUID to every client.
    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, unique=True)
    workflow: str = Field(sa_type=String(128))
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    callback_url: str | None = Field(default=None, sa_type=String(2048))
    priority: int = Field(default=1, sa_type=SmallInteger)  # Priority.rank: 0 high, 1 normal, 2 low
    status: str = Field(default=JobStatus.QUEUED.value, sa_type=String(16))
    user_id: uuid.UUID | None = Field(default=None, sa_type=Uuid, foreign_key="users.id")
    # `Principal.id` of the caller that submitted it ("dev", "static:…", "key:<api key id>").
    submitted_by: str | None = Field(default=None, sa_type=String(64))
    # "<principal id>:<Idempotency-Key header>", unique while set; cleared once the 24 h window passes.
    idempotency_key: str | None = Field(default=None, sa_type=String(400))
    request_hash: str | None = Field(default=None, sa_type=String(64))
    run_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    attempts: int = Field(default=0)
    max_attempts: int = Field(default=3)
    timeout_s: int | None = Field(default=None)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    worker_id: str | None = Field(default=None, sa_type=String(200))
    cancel_requested: bool = Field(default=False, sa_type=Boolean)
    # Whether a concurrency limit applies (its key's or its workflow's `max_running`): set at intake,
    # and on the key's queued and running jobs when the key's limit is set or lifted.
    concurrency_limited: bool = Field(default=False, sa_type=Boolean)
    # A step of a run (CONTRACT.md §7): the run, the step's key in it, and how many of its parents
    # it still waits for (claimable only at 0). None, None and 0 for a job on its own.
    run_id: uuid.UUID | None = Field(default=None, sa_type=Uuid)
    step_key: str | None = Field(default=None, sa_type=String(64))
    waiting_on: int = Field(default=0)
    result: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    # Money is USD micro-dollars. The estimate is the workflow's worst case, made at intake; the
    # actual cost is the sum of what the attempts reported.
    cost_estimate_micros: int | None = Field(default=None, sa_type=BigInteger)
    cost_actual_micros: int | None = Field(default=None, sa_type=BigInteger)
    # True when some of the actual cost is an estimate (a model's stream cut before its usage).
    cost_estimated: bool = Field(default=False, sa_type=Boolean)
    # What the job's budgets hold for it until it settles (None: no budget applied at intake), and
    # how much of `cost_actual_micros` its settlements have charged (a retried job holds anew).
    reserved_micros: int | None = Field(default=None, sa_type=BigInteger)
    settled_micros: int | None = Field(default=None, sa_type=BigInteger)
    # Why a queued job waits past its submission (a budget with `budget_policy: defer`).
    defer_reason: str | None = Field(default=None, sa_type=String(300))
    # Tokens, summed over the attempts that reported them (None: none reported).
    prompt_tokens: int | None = Field(default=None, sa_type=BigInteger)
    completion_tokens: int | None = Field(default=None, sa_type=BigInteger)
    cached_tokens: int | None = Field(default=None, sa_type=BigInteger)
    reasoning_tokens: int | None = Field(default=None, sa_type=BigInteger)
    # The last progress the running attempt reported (each report is also a `progress` event).
    progress: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UtcDateTime)

    @property
    def job_status(self) -> JobStatus:
        return JobStatus(self.status)

    @property
    def job_priority(self) -> Priority:
        return Priority.from_rank(self.priority)


class JobEvent(SQLModel, table=True):
    """Append-only audit of every state change, written in the same transaction as the change.

    `job_id` has no foreign key: only the queue writes events, each from the job row it has just
    changed in the same statement or transaction, so the key could never catch an orphan, while its
    check cost every event an index probe and a row lock on the job (about a fifth of a claim's time
    in the database). Pruning deletes a job's events with the job."""

    __tablename__ = "job_events"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    job_id: uuid.UUID = Field(sa_type=Uuid, index=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    type: str = Field(sa_type=String(32))
    from_status: str | None = Field(default=None, sa_type=String(16))
    to_status: str = Field(sa_type=String(16))
    attempt: int = Field(default=0)
    worker_id: str | None = Field(default=None, sa_type=String(200))
    detail: dict[str, Any] | None = Field(default=None, sa_type=JSONType)


class UptimeSample(SQLModel, table=True):
    """One row per minute in which a server process was up and answering (for `uptime_rolling_7d`)."""

    __tablename__ = "uptime_samples"

    minute: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})


class ApiKey(SQLModel, table=True):
    """A managed API key. Only the SHA-256 of the secret is stored; the secret is shown once."""

    __tablename__ = "api_keys"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    name: str = Field(sa_type=String(200))
    prefix: str = Field(sa_type=String(16))  # the secret's first characters, to tell keys apart
    secret_hash: str = Field(sa_type=String(64), unique=True, index=True)
    scopes: list[str] = Field(default_factory=list, sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # Requests per minute this key may make; None: LEVQOR_RATE_KEY (CONTRACT.md §6).
    rate_limit: int | None = Field(default=None)
    # How many of this key's jobs may run at once; None: no limit (CONTRACT.md §9).
    max_running: int | None = Field(default=None)
    # Signs the callbacks of the jobs this key submits (`whsec_…`, CONTRACT.md §8). Kept as is, since
    # signing needs it; shown once, when the key is made or the secret rotated. After a rotation the
    # previous secret signs too (a second signature) until `webhook_secret_previous_until`.
    webhook_secret: str | None = Field(default=None, sa_type=String(64))
    webhook_secret_previous: str | None = Field(default=None, sa_type=String(64))
    webhook_secret_previous_until: datetime | None = Field(default=None, sa_type=UtcDateTime)


class Worker(SQLModel, table=True):
    """A worker process (in-process, `levqor worker`, or remote over the worker API) and its heartbeat."""

    __tablename__ = "workers"

    id: str = Field(primary_key=True, sa_type=String(200))
    hostname: str | None = Field(default=None, sa_type=String(255))
    pid: int | None = Field(default=None)
    workflows: list[str] = Field(default_factory=list, sa_type=JSONType)
    concurrency: int = Field(default=1)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime, index=True)
    stopped_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt, or being attempted (`lease_expires_at` set)
    DELIVERED = "delivered"
    FAILED = "failed"  # given up: retries used up, 410 Gone, or an endpoint marked failing

    @property
    def is_final(self) -> bool:
        return self is not DeliveryStatus.PENDING


# The predicate of the outbox's partial index; the delivery claim repeats it word for word.
DELIVERY_DUE_WHERE = "status = 'pending'"


class CallbackDelivery(SQLModel, table=True):
    """The outbox: one webhook to send, written in the transaction that finished its job.

    `body` is the exact JSON text sent on every attempt, fixed when the job's state changed, so a
    retry signs and sends the same bytes under the same `webhook_id`."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (
        Index(
            "ix_callback_deliveries_due",
            "next_attempt_at",
            postgresql_where=text(DELIVERY_DUE_WHERE),
            sqlite_where=text(DELIVERY_DUE_WHERE),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True, sa_type=Uuid)
    job_id: uuid.UUID = Field(sa_type=Uuid, index=True)
    event_type: str = Field(sa_type=String(32))  # job.succeeded, job.failed, job.cancelled
    # The Standard Webhooks `webhook-id`: the same on every attempt and on a re-send of the event.
    webhook_id: str = Field(sa_type=String(64))
    url: str = Field(sa_type=String(2048))
    body: str = Field(sa_type=Text)
    # Whose secret signs it: the submitting principal (`key:<id>` uses that key's secret).
    signed_by: str | None = Field(default=None, sa_type=String(64))
    status: str = Field(default=DeliveryStatus.PENDING.value, sa_type=String(16))
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    worker_id: str | None = Field(default=None, sa_type=String(200))
    failed_reason: str | None = Field(default=None, sa_type=String(200))
    resent_from: uuid.UUID | None = Field(default=None, sa_type=Uuid)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class CallbackAttempt(SQLModel, table=True):
    """One POST of a delivery. The row is written when the attempt is claimed, before anything is
    sent, and finished with what came back; a row left unfinished is an attempt whose worker died."""

    __tablename__ = "callback_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "attempt", name="ux_callback_attempts_delivery"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    delivery_id: uuid.UUID = Field(sa_type=Uuid)
    attempt: int
    worker_id: str = Field(sa_type=String(200))
    started_at: datetime = Field(sa_type=UtcDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    status_code: int | None = Field(default=None)
    latency_ms: int | None = Field(default=None)
    response_excerpt: str | None = Field(default=None, sa_type=Text)  # at most the first 1,000 chars
    error: str | None = Field(default=None, sa_type=String(500))


class CallbackEndpoint(SQLModel, table=True):
    """A callback URL that has failed since its last success (a healthy URL has no row).

    Once it has failed for `LEVQOR_CALLBACK_FAILING_AFTER_S` it is marked failing: its deliveries get
    one attempt each instead of the retry schedule, until one succeeds and clears the mark."""

    __tablename__ = "callback_endpoints"

    url_hash: str = Field(primary_key=True, sa_type=String(64))  # SHA-256 of the URL
    url: str = Field(sa_type=String(2048))
    failing_since: datetime = Field(sa_type=UtcDateTime)
    last_failure_at: datetime = Field(sa_type=UtcDateTime)
    marked_failing_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class BudgetPeriod(enum.StrEnum):
    DAY = "day"  # a UTC calendar day
    MONTH = "month"  # a UTC calendar month
    TOTAL = "total"  # never resets


class BudgetSubject(enum.StrEnum):
    KEY = "key"  # an API key's id
    USER = "user"  # a user's id (`user_id` on the job)


class Budget(SQLModel, table=True):
    """A spending limit of one API key or one user, per period (CONTRACT.md §9)."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("subject_kind", "subject_id", name="ux_budgets_subject"),)

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True, sa_type=Uuid)
    subject_kind: str = Field(sa_type=String(8))
    subject_id: uuid.UUID = Field(sa_type=Uuid)
    period: str = Field(sa_type=String(8))
    limit_micros: int = Field(sa_type=BigInteger)
    # Crossing it only alerts (logged and recorded once per period).
    soft_limit_micros: int | None = Field(default=None, sa_type=BigInteger)
    # The most one job's estimate may be, for any workflow, and per workflow.
    max_job_micros: int | None = Field(default=None, sa_type=BigInteger)
    workflow_max_job_micros: dict[str, int] = Field(default_factory=dict, sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class BudgetWindow(SQLModel, table=True):
    """A budget's counters for one period: what has been spent, and what running and queued jobs
    hold. Intake and settlement change them under the row's lock; the ledger can rebuild them."""

    __tablename__ = "budget_windows"

    budget_id: uuid.UUID = Field(primary_key=True, sa_type=Uuid)
    # The period's first instant (a UTC midnight, the first of a month, or 1970-01-01 for `total`).
    period_start: datetime = Field(primary_key=True, sa_type=UtcDateTime)
    spent_micros: int = Field(default=0, sa_type=BigInteger)
    reserved_micros: int = Field(default=0, sa_type=BigInteger)
    soft_alerted_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class LedgerKind(enum.StrEnum):
    RESERVE = "reserve"  # at intake: the estimate is held
    SETTLE = "settle"  # at the terminal state: the hold is released and the actual cost spent


class CostEntry(SQLModel, table=True):
    """The ledger: every reservation and settlement, one of each per job, budget and hold, so a
    window's counters are the sums of its entries."""

    __tablename__ = "cost_ledger"
    __table_args__ = (UniqueConstraint("job_id", "budget_id", "hold", "kind", name="ux_cost_ledger_entry"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    job_id: uuid.UUID = Field(sa_type=Uuid)
    budget_id: uuid.UUID = Field(sa_type=Uuid)
    # The job's first hold is 1; each retry of a finished job holds anew (2, 3, ...).
    hold: int = Field(default=1)
    period_start: datetime = Field(sa_type=UtcDateTime)
    kind: str = Field(sa_type=String(8))
    reserved_delta_micros: int = Field(sa_type=BigInteger)
    spent_delta_micros: int = Field(sa_type=BigInteger)
    at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class MissedFire(enum.StrEnum):
    """What a schedule does with the ticks that passed while no scheduler ran (CONTRACT.md §7)."""

    SKIP = "skip"  # jump to the next tick to come
    RUN_ONCE = "run_once"  # one job for all the missed ticks, then on as before


class FireKind(enum.StrEnum):
    TICK = "tick"  # a tick fired in its time (within the scheduler's grace)
    MISSED = "missed"  # one fire for ticks missed while no scheduler ran (`run_once`)
    MANUAL = "manual"  # "run now"


class Schedule(SQLModel, table=True):
    """A named job to submit on a cron expression (in a time zone) or every `every_s` seconds."""

    __tablename__ = "schedules"
    __table_args__ = (
        # The scheduler's look for due schedules reads only the enabled ones, soonest first.
        Index(
            "ix_schedules_due",
            "next_fire_at",
            postgresql_where=text("enabled"),
            sqlite_where=text("enabled"),
        ),
        # A name addresses one schedule (issue 13): two requests taking one name, one wins.
        Index("ux_schedules_name", "name", unique=True),
    )

    # UUIDv7: id order is creation order, which the listing pages by.
    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True, sa_type=Uuid)
    name: str = Field(sa_type=String(128))
    cron: str | None = Field(default=None, sa_type=String(200))
    every_s: int | None = Field(default=None)
    timezone: str = Field(default="UTC", sa_type=String(64))
    # Interval ticks are anchor + k * every_s; the anchor is set when the cadence is (re)set.
    anchor_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    # The intake body each fire submits (no `run_at`), as it was validated.
    job: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    on_missed: str = Field(default=MissedFire.SKIP.value, sa_type=String(16))
    enabled: bool = Field(default=True, sa_type=Boolean)
    # The next tick not yet fired (None while paused). Advanced in the transaction of the fire.
    next_fire_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # `Principal.id` of who set the job last: each fire submits as that caller (its scopes, its
    # key's budget and webhook secret).
    owner: str = Field(sa_type=String(64))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class ScheduleFire(SQLModel, table=True):
    """One fire of a schedule and what intake made of it: the job, or why there is none.

    Unique per (schedule, fire_time), and written in the transaction that stores the job: of any
    number of scheduler processes, one stores a tick's fire and the others' inserts conflict."""

    __tablename__ = "schedule_fires"
    __table_args__ = (UniqueConstraint("schedule_id", "fire_time", name="ux_schedule_fires_tick"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    schedule_id: uuid.UUID = Field(sa_type=Uuid)
    fire_time: datetime = Field(sa_type=UtcDateTime)  # the tick (or the moment of "run now")
    kind: str = Field(sa_type=String(8))
    # The ticks it stands for: 1, the missed ticks one `run_once` fire covers, or 0 for "run now".
    ticks: int = Field(default=1)
    job_id: uuid.UUID | None = Field(default=None, sa_type=Uuid)
    # Intake's refusal ({"error", "message"}) when no job was stored: a budget, a payload that no
    # longer validates, an owner whose key was revoked.
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    fired_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class RunStatus(enum.StrEnum):
    """A run's states: those of a job (CONTRACT.md §7)."""

    QUEUED = "queued"  # no step has started
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # every step succeeded
    FAILED = "failed"  # every step finished, and one failed (its descendants were cancelled)
    CANCELLED = "cancelled"  # every step finished, and the run or one of its steps was cancelled

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class Run(SQLModel, table=True):
    """A graph of jobs submitted together: each step is an ordinary job (`jobs.run_id`), which runs
    once the parents it depends on have finished (`run_edges`).

    The counters change in the transactions that finish or reopen its steps, under the run row's
    lock, so the last step to finish is the one that sees `steps_open` reach 0 and finishes the run."""

    __tablename__ = "runs"
    __table_args__ = (
        Index(
            "ux_runs_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
            sqlite_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True, sa_type=Uuid)
    # Terminal once every step is; `queued` until then (a read shows `running` once a step started).
    status: str = Field(default=RunStatus.QUEUED.value, sa_type=String(16))
    # As `jobs.submitted_by`: the managed key whose secret signs the run's callback.
    submitted_by: str | None = Field(default=None, sa_type=String(64))
    callback_url: str | None = Field(default=None, sa_type=String(2048))
    steps_total: int = Field(default=0)
    steps_open: int = Field(default=0)  # steps not finished
    steps_failed: int = Field(default=0)
    steps_cancelled: int = Field(default=0)
    cancel_requested: bool = Field(default=False, sa_type=Boolean)
    idempotency_key: str | None = Field(default=None, sa_type=String(400))
    request_hash: str | None = Field(default=None, sa_type=String(64))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class ParentFailure(enum.StrEnum):
    """What a step does when the parent of one of its edges fails or is cancelled."""

    CANCEL = "cancel"  # it is cancelled too, and so are its own descendants through such edges
    RUN = "run"  # it runs anyway, once its other parents allow


class RunEdge(SQLModel, table=True):
    """`child_id` waits for `parent_id` (both jobs of `run_id`)."""

    __tablename__ = "run_edges"
    __table_args__ = (Index("ix_run_edges_child", "child_id"),)

    parent_id: uuid.UUID = Field(primary_key=True, sa_type=Uuid)
    child_id: uuid.UUID = Field(primary_key=True, sa_type=Uuid)
    run_id: uuid.UUID = Field(sa_type=Uuid)
    on_failure: str = Field(default=ParentFailure.CANCEL.value, sa_type=String(8))


class RunEvent(SQLModel, table=True):
    """A run's own history: submitted, cancel requested, finished, reopened by a retried step."""

    __tablename__ = "run_events"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    run_id: uuid.UUID = Field(sa_type=Uuid, index=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    type: str = Field(sa_type=String(32))
    from_status: str | None = Field(default=None, sa_type=String(16))
    to_status: str = Field(sa_type=String(16))
    detail: dict[str, Any] | None = Field(default=None, sa_type=JSONType)


class AuditEntry(SQLModel, table=True):
    """One change to an API key or a budget, or a callback re-sent, with the caller that made it
    (issue 14, item 2).

    Append-only: written by the resolver in the transaction of the change, never updated."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    actor: str = Field(sa_type=String(64))  # the caller's principal id (`key:<id>`, `static:...`, `dev`)
    action: str = Field(sa_type=String(32))  # key.created, key.revoked, budget.set, delivery.resent, ...
    target_kind: str = Field(sa_type=String(16))  # api_key, budget, delivery
    target_id: str = Field(sa_type=String(64))
    detail: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
