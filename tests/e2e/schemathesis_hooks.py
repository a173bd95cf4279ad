"""Schemathesis hooks for tests/e2e/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

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
