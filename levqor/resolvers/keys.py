"""Managed API keys: create (the secret is shown once), list and revoke. Only `admin` may do these.

The secret is `lvq_` and 43 url-safe characters (256 random bits); the table keeps its SHA-256 and a
short prefix to tell keys apart, never the secret itself (CONTRACT.md §5).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, field_validator
from sqlmodel import Session, col, select

from levqor.db.engine import Database
from levqor.db.models import ApiKey
from levqor.db.types import utcnow
from levqor.errors import NotFound
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.validation import WHOLE_NUMBER, parse_id, parse_input

SECRET_PREFIX = "lvq_"  # noqa: S105 (a prefix, not a secret)
SECRET_RANDOM_BYTES = 32  # 256 bits, 43 url-safe characters
SHOWN_PREFIX_LEN = 12  # "lvq_" and 8 characters: enough to tell keys apart, far too few to guess the rest

KeyName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"\S")
]
# The scope names as OpenAPI's enum; `_known_scopes` refuses the others without echoing them.
ScopeName = Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(Scope.ALL)})]


def hash_secret(secret: str) -> str:
    """The stored form of a key. A fast hash is right here: the secret has 256 random bits, so there
    is nothing for a slow password hash to protect against."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_RANDOM_BYTES)


class ApiKeyCreateInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: KeyName
    scopes: Annotated[list[ScopeName], Field(min_length=1, max_length=len(Scope.ALL))]
    expires_at: Annotated[
        datetime | None, Field(strict=False, description="A future instant; ISO-8601, UTC without an offset")
    ] = None
    # Requests per minute; without it the key gets LEVQOR_RATE_KEY.
    rate_limit: Annotated[int, Field(ge=1, le=1_000_000), WHOLE_NUMBER] | None = None

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


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    secret: str  # shown to the caller once, never stored


def key_is_active(key: ApiKey, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


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

    def run(session: Session) -> ApiKey:
        key = ApiKey(
            name=fields.name,
            prefix=secret[:SHOWN_PREFIX_LEN],
            secret_hash=hash_secret(secret),
            scopes=fields.scopes,
            expires_at=fields.expires_at,
            rate_limit=fields.rate_limit,
        )
        session.add(key)
        session.flush()
        return key

    key = await ctx.db.write(run)
    presence_for(ctx.db).seen = True  # development mode ends with the first key, at once here
    return CreatedKey(key=key, secret=secret)


async def list_api_keys(ctx: Context) -> list[ApiKey]:
    """Every managed key, oldest first; revoked ones stay listed, for the audit trail."""
    ctx.principal.require(Scope.ADMIN)
    statement = select(ApiKey).order_by(col(ApiKey.created_at), col(ApiKey.id))
    return await ctx.db.read(lambda session: list(session.exec(statement)))


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
        return key

    return await ctx.db.write(run)
