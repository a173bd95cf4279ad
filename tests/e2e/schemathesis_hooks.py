"""Schemathesis hooks for tests/e2e/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import schemathesis

CLAIM_PATH = "/api/v1/workers/claim"
# A claim long-polls up to wait_s (30 s) when no job is ready: a valid wait, but one that would
# spend the run's whole budget waiting. Shorter waits exercise the same code.
MAX_TEST_WAIT_S = 0.2


@schemathesis.hook("before_call")
def _short_claim_wait(
    context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]
) -> None:
    body = case.body
    if case.path != CLAIM_PATH or not isinstance(body, dict):
        return
    wait = body.get("wait_s")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > MAX_TEST_WAIT_S:
        body["wait_s"] = MAX_TEST_WAIT_S


INTAKE_PATH = "/api/v1/intake"
# A user the test created first; see `_use_known_user`.
USER_ID_VARIABLE = "LEVQOR_FUZZ_USER_ID"


@schemathesis.hook("before_call")
def _use_known_user(
    context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]
) -> None:
    """A job's `user_id` must name an existing user (400 otherwise), which no schema can say: a
    well-formed one is replaced by a user that exists, malformed ones are left to be refused."""
    body = case.body
    user_id = os.environ.get(USER_ID_VARIABLE)
    if case.path != INTAKE_PATH or not isinstance(body, dict) or user_id is None:
        return
    value = body.get("user_id")
    if isinstance(value, str):
        try:
            uuid.UUID(value)
        except ValueError:
            return
        body["user_id"] = user_id


KEYS_PATH = "/api/v1/keys"


@schemathesis.hook("before_call")
def _future_expiry(
    context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]
) -> None:
    """A new key's `expires_at` must be in the future (400 otherwise), which no schema can say: a
    well-formed instant in the past is moved a day ahead, malformed ones are left to be refused."""
    body = case.body
    if case.path != KEYS_PATH or case.method.upper() != "POST" or not isinstance(body, dict):
        return
    value = body.get("expires_at")
    if not isinstance(value, str):
        return
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    if instant <= now:
        body["expires_at"] = (now + timedelta(days=1)).isoformat()


BUDGETS_PATH = "/api/v1/budgets/"


@schemathesis.hook("before_call")
def _soft_limit_within_limit(
    context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]
) -> None:
    """A budget's `soft_limit_micros` must not pass its `limit_micros` (400 otherwise), which no
    schema can say: a well-formed soft limit above the limit is lowered to it."""
    body = case.body
    if not case.path.startswith(BUDGETS_PATH) or case.method.upper() != "PUT" or not isinstance(body, dict):
        return
    limit, soft = body.get("limit_micros"), body.get("soft_limit_micros")
    if _is_number(limit) and _is_number(soft) and soft > limit:
        body["soft_limit_micros"] = limit


USAGE_PATH = "/api/v1/usage"
USAGE_MAX_DAYS = 366


@schemathesis.hook("before_call")
def _usage_range_in_bounds(
    context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]
) -> None:
    """The usage range must run forwards and span at most 366 days (400 otherwise), which no schema
    can say: well-formed days outside that are moved inside it, malformed ones are left to be refused."""
    query = case.query
    if case.path != USAGE_PATH or not isinstance(query, dict):
        return
    start, end = _day(query.get("from")), _day(query.get("to"))
    if start is False or end is False or (start is None and end is None):
        return
    today = datetime.now(UTC).date()
    end = end or today
    start = start or end - timedelta(days=29)
    if start > end or (end - start).days >= USAGE_MAX_DAYS:
        query["from"] = (end - timedelta(days=USAGE_MAX_DAYS - 1)).isoformat()


def _day(value: Any) -> date | Literal[False] | None:
    """A well-formed `YYYY-MM-DD`, None when absent, False when malformed."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        return date.fromisoformat(value)
    except ValueError:
        return False


def _is_number(value: Any) -> bool:
    """A JSON number: the server takes whole numbers spelled `845.0` as integers too."""
    return isinstance(value, int | float) and not isinstance(value, bool)


SCHEDULES_PATH = "/api/v1/schedules"
A_VALID_CRON = "*/5 * * * *"


@schemathesis.hook("before_call")
def _schedules_firable_and_known(
    context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]
) -> None:
    """A cron expression's fields must hold values cron allows (minute 0-59, a day the month has),
    and a job's `user_id` must name a user, which no schema can say: a well-formed expression cron
    refuses is replaced by one it takes, and a well-formed user id by a user that exists;
    malformed ones are left to be refused."""
    body = case.body
    if not case.path.startswith(SCHEDULES_PATH) or not isinstance(body, dict):
        return
    import re

    from levqor.scheduling.cadence import CRON_PATTERN, check_cron

    cron = body.get("cron")
    if isinstance(cron, str) and re.fullmatch(CRON_PATTERN, cron):
        try:
            check_cron(cron)
        except ValueError:
            body["cron"] = A_VALID_CRON
    job = body.get("job")
    user_id = os.environ.get(USER_ID_VARIABLE)
    if isinstance(job, dict) and isinstance(job.get("user_id"), str) and user_id is not None:
        try:
            uuid.UUID(job["user_id"])
        except ValueError:
            return
        job["user_id"] = user_id


RUNS_PATH = "/api/v1/runs"


@schemathesis.hook("before_call")
def _runs_form_a_graph(
    context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]
) -> None:
    """A run's steps must have distinct keys and depend only on keys of the run, without a cycle,
    and a step's `user_id` must name a user, which no schema can say: a well-formed key that repeats
    one before it is renamed, a well-formed dependency is kept only when it names an earlier step
    (so the steps cannot form a cycle), and a well-formed user id is replaced by a user that exists.
    Malformed ones are left to be refused."""
    body = case.body
    if case.path != RUNS_PATH or not isinstance(body, dict) or not isinstance(body.get("steps"), list):
        return
    import re

    from levqor.resolvers.runs import STEP_KEY_PATTERN

    def well_formed(key: Any) -> bool:
        return isinstance(key, str) and re.fullmatch(STEP_KEY_PATTERN, key) is not None

    user_id = os.environ.get(USER_ID_VARIABLE)
    earlier: set[str] = set()
    for index, step in enumerate(body["steps"]):
        if not isinstance(step, dict):
            continue
        if well_formed(step.get("key")) and step["key"] in earlier:
            step["key"] = f"step-{index}"
        depends_on = step.get("depends_on")
        if isinstance(depends_on, list):
            kept: list[Any] = []
            named: set[str] = set()
            for item in depends_on:
                key = item.get("key") if isinstance(item, dict) else item
                if not well_formed(key):
                    kept.append(item)
                elif key in earlier and key not in named:
                    kept.append(item)
                    named.add(key)
            step["depends_on"] = kept
        if well_formed(step.get("key")):
            earlier.add(step["key"])
        if isinstance(step.get("user_id"), str) and user_id is not None:
            try:
                uuid.UUID(step["user_id"])
            except ValueError:
                continue
            step["user_id"] = user_id
