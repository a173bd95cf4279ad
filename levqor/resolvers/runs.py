"""Runs: graphs of jobs submitted at once (CONTRACT.md §7).

A run is a list of steps, each an intake body with a `key` and the keys it `depends_on`. Every step
passes intake's checks (workflow, payload, callback, user), the graph is checked (duplicate and
unknown keys, cycles, each named), and then, in one transaction, every step's estimate is reserved
against its budgets and every step is stored with its edges: a run either starts whole or is refused
whole, never half-started. A step is an ordinary job, claimed when the parents it waits for have
finished (levqor/queue/steps.py).
"""

from __future__ import annotations

import graphlib
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import insert, select, update
from sqlmodel import Session, col

from levqor.callbacks.attempts import DeliveryRecord, deliveries_of_job
from levqor.callbacks.secrets import can_sign
from levqor.costs.ledger import Grant, reserve
from levqor.costs.metrics import BUDGET_REFUSALS
from levqor.db.models import Job, JobStatus, ParentFailure, Run, RunEdge, RunEvent, RunStatus, User
from levqor.db.principals import managed_key_id
from levqor.db.types import utcnow
from levqor.errors import BudgetExceeded, Conflict, FieldCode, InvalidRequest, NotFound
from levqor.queue.events import event_row, insert_events
from levqor.queue.intake import apply_grant, ask_of, insert_jobs, job_row, mark_limited
from levqor.queue.steps import (
    EDGES,
    JOBS,
    RUN_CANCELLED,
    RUNS,
    cancel_waiting,
    count_on_runs,
    insert_run_events,
    run_event_row,
)
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.jobs import (
    IDEMPOTENCY_WINDOW,
    UNSIGNED_CALLBACK,
    JobSubmitInput,
    PreparedSubmit,
    check_callback_url,
    check_idempotency_key,
    prepare_fields,
    store_once,
)
from levqor.resolvers.validation import parse_id, parse_input

MAX_RUN_STEPS = 1000
STEP_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
StepKey = Annotated[str, StringConstraints(pattern=STEP_KEY_PATTERN)]


class DependencyInput(BaseModel):
    """An edge: the step waits for `key`; `on_failure` says what it does if `key` fails or is
    cancelled: `cancel` (the default) cancels it too, `run` lets it run anyway."""

    model_config = ConfigDict(extra="forbid", strict=True)

    key: StepKey
    on_failure: Annotated[ParentFailure, Field(strict=False)] = ParentFailure.CANCEL


class RunStepInput(JobSubmitInput):
    """One step: an intake body, its key in the run, and the keys it depends on (each a key, or
    `{key, on_failure}`). A run is admitted or refused whole, so its steps cannot defer."""

    key: StepKey
    depends_on: Annotated[list[StepKey | DependencyInput], Field(max_length=MAX_RUN_STEPS)] = Field(
        default_factory=list
    )
    budget_policy: Literal["reject"] = "reject"

    def edges(self) -> list[DependencyInput]:
        return [DependencyInput(key=item) if isinstance(item, str) else item for item in self.depends_on]


class RunSubmitInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    steps: Annotated[list[RunStepInput], Field(min_length=1, max_length=MAX_RUN_STEPS)]
    # Called once, when the whole run has finished (each step may have a callback of its own).
    callback_url: Annotated[AnyHttpUrl | None, Field(strict=False)] = None

    @field_validator("callback_url")
    @classmethod
    def _callback_length(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if value is not None and len(str(value)) > 2048:
            raise ValueError("callback_url must be at most 2048 characters")
        return value


@dataclass(frozen=True, slots=True)
class RunSubmitted:
    run: Run
    jobs: dict[str, uuid.UUID]  # each step's job, by key
    created: bool  # False when an Idempotency-Key returned the run of an earlier request


@dataclass(frozen=True, slots=True)
class RunView:
    """A run with its steps (jobs, in the order they were stored: parents before children), its
    edges, events and callback deliveries."""

    run: Run
    steps: list[Job]
    edges: list[RunEdge]
    events: list[RunEvent]
    deliveries: list[DeliveryRecord]

    @property
    def status(self) -> RunStatus:
        """Stored once terminal; before that `running` as soon as a step has started or finished."""
        stored = RunStatus(self.run.status)
        if stored.is_terminal:
            return stored
        if self.run.steps_open < self.run.steps_total or any(
            step.status != JobStatus.QUEUED.value or step.attempts > 0 for step in self.steps
        ):
            return RunStatus.RUNNING
        return RunStatus.QUEUED

    def depends_on(self, job_id: uuid.UUID) -> list[tuple[str, str]]:
        """(parent key, on_failure) of each edge into `job_id`."""
        keys = {step.id: step.step_key or "" for step in self.steps}
        return [(keys[edge.parent_id], edge.on_failure) for edge in self.edges if edge.child_id == job_id]

    @property
    def counts(self) -> dict[str, int]:
        """How many steps are in each job state."""
        counts = {status.value: 0 for status in JobStatus}
        for step in self.steps:
            counts[step.status] += 1
        return counts

    @property
    def cost_estimate_micros(self) -> int | None:
        return _sum(step.cost_estimate_micros for step in self.steps)

    @property
    def cost_actual_micros(self) -> int | None:
        return _sum(step.cost_actual_micros for step in self.steps)

    @property
    def reserved_micros(self) -> int | None:
        """What the budgets hold for the steps not finished yet (None: no budget applies)."""
        return _sum(step.reserved_micros for step in self.steps if not step.job_status.is_terminal)


def _sum(values: Any) -> int | None:
    present = [value for value in values if value is not None]
    return sum(present) if present else None


def _within(index: int, error: InvalidRequest) -> InvalidRequest:
    """`error` of step `index`, its fields named from the run's body (`steps.3.payload.x`)."""
    prefix = f"steps.{index}"
    details = [
        {**detail, "field": f"{prefix}.{detail['field']}" if detail.get("field") else prefix}
        for detail in error.details
    ]
    return InvalidRequest(f"{prefix}.{error.message}", details=details)


def _order(steps: Sequence[RunStepInput]) -> list[int]:
    """The steps' indexes, parents before children; InvalidRequest naming a duplicate key, an
    unknown or repeated dependency, or a cycle."""
    index: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.key in index:
            raise InvalidRequest.for_field(
                f"steps.{i}.key", f"step '{step.key}' is already steps.{index[step.key]}"
            )
        index[step.key] = i
    problems = []
    for i, step in enumerate(steps):
        seen: set[str] = set()
        for j, edge in enumerate(step.edges()):
            field = f"steps.{i}.depends_on.{j}"
            if edge.key not in index:
                problems.append({"field": field, "message": f"no step '{edge.key}' in this run"})
            elif edge.key in seen:
                problems.append({"field": field, "message": f"'{edge.key}' is named twice"})
            seen.add(edge.key)
    if problems:
        raise InvalidRequest(
            f"{problems[0]['field']}: {problems[0]['message']}",
            details=[{**problem, "code": FieldCode.INVALID} for problem in problems],
        )
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for step in steps:
        sorter.add(step.key, *(edge.key for edge in step.edges()))
    try:
        return [index[key] for key in sorter.static_order()]
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        message = "the steps depend on each other in a cycle: " + " -> ".join(reversed(cycle))
        raise InvalidRequest(
            message,
            details=[{"field": "steps", "message": message, "code": FieldCode.INVALID, "cycle": cycle}],
        ) from None


@dataclass(frozen=True, slots=True)
class PreparedRun:
    principal_id: str
    fields: RunSubmitInput
    steps: list[tuple[RunStepInput, PreparedSubmit]]  # in the order they are stored
    scoped_key: str | None = None
    request_hash: str | None = None

    def keyed(self, idempotency_key: str | None) -> PreparedRun:
        if idempotency_key is None:
            return self
        canonical = json.dumps(self.fields.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return replace(
            self,
            scoped_key=f"{self.principal_id}:{check_idempotency_key(idempotency_key)}",
            request_hash=hashlib.sha256(canonical.encode()).hexdigest(),
        )

    def find_existing(self, session: Session) -> RunSubmitted | None:
        if self.scoped_key is None:
            return None
        existing = session.execute(select(Run).where(col(Run.idempotency_key) == self.scoped_key)).scalar()
        if existing is None:
            return None
        if existing.created_at < utcnow() - IDEMPOTENCY_WINDOW:
            existing.idempotency_key = None  # the window has passed: the key is free again
            session.add(existing)
            session.flush()
            return None
        if existing.request_hash != self.request_hash:
            raise Conflict("this Idempotency-Key was already used with a different request body")
        return RunSubmitted(run=existing, jobs=_job_ids(session, existing.id), created=False)

    def store(self, session: Session) -> RunSubmitted:
        found = self.find_existing(session)
        if found is not None:
            return found
        users = {step.user_id for step, _ in self.steps if step.user_id is not None}
        if users:
            known = set(session.execute(select(col(User.id)).where(col(User.id).in_(users))).scalars())
            for step, _ in self.steps:
                if step.user_id is not None and step.user_id not in known:
                    raise InvalidRequest.for_field(
                        f"steps.{self._index(step)}.user_id",
                        f"no user with id '{step.user_id}'",
                        FieldCode.NOT_FOUND,
                    )
        now = utcnow()
        run = Run(
            status=RunStatus.QUEUED.value,
            submitted_by=self.principal_id if managed_key_id(self.principal_id) is not None else None,
            callback_url=str(self.fields.callback_url) if self.fields.callback_url else None,
            steps_total=len(self.steps),
            steps_open=len(self.steps),
            idempotency_key=self.scoped_key,
            request_hash=self.request_hash,
            created_at=now,
            updated_at=now,
        )
        rows = [
            job_row(
                **prepared.values,
                **prepared.budget,
                user_id=step.user_id,
                run_at=step.run_at,
                run_id=run.id,
                step_key=step.key,
                waiting_on=len(step.edges()),
            )
            for step, prepared in self.steps
        ]
        grants = reserve(session, [ask_of(row, now) for row in rows], now)
        for (step, _), grant in zip(self.steps, grants, strict=True):
            if isinstance(grant, BudgetExceeded):
                raise _run_refusal(grant, step.key, rows)
        for row, grant in zip(rows, grants, strict=True):
            assert isinstance(grant, Grant)
            apply_grant(row, grant)
        mark_limited(session, rows)
        insert_jobs(session, rows)
        ids = {step.key: row["id"] for (step, _), row in zip(self.steps, rows, strict=True)}
        edges = [
            {
                "parent_id": ids[edge.key],
                "child_id": ids[step.key],
                "run_id": run.id,
                "on_failure": edge.on_failure,
            }
            for step, _ in self.steps
            for edge in step.edges()
        ]
        session.add(run)
        session.flush()
        if edges:
            session.execute(insert(EDGES), edges)
        insert_run_events(
            session,
            [
                run_event_row(
                    run.id,
                    "submitted",
                    from_status=None,
                    to_status=RunStatus.QUEUED.value,
                    at=now,
                    detail={"steps": len(rows)},
                )
            ],
        )
        return RunSubmitted(run=run, jobs=ids, created=True)

    def _index(self, step: RunStepInput) -> int:
        return next(i for i, candidate in enumerate(self.fields.steps) if candidate is step)


def _run_refusal(refused: BudgetExceeded, key: str, rows: Sequence[dict[str, Any]]) -> BudgetExceeded:
    """A budget's refusal of one step, as the refusal of the whole run."""
    total = sum(row["cost_estimate_micros"] or 0 for row in rows)
    message = (
        f"budget exceeded: this run's {len(rows)} steps are estimated at {total} micro-USD in all, and "
        f"at step '{key}' {refused.message.removeprefix('budget exceeded: ')}; no step was started"
    )
    details = [{**detail, "step": key, "run_estimate_micros": total} for detail in refused.details]
    BUDGET_REFUSALS.labels(subject=details[0]["subject"] if details else "unknown").inc()
    return BudgetExceeded(message, details=details)


def _job_ids(session: Session, run_id: uuid.UUID) -> dict[str, uuid.UUID]:
    c = JOBS.c
    rows = session.execute(select(c.step_key, c.id).where(c.run_id == run_id).order_by(c.seq))
    return {row.step_key: row.id for row in rows}


async def prepare_run(ctx: Context, data: Any) -> PreparedRun:
    ctx.principal.require(Scope.JOBS_WRITE)
    fields = parse_input(RunSubmitInput, data)
    order = _order(fields.steps)
    if fields.callback_url is not None:
        if not can_sign(ctx.principal, ctx.settings):
            raise InvalidRequest.for_field("callback_url", UNSIGNED_CALLBACK, FieldCode.INVALID)
        await check_callback_url(ctx, str(fields.callback_url))
    steps = []
    for i in order:
        step = fields.steps[i]
        try:
            prepared = await prepare_fields(ctx, step)
        except InvalidRequest as exc:
            raise _within(i, exc) from None
        steps.append((step, prepared))
    return PreparedRun(principal_id=ctx.principal.id, fields=fields, steps=steps)


async def submit_run(ctx: Context, data: Any, *, idempotency_key: str | None = None) -> RunSubmitted:
    return await store_once(ctx, (await prepare_run(ctx, data)).keyed(idempotency_key))


def _view(session: Session, run_id: uuid.UUID) -> RunView:
    run = session.get(Run, run_id, populate_existing=True)
    if run is None:
        raise NotFound(f"no run with id '{run_id}'")
    steps = list(
        session.execute(
            select(Job)
            .where(col(Job.run_id) == run_id)
            .order_by(col(Job.seq))
            .execution_options(populate_existing=True)
        ).scalars()
    )
    edges = list(session.execute(select(RunEdge).where(col(RunEdge.run_id) == run_id)).scalars())
    events = list(
        session.execute(
            select(RunEvent).where(col(RunEvent.run_id) == run_id).order_by(col(RunEvent.id))
        ).scalars()
    )
    return RunView(
        run=run, steps=steps, edges=edges, events=events, deliveries=deliveries_of_job(session, run_id)
    )


async def get_run(ctx: Context, run_id: str | uuid.UUID) -> RunView:
    ctx.principal.require(Scope.JOBS_READ)
    key = parse_id(run_id, kind="run")
    return await ctx.db.read(lambda session: _view(session, key))


async def submitted_view(ctx: Context, submitted: RunSubmitted) -> RunView:
    """The run a submit just stored (or replayed), for the caller that submitted it: `jobs:write`
    is enough to see what it made."""
    return await ctx.db.read(lambda session: _view(session, submitted.run.id))


async def cancel_run(ctx: Context, run_id: str | uuid.UUID) -> RunView:
    """Cancel what has not finished: queued steps at once, running ones through their heartbeat
    (as `cancelJob` does). The run is `cancelled` once its last step has finished; asking again
    changes nothing; a finished run is a Conflict."""
    ctx.principal.require(Scope.JOBS_WRITE)
    key = parse_id(run_id, kind="run")

    def run(session: Session) -> RunView:
        if session.get(Run, key) is None:
            raise NotFound(f"no run with id '{key}'")
        now = utcnow()
        c = JOBS.c
        # The steps first, in the order they were stored (the order the queue locks them in), then
        # the run's row, as a step's end does.
        open_steps = session.execute(
            select(c.id, c.seq, c.status, c.cancel_requested, c.attempts, c.worker_id)
            .where(c.run_id == key, c.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value)))
            .order_by(c.seq)
            .with_for_update()
        ).all()
        status = session.execute(
            select(RUNS.c.status, RUNS.c.cancel_requested).where(RUNS.c.id == key).with_for_update()
        ).one()
        if RunStatus(status.status).is_terminal:
            raise Conflict(f"run is already {status.status}; only a run with open steps can be cancelled")
        if status.cancel_requested and not any(step.status == JobStatus.QUEUED.value for step in open_steps):
            return _view(session, key)
        session.execute(update(RUNS).where(RUNS.c.id == key).values(cancel_requested=True, updated_at=now))
        insert_run_events(
            session,
            [
                run_event_row(
                    key, "cancel_requested", from_status=status.status, to_status=status.status, at=now
                )
            ],
        )
        running = [
            step
            for step in open_steps
            if step.status == JobStatus.RUNNING.value and not step.cancel_requested
        ]
        if running:
            session.execute(
                update(JOBS)
                .where(c.seq.in_([step.seq for step in running]))
                .values(cancel_requested=True, updated_at=now)
            )
            insert_events(
                session,
                [
                    event_row(
                        step.id,
                        "cancel_requested",
                        from_status=JobStatus.RUNNING.value,
                        to_status=JobStatus.RUNNING.value,
                        attempt=step.attempts,
                        worker_id=step.worker_id,
                        at=now,
                        detail={"reason": "the run was cancelled"},
                    )
                    for step in running
                ],
            )
        error = {"type": RUN_CANCELLED, "message": "the run was cancelled"}
        ended = cancel_waiting(
            session,
            {step.id: error for step in open_steps if step.status == JobStatus.QUEUED.value},
            now,
        )
        count_on_runs(session, ended, now)
        return _view(session, key)

    return await ctx.db.write(run)
