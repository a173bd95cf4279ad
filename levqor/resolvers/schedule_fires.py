"""Firing schedules: each fire submits an ordinary job through intake (`levqor.resolvers.jobs`:
scopes, validation, budgets and an Idempotency-Key all apply) as the schedule's owner, and records
the fire with its job, or with intake's refusal, in the same transaction.

Exactly one fire per tick, whatever the number of scheduler processes and machines: the fire row is
unique per (schedule, fire_time), and the job is stored in the transaction that inserts it, so a
second process's insert conflicts and it stores nothing. The schedule's row is locked for the fire
(`FOR UPDATE SKIP LOCKED` on PostgreSQL, SQLite's single writer), so the others mostly skip it
rather than conflict; the unique row is what guarantees it.

Ticks more than `LEVQOR_SCHEDULER_GRACE_S` late are missed (no scheduler ran): `skip` fires none of
them, `run_once` fires one job for all of them. Later ticks fire one each, late."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from levqor.callbacks.guard import HostResolver
from levqor.config import Settings
from levqor.db.engine import Database
from levqor.db.models import ApiKey, FireKind, MissedFire, Schedule, ScheduleFire
from levqor.db.principals import managed_key_id
from levqor.db.types import utcnow
from levqor.errors import LevqorError, Unauthorized
from levqor.resolvers.context import DEV_PRINCIPAL, Context, Principal, Scope
from levqor.resolvers.jobs import PreparedSubmit, prepare_submit
from levqor.resolvers.keys import any_managed_key
from levqor.scheduling.cadence import MAX_LISTED_TICKS, Cadence

logger = logging.getLogger(__name__)

DUE_BATCH = 100  # schedules looked at per pass of the loop
CLI_OWNER = "cli"  # `levqor schedules ...` acts as the operator


def cadence_of(schedule: Schedule) -> Cadence:
    return Cadence(schedule.cron, schedule.every_s, schedule.timezone, schedule.anchor_at)


@dataclass(frozen=True, slots=True)
class PlannedFire:
    fire_time: datetime
    kind: FireKind
    ticks: int  # the ticks it stands for


@dataclass(frozen=True, slots=True)
class FirePlan:
    fires: list[PlannedFire]
    skipped: int  # missed ticks that fire nothing (`skip`)
    next_fire_at: datetime


def plan_fires(
    cadence: Cadence, next_fire_at: datetime, now: datetime, *, grace: timedelta, on_missed: MissedFire
) -> FirePlan:
    """What to fire for the ticks from `next_fire_at` up to `now`, and the tick after them: ticks
    older than `now - grace` are missed, the others fire one each."""
    cutoff = now - grace
    missed, last_missed = cadence.count_before(next_fire_at, cutoff)
    tick = next_fire_at if last_missed is None else cadence.next_after(last_missed)
    on_time: list[datetime] = []
    while tick <= now and len(on_time) < MAX_LISTED_TICKS:
        on_time.append(tick)
        tick = cadence.next_after(tick)
    if tick <= now:  # more ticks within the grace than one pass fires: the next pass goes on
        tick = on_time.pop()
    fires: list[PlannedFire] = []
    if missed and on_missed is MissedFire.RUN_ONCE:
        assert last_missed is not None
        fires.append(PlannedFire(last_missed, FireKind.MISSED, missed))
    fires.extend(PlannedFire(tick_, FireKind.TICK, 1) for tick_ in on_time)
    skipped = missed if on_missed is MissedFire.SKIP else 0
    return FirePlan(fires=fires, skipped=skipped, next_fire_at=tick)


def owner_principal(session: Session, settings: Settings, owner: str) -> Principal:
    """The caller a schedule's fires submit as: who set its job last, as that caller is now (a
    revoked key's schedule fires nothing, and says why on each fire)."""
    key_id = managed_key_id(owner)
    if key_id is not None:
        key = session.get(ApiKey, key_id)
        if key is None or key.revoked_at is not None:
            raise Unauthorized("the API key that set this schedule's job has been revoked")
        if key.expires_at is not None and key.expires_at <= utcnow():
            raise Unauthorized("the API key that set this schedule's job has expired")
        return Principal(
            id=owner,
            scopes=frozenset(key.scopes),
            key_id=str(key.id),
            rate_limit=key.rate_limit,
            has_webhook_secret=key.webhook_secret is not None,
        )
    if owner == CLI_OWNER:
        return Principal(id=CLI_OWNER, scopes=Scope.ALL)
    if owner.startswith("static:"):
        from levqor.resolvers.auth import static_principal

        for secret in settings.api_keys:
            principal = static_principal(secret)
            if principal.id == owner:
                return principal
        raise Unauthorized("the API_KEYS key that set this schedule's job is no longer configured")
    if owner == DEV_PRINCIPAL.id:
        if settings.is_production or settings.api_keys or any_managed_key(session):
            raise Unauthorized(
                "this schedule's job was set in development mode, which has ended: set it again with a key"
            )
        return DEV_PRINCIPAL
    raise Unauthorized("this schedule's owner is not a caller this server knows")


def error_of(exc: LevqorError) -> dict[str, str]:
    return {"error": exc.code, "message": exc.message}


@dataclass(frozen=True, slots=True)
class Submission:
    """A schedule's job as intake checked it before the transaction: ready, or refused."""

    prepared: PreparedSubmit | None
    refusal: LevqorError | None


async def prepare_fire(
    db: Database, settings: Settings, schedule: Schedule, resolver: HostResolver | None
) -> Submission:
    try:
        principal = await db.read(lambda session: owner_principal(session, settings, schedule.owner))
        ctx = Context(db=db, settings=settings, principal=principal, resolver=resolver)
        return Submission(prepared=await prepare_submit(ctx, schedule.job), refusal=None)
    except LevqorError as exc:
        return Submission(prepared=None, refusal=exc)


@dataclass(frozen=True, slots=True)
class FireOutcome:
    fire: ScheduleFire
    refusal: LevqorError | None  # why intake stored no job (also on `fire.error`)


def record_fire(
    session: Session, schedule: Schedule, planned: PlannedFire, submission: Submission
) -> FireOutcome | None:
    """Insert the fire and store its job, in the caller's transaction; None when another process
    fired this tick already. Intake's refusal is recorded on the fire, not raised."""
    fire = ScheduleFire(
        schedule_id=schedule.id,
        fire_time=planned.fire_time,
        kind=planned.kind.value,
        ticks=planned.ticks,
        fired_at=utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(fire)
            session.flush()
    except IntegrityError:
        session.expunge(fire)
        return None
    refusal = submission.refusal
    if submission.prepared is None:
        assert refusal is not None
        fire.error = error_of(refusal)
    else:
        # The tick's own key, so even a job stored outside this fire's row is not stored twice.
        keyed = submission.prepared.keyed(f"schedule:{schedule.id}:{planned.fire_time.isoformat()}")
        try:
            with session.begin_nested():
                fire.job_id = keyed.store(session).job.id
        except LevqorError as exc:
            refusal = exc
            fire.error = error_of(exc)
    session.add(fire)
    session.flush()
    if fire.error is not None:
        logger.info(
            "a schedule's fire was refused by intake",
            extra={"schedule_id": str(schedule.id), "fire_time": planned.fire_time.isoformat(), **fire.error},
        )
    return FireOutcome(fire=fire, refusal=refusal)


def _locked(session: Session, schedule_id: uuid.UUID) -> Schedule | None:
    return session.exec(
        select(Schedule).where(Schedule.id == schedule_id).with_for_update(skip_locked=True)
    ).first()


async def fire_schedule(
    db: Database,
    settings: Settings,
    schedule: Schedule,
    now: datetime,
    resolver: HostResolver | None = None,
) -> list[ScheduleFire]:
    """Fire what is due of one schedule at `now`; what this process fired."""
    submission = await prepare_fire(db, settings, schedule, resolver)
    grace = timedelta(seconds=settings.scheduler_grace_s)

    def run(session: Session) -> list[ScheduleFire]:
        row = _locked(session, schedule.id)
        # Paused, deleted, fired or changed since it was read: nothing, or the next pass.
        if (
            row is None
            or not row.enabled
            or row.next_fire_at is None
            or row.next_fire_at > now
            or row.updated_at != schedule.updated_at
        ):
            return []
        plan = plan_fires(
            cadence_of(row), row.next_fire_at, now, grace=grace, on_missed=MissedFire(row.on_missed)
        )
        fired = [
            outcome.fire
            for planned in plan.fires
            if (outcome := record_fire(session, row, planned, submission)) is not None
        ]
        if plan.skipped:
            logger.info(
                "a schedule skipped missed ticks",
                extra={"schedule_id": str(row.id), "skipped": plan.skipped},
            )
        row.next_fire_at = plan.next_fire_at
        session.add(row)
        return fired

    return await db.write(run)


async def fire_due(
    db: Database, settings: Settings, now: datetime | None = None, resolver: HostResolver | None = None
) -> int:
    """One pass of the scheduler: fire every due schedule; the number of fires this process stored."""
    at = now or utcnow()

    def due(session: Session) -> list[Schedule]:
        return list(
            session.exec(
                select(Schedule)
                .where(col(Schedule.enabled).is_(True), col(Schedule.next_fire_at) <= at)
                .order_by(col(Schedule.next_fire_at))
                .limit(DUE_BATCH)
            )
        )

    fired = 0
    for schedule in await db.read(due):
        fired += len(await fire_schedule(db, settings, schedule, at, resolver))
    return fired
