"""The durable job queue, kept in the database itself. Only this package speaks queue SQL.

Every function takes a `Session` already in a write transaction (`Database.write`/`write_sync`) and
writes each state change's job event in that same transaction.
"""

from levqor.queue.claim import ClaimedJob, claim_jobs
from levqor.queue.control import cancel, force_complete, retry
from levqor.queue.events import enqueue
from levqor.queue.intake import enqueue_many
from levqor.queue.lease import Heartbeat, Lease, heartbeat, heartbeat_many, reap_expired
from levqor.queue.outcomes import (
    DEFAULT_BACKOFF,
    LEASE_LOST,
    Backoff,
    Outcome,
    OutcomeKind,
    cancelled,
    complete,
    complete_many,
    fail,
    record_outcomes,
    release,
)
from levqor.queue.wakeup import Wakeup, mark_claimable, notify_local
from levqor.queue.workers import mark_worker_stopped, record_worker, touch_worker

__all__ = [
    "DEFAULT_BACKOFF",
    "LEASE_LOST",
    "Backoff",
    "ClaimedJob",
    "Heartbeat",
    "Lease",
    "Outcome",
    "OutcomeKind",
    "Wakeup",
    "cancel",
    "cancelled",
    "claim_jobs",
    "complete",
    "complete_many",
    "enqueue",
    "enqueue_many",
    "fail",
    "force_complete",
    "heartbeat",
    "heartbeat_many",
    "mark_claimable",
    "mark_worker_stopped",
    "notify_local",
    "reap_expired",
    "record_outcomes",
    "record_worker",
    "release",
    "retry",
    "touch_worker",
]
