"""Managed API keys: create (the secret is shown once), list, update a key's limits, revoke, and rotate
a key's webhook secret. Only `admin` may do these.

The secret is `lvq_` and 43 url-safe characters (256 random bits); the table keeps its SHA-256 and a
short prefix to tell keys apart, never the secret itself (CONTRACT.md §5).

Each key also has a webhook secret that signs the callbacks of the jobs it submits (CONTRACT.md §8,
issue 11): `whsec_` and the base64 of 32 random bytes, the Standard Webhooks format. Signing needs
it as it is, so the table keeps it; it is answered once, when the key is made or the secret rotated,
and no read shows it again.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, field_validator
from sqlmodel import Session, col, select

from levqor.config import DEFAULT_WEBHOOK_OVERLAP_S, MAX_RUNNING_LIMIT, WEBHOOK_SECRET_PREFIX
from levqor.db.engine import Database
from levqor.db.models import ApiKey
from levqor.db.types import utcnow
from levqor.errors import Conflict, InvalidRequest, NotFound
from levqor.queue.limits import mark_key_jobs
from levqor.resolvers.audit import record_change
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.validation import WHOLE_NUMBER, parse_id, parse_input
from levqor.workflows.registry import workflow_limits

SECRET_PREFIX = "lvq_"  # noqa: S105 (a prefix, not a secret)
SECRET_RANDOM_BYTES = 32  # 256 bits, 43 url-safe characters
SHOWN_PREFIX_LEN = 12  # "lvq_" and 8 characters: enough to tell keys apart, far too few to guess the rest
WEBHOOK_SECRET_RANDOM_BYTES = 32  # 256 bits; `whsec_` and 44 base64 characters
MAX_WEBHOOK_OVERLAP_S = 7 * 24 * 3600  # a week: long enough for any receiver to roll out the new secret

KeyName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"\S")
]
MAX_RATE_LIMIT = 1_000_000  # requests per minute
# Requests per minute of a key's own (CONTRACT.md §6: every request it makes, intake included).
RateLimit = Annotated[
    int, Field(ge=1, le=MAX_RATE_LIMIT, description="Requests per minute for this key"), WHOLE_NUMBER
]
# Jobs of a key that may run at once (CONTRACT.md §9).
MaxRunning = Annotated[
    int,
    Field(ge=1, le=MAX_RUNNING_LIMIT, description="Jobs of this key that may run at once"),
    WHOLE_NUMBER,
]
# The scope names as OpenAPI's enum; `_known_scopes` refuses the others without echoing them.
ScopeName = Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(Scope.ALL)})]


def hash_secret(secret: str) -> str:
    """The stored form of a key. A fast hash is right here: the secret has 256 random bits, so there
    is nothing for a slow password hash to protect against."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_RANDOM_BYTES)


def new_webhook_secret() -> str:
    # Standard base64 with padding, as the Standard Webhooks libraries decode it.
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_RANDOM_BYTES)).decode()


class ApiKeyCreateInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: KeyName
    scopes: Annotated[list[ScopeName], Field(min_length=1, max_length=len(Scope.ALL))]
    expires_at: Annotated[
        datetime | None, Field(strict=False, description="A future instant; ISO-8601, UTC without an offset")
    ] = None
    # Requests per minute; without it the key gets LEVQOR_RATE_KEY.
    rate_limit: RateLimit | None = None
    # Jobs running at once; without it, no limit.
    max_running: MaxRunning | None = None

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: list[str]) -> list[str]:
        if any(scope not in Scope.ALL for scope in value):
            # The value is not echoed: a secret pasted into the wrong field must not come back.
            raise ValueError(f"unknown scope; the scopes are {', '.join(sorted(Scope.ALL))}")
        return sorted(set(value))

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # ISO-8601 without an offset is taken as UTC
        if value <= utcnow():
            raise ValueError("expires_at must be in the future")
        return value.astimezone(UTC)


class ApiKeyUpdateInput(BaseModel):
    """A key's limits; a field left out is kept, and null lifts it (the server's per-key rate, no
    concurrency limit)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"minProperties": 1})

    rate_limit: RateLimit | None = None
    max_running: MaxRunning | None = None


class WebhookSecretRotateInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # How long the previous secret keeps signing beside the new one; 0 ends it at once.
    overlap_s: Annotated[
        int,
        Field(ge=0, le=MAX_WEBHOOK_OVERLAP_S, description="Seconds the previous secret still signs too"),
        WHOLE_NUMBER,
    ] = DEFAULT_WEBHOOK_OVERLAP_S


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    secret: str  # shown to the caller once, never stored
    webhook_secret: str  # shown to the caller once; stored, since signing needs it


@dataclass(frozen=True, slots=True)
class RotatedWebhookSecret:
    key: ApiKey
    webhook_secret: str  # the new one, shown to the caller once


def key_is_active(key: ApiKey, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def previous_signs_until(previous: str | None, until: datetime | None, now: datetime) -> datetime | None:
    """Until when a key's previous webhook secret still signs beside its current one, or None once
    it does not (never rotated, rotated without overlap, or the overlap is over)."""
    if previous is None or until is None or now >= until:
        return None
    return until


def key_previous_signs_until(key: ApiKey, now: datetime | None = None) -> datetime | None:
    return previous_signs_until(
        key.webhook_secret_previous, key.webhook_secret_previous_until, now or utcnow()
    )


class ManagedKeyPresence:
    """Whether a database holds any managed key, as far as this process has seen.

    Development mode lasts only while there is none (CONTRACT.md §5). Keys are revoked, never
    deleted, so once one is seen the answer stays yes and costs nothing to ask again; until then
    `Authenticator.dev_mode` reads the database for every request."""

    def __init__(self) -> None:
        self.seen = False


# Per database handle, not per URL: what this process has seen through that handle. A test that empties
# a database and opens a new handle starts afresh; a handle that is dropped takes its entry with it.
_presence: weakref.WeakKeyDictionary[Database, ManagedKeyPresence] = weakref.WeakKeyDictionary()


def presence_for(db: Database) -> ManagedKeyPresence:
    presence = _presence.get(db)
    if presence is None:
        presence = _presence[db] = ManagedKeyPresence()
    return presence


def any_managed_key(session: Session) -> bool:
    return session.exec(select(ApiKey.id).limit(1)).first() is not None


def any_active_managed_key(session: Session) -> bool:
    now = utcnow()
    statement = (
        select(ApiKey.id)
        .where(col(ApiKey.revoked_at).is_(None))
        .where(col(ApiKey.expires_at).is_(None) | (col(ApiKey.expires_at) > now))
        .limit(1)
    )
    return session.exec(statement).first() is not None


async def create_api_key(ctx: Context, data: Any) -> CreatedKey:
    ctx.principal.require(Scope.ADMIN)
    fields = parse_input(ApiKeyCreateInput, data)
    secret = new_secret()
    webhook_secret = new_webhook_secret()

    def run(session: Session) -> ApiKey:
        key = ApiKey(
            name=fields.name,
            prefix=secret[:SHOWN_PREFIX_LEN],
            secret_hash=hash_secret(secret),
            scopes=fields.scopes,
            expires_at=fields.expires_at,
            rate_limit=fields.rate_limit,
            max_running=fields.max_running,
            webhook_secret=webhook_secret,
        )
        session.add(key)
        session.flush()
        record_change(
            session, ctx.principal, "key.created", "api_key", key.id, {"name": key.name, "scopes": key.scopes}
        )
        return key

    key = await ctx.db.write(run)
    presence_for(ctx.db).seen = True  # development mode ends with the first key, at once here
    return CreatedKey(key=key, secret=secret, webhook_secret=webhook_secret)


async def list_api_keys(ctx: Context) -> list[ApiKey]:
    """Every managed key, oldest first; revoked ones stay listed, for the audit trail."""
    ctx.principal.require(Scope.ADMIN)
    statement = select(ApiKey).order_by(col(ApiKey.created_at), col(ApiKey.id))
    return await ctx.db.read(lambda session: list(session.exec(statement)))


async def update_api_key(ctx: Context, key_id: str | uuid.UUID, data: Any) -> ApiKey:
    """Set or lift a key's `rate_limit` and `max_running`. Both hold from the key's next request and
    the next claim, in every process: the key is read on each request, and claims read its limit.

    In the same transaction the key's queued and running jobs are marked for the concurrency limit
    (or unmarked when it is lifted), so jobs submitted before the limit count against it and wait
    for it. A revoked key may still be changed: its queued jobs still run."""
    ctx.principal.require(Scope.ADMIN)
    target = parse_id(key_id, kind="API key")
    fields = parse_input(ApiKeyUpdateInput, data)
    if not fields.model_fields_set:
        raise InvalidRequest("give at least one of rate_limit, max_running")
    limited_workflows = workflow_limits(ctx.settings).keys()

    def run(session: Session) -> ApiKey:
        # Locked, so an intake reading the key's limit (levqor/queue/limits.py) is before or after.
        key = session.get(ApiKey, target, with_for_update=True)
        if key is None:
            raise NotFound(f"no API key with id '{target}'")
        if "rate_limit" in fields.model_fields_set:
            key.rate_limit = fields.rate_limit
        if "max_running" in fields.model_fields_set:
            was_limited = key.max_running is not None
            key.max_running = fields.max_running
            if was_limited != (key.max_running is not None):
                session.add(key)
                session.flush()
                mark_key_jobs(
                    session, key.id, limited=key.max_running is not None, workflow_limits=limited_workflows
                )
        session.add(key)
        session.flush()
        record_change(
            session, ctx.principal, "key.updated", "api_key", key.id, fields.model_dump(exclude_unset=True)
        )
        return key

    return await ctx.db.write(run)


async def revoke_api_key(ctx: Context, key_id: str | uuid.UUID) -> ApiKey:
    """Revoke a key; revoking it again changes nothing (DELETE is idempotent). Every server process
    looks keys up per request, so the next request with it gets 401 wherever it lands."""
    ctx.principal.require(Scope.ADMIN)
    target = parse_id(key_id, kind="API key")

    def run(session: Session) -> ApiKey:
        key = session.get(ApiKey, target)
        if key is None:
            raise NotFound(f"no API key with id '{target}'")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            session.add(key)
            session.flush()
            record_change(session, ctx.principal, "key.revoked", "api_key", key.id, {"name": key.name})
        return key

    return await ctx.db.write(run)


async def rotate_webhook_secret(ctx: Context, key_id: str | uuid.UUID, data: Any) -> RotatedWebhookSecret:
    """Give a key a new webhook secret; the previous one keeps signing too (a second signature, as
    the Standard Webhooks spec allows) for `overlap_s`, so receivers can switch without dropping a
    callback. Only one previous secret is kept: rotating again within an overlap ends the older
    one's at once. A key made before webhook secrets existed gets its first one this way.

    A revoked or expired key is refused (409): it submits no more jobs, and the callbacks of those
    it did submit stay verifiable with the secret their receivers already have."""
    ctx.principal.require(Scope.ADMIN)
    target = parse_id(key_id, kind="API key")
    fields = parse_input(WebhookSecretRotateInput, data)
    webhook_secret = new_webhook_secret()

    def run(session: Session) -> ApiKey:
        # Locked (SQLite's writers are serial anyway): of two rotations at once, the second keeps the
        # first one's new secret as its previous, instead of both keeping the same old one.
        key = session.get(ApiKey, target, with_for_update=True)
        if key is None:
            raise NotFound(f"no API key with id '{target}'")
        now = utcnow()
        if key.revoked_at is not None:
            raise Conflict("this API key has been revoked; its webhook secret cannot be rotated")
        if not key_is_active(key, now):
            raise Conflict("this API key has expired; its webhook secret cannot be rotated")
        if fields.overlap_s > 0 and key.webhook_secret is not None:
            key.webhook_secret_previous = key.webhook_secret
            key.webhook_secret_previous_until = now + timedelta(seconds=fields.overlap_s)
        else:
            key.webhook_secret_previous = None
            key.webhook_secret_previous_until = None
        key.webhook_secret = webhook_secret
        session.add(key)
        session.flush()
        record_change(
            session,
            ctx.principal,
            "key.webhook_secret_rotated",
            "api_key",
            key.id,
            {"overlap_s": fields.overlap_s},
        )
        return key

    key = await ctx.db.write(run)
    return RotatedWebhookSecret(key=key, webhook_secret=webhook_secret)
