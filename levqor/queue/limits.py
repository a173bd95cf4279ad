"""Concurrency limits (CONTRACT.md §9, issue 12): at most `max_running` jobs of an API key, and of a
workflow, run at once, however many workers claim.

A job that a limit applies to is marked `concurrency_limited` when it is stored, and the marked jobs
stay out of the claim index `ix_jobs_claimable`: the ordinary claim never meets them, so jobs without
a limit are claimed by the same one statement as before limits existed. The marked ones are claimed
here, one limit (a group: a key, or a workflow) at a time:

- the queued and due marked jobs are read by (key, workflow), through `ix_jobs_limited_queued`;
- each group they fall in is locked for the rest of the transaction, tried without waiting
  (PostgreSQL's `pg_try_advisory_xact_lock`; SQLite's write transaction already holds the database's
  one writer lock): a group another claimer holds is skipped this round, not waited for;
- the group's running jobs are counted (`ix_jobs_limited_running`; the lock is taken before the count,
  so the count sees every claim of the group's earlier holders, committed before they let go);
- at most limit - running jobs are claimed, a job needing room in both its key's and its
  workflow's groups. A full group is skipped, so other keys' jobs, limited or not, are claimed in
  the same round.

A process asks for marked jobs only while it has reason to think some wait: after its own intake
stored one, while the last look found some, and otherwise once a second (`LIMITED_LOOK_INTERVAL_S`),
which is as late as a worker in another process hears of a limited job when nothing here is limited.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, false, func, literal, select, text, true, update
from sqlmodel import Session, col

from levqor.db.models import LIMITED_RUNNING_WHERE, ApiKey, JobStatus
from levqor.db.principals import managed_key_id, managed_principal_id
from levqor.queue.claimable import JOBS, limited_claimable

LIMITED_LOOK_INTERVAL_S = 1.0  # how stale this process's "no limited job waits" may be
# How often a claimer with workflow limits marks the jobs of those workflows that were stored
# unmarked (by a process whose settings lacked the limit); each pass reads every queued job.
UNMARKED_SWEEP_INTERVAL_S = 30.0
# The advisory lock space of the groups (`pg_try_advisory_xact_lock(int, int)`): "LVQ" in ASCII.
LOCK_SPACE = 0x4C5651

LIMITED_RUNNING = text(LIMITED_RUNNING_WHERE)
_OPEN_STATUSES = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


class LimitedWork:
    """What one process knows of the marked jobs of one database: whether some may be waiting."""

    def __init__(self) -> None:
        self.maybe_waiting = True  # a new process looks at once
        self.look_at = 0.0  # time.monotonic() of the next look when none seemed to wait
        self.swept_at = -UNMARKED_SWEEP_INTERVAL_S

    def worth_a_look(self, now_s: float) -> bool:
        return self.maybe_waiting or now_s >= self.look_at

    def looked(self, found: bool, now_s: float) -> None:
        self.maybe_waiting = found
        self.look_at = now_s + LIMITED_LOOK_INTERVAL_S


_work: weakref.WeakKeyDictionary[Engine, LimitedWork] = weakref.WeakKeyDictionary()


def limited_work(session: Session) -> LimitedWork:
    engine = session.get_bind().engine
    work = _work.get(engine)
    if work is None:
        work = _work[engine] = LimitedWork()
    return work


def note_limited(session: Session) -> None:
    """A marked job was stored or requeued here: this process's claimers look for it at once."""
    limited_work(session).maybe_waiting = True


def limited_keys(session: Session, key_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Which of `key_ids` have a `max_running`, read in the intake's transaction. On PostgreSQL the
    rows are share-locked, so a change of a key's limit waits for the intake to commit, and then marks
    its jobs too (`mark_key_jobs`); read before the change or after, a job cannot be missed."""
    if not key_ids:
        return set()
    # Every key row, not only those with a limit: a row the WHERE left out would not be locked, and
    # a limit being set at this moment would not be waited for.
    statement = select(col(ApiKey.id), col(ApiKey.max_running)).where(col(ApiKey.id).in_(list(key_ids)))
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(read=True)
    return {row.id for row in session.execute(statement) if row.max_running is not None}


def mark_key_jobs(
    session: Session, key_id: uuid.UUID, *, limited: bool, workflow_limits: Collection[str]
) -> int:
    """After a key's limit was set (`limited`) or lifted: mark, or unmark, its queued and running
    jobs, in the transaction that changed the key. Running ones count against the new limit; a job
    whose workflow is limited stays marked."""
    c = JOBS.c
    owned = and_(c.submitted_by == managed_principal_id(key_id), c.status.in_(_OPEN_STATUSES))
    flag = c.concurrency_limited
    if limited:
        statement = update(JOBS).where(owned, flag == false()).values(concurrency_limited=True)
    else:
        statement = update(JOBS).where(owned, flag == true()).values(concurrency_limited=False)
        if workflow_limits:
            statement = statement.where(c.workflow.not_in(list(workflow_limits)))
    changed = len(session.execute(statement.returning(c.seq)).all())
    if changed and limited:
        note_limited(session)
    return changed


def sweep_unmarked(session: Session, workflow_limits: Collection[str], now_s: float) -> None:
    """Mark the queued and running jobs of limited workflows stored unmarked, every
    `UNMARKED_SWEEP_INTERVAL_S` (ordinary claims leave those workflows alone meanwhile)."""
    work = limited_work(session)
    if not workflow_limits or now_s - work.swept_at < UNMARKED_SWEEP_INTERVAL_S:
        return
    work.swept_at = now_s
    c = JOBS.c
    statement = (
        update(JOBS)
        .where(c.status.in_(_OPEN_STATUSES), c.concurrency_limited == false())
        .where(c.workflow.in_(list(workflow_limits)))
        .values(concurrency_limited=True)
    )
    if session.execute(statement.returning(c.seq)).first() is not None:
        work.maybe_waiting = True


@dataclass(frozen=True, slots=True)
class _Group:
    kind: str  # "key" or "workflow"
    name: str  # the principal id, or the workflow's name

    @property
    def lock_name(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(slots=True)
class _Pair:
    """The queued, due, marked jobs of one (key, workflow)."""

    submitted_by: str | None
    workflow: str
    groups: list[_Group] = field(default_factory=list)


def pick_limited(
    session: Session,
    *,
    workflows: Sequence[str] | None,
    max_jobs: int,
    now: datetime,
    workflow_limits: Mapping[str, int],
) -> list[int]:
    """The `seq`s of the marked jobs this claim may take, at most `max_jobs`, within every limit."""
    work = limited_work(session)
    now_s = time.monotonic()
    if not work.worth_a_look(now_s):
        return []
    sweep_unmarked(session, workflow_limits.keys(), now_s)
    c = JOBS.c
    due = limited_claimable(workflows, now)
    heads = session.execute(
        select(
            c.submitted_by, c.workflow, func.min(c.priority).label("priority"), func.min(c.seq).label("seq")
        )
        .where(due)
        .group_by(c.submitted_by, c.workflow)
    ).all()
    work.looked(bool(heads), now_s)
    if not heads:
        return []
    heads = sorted(heads, key=lambda row: (row.priority, row.seq))
    key_limits = _key_limits(session, {row.submitted_by for row in heads})
    limits: dict[_Group, int] = {}
    pairs: list[_Pair] = []
    for row in heads:
        pair = _Pair(row.submitted_by, row.workflow)
        if row.submitted_by in key_limits:
            group = _Group("key", row.submitted_by)
            limits[group] = key_limits[row.submitted_by]
            pair.groups.append(group)
        if row.workflow in workflow_limits:
            group = _Group("workflow", row.workflow)
            limits[group] = workflow_limits[row.workflow]
            pair.groups.append(group)
        pairs.append(pair)
    held = _lock(session, list(limits))
    room = {group: limits[group] for group in held}
    for submitted_by, workflow, running in _running(session):
        for group in (_Group("key", submitted_by or ""), _Group("workflow", workflow)):
            if group in room:
                room[group] -= running
    picked: list[int] = []
    for pair in pairs:
        wanted = max_jobs - len(picked)
        if wanted <= 0:
            break
        if any(group not in room for group in pair.groups):
            continue  # another claimer holds one of its limits this round
        # A pair no limit applies to any more (a key whose limit was lifted meanwhile) is taken freely.
        allowed = min([wanted, *(room[group] for group in pair.groups)])
        if allowed <= 0:
            continue  # full: the next pair, another key's or another workflow's, may have room
        owner = c.submitted_by.is_(None) if pair.submitted_by is None else c.submitted_by == pair.submitted_by
        seqs = list(
            session.execute(
                select(c.seq)
                .where(due, owner, c.workflow == pair.workflow)
                .order_by(c.priority, c.run_at, c.seq)
                .limit(allowed)
            ).scalars()
        )
        for group in pair.groups:
            room[group] -= len(seqs)
        picked.extend(seqs)
    return picked


def _key_limits(session: Session, principals: Iterable[str | None]) -> dict[str, int]:
    """The `max_running` of each managed key among `principals`, read now, so a changed limit holds
    from the next claim on."""
    ids = {
        key_id: principal
        for principal in principals
        if principal is not None and (key_id := managed_key_id(principal)) is not None
    }
    if not ids:
        return {}
    rows = session.execute(
        select(col(ApiKey.id), col(ApiKey.max_running)).where(
            col(ApiKey.id).in_(list(ids)), col(ApiKey.max_running).is_not(None)
        )
    )
    return {ids[row.id]: row.max_running for row in rows}


def _lock(session: Session, groups: list[_Group]) -> list[_Group]:
    """The groups this transaction now holds; on PostgreSQL those whose lock was free."""
    if not groups or session.get_bind().dialect.name != "postgresql":
        return groups
    tries = [
        func.pg_try_advisory_xact_lock(literal(LOCK_SPACE), func.hashtext(literal(group.lock_name)))
        for group in groups
    ]
    got: Any = session.execute(select(*tries)).one()
    return [group for group, held in zip(groups, got, strict=True) if held]


def _running(session: Session) -> list[tuple[str | None, str, int]]:
    c = JOBS.c
    statement = (
        select(c.submitted_by, c.workflow, func.count())
        .where(LIMITED_RUNNING)
        .group_by(c.submitted_by, c.workflow)
    )
    return [(row[0], row[1], int(row[2])) for row in session.execute(statement)]
