"""Users: idempotent upsert by normalised email, lookup, and partial update."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from levqor.db.models import Currency, User
from levqor.db.types import utcnow
from levqor.errors import InvalidRequest, NotFound
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.validation import parse_id, parse_input

MAX_META_BYTES = 16 * 1024
# BCP 47 in the shape people send: language, then optional script, region or variant subtags.
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}$")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def normalise_email(raw: str) -> str:
    """Trimmed and lower-cased, so `A@X.io ` and `a@x.io` are one user."""
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return checked.normalized.lower()


def normalise_locale(raw: str) -> str:
    """`en_gb` → `en-GB`, `zh-hant-tw` → `zh-Hant-TW`."""
    value = raw.strip()
    if not _LOCALE.match(value):
        raise ValueError("locale must be a BCP 47 language tag such as 'en-GB'")
    parts = re.split(r"[-_]", value)
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())
        elif len(part) == 2 and part.isalpha():
            out.append(part.upper())
        else:
            out.append(part.lower())
    return "-".join(out)


class _UserFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    locale: str | None = None
    currency: Annotated[Currency | None, Field(strict=False)] = None
    # Merged into the stored meta; a key set to null is removed (the habit of Stripe's metadata).
    meta: dict[str, Any] | None = None

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        return None if value is None else normalise_locale(value)

    @field_validator("meta")
    @classmethod
    def _meta(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > MAX_META_BYTES:
            raise ValueError(f"meta must be at most {MAX_META_BYTES} bytes of JSON")
        return value


class UserUpsertInput(_UserFields):
    email: str
    name: Name

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalise_email(value)


class UserPatchInput(_UserFields):
    name: Name | None = None


@dataclass(frozen=True, slots=True)
class UpsertResult:
    user: User
    created: bool


def _apply(user: User, fields: _UserFields) -> None:
    for name in fields.model_fields_set - {"email", "meta"}:
        value = getattr(fields, name)
        if value is None:
            raise InvalidRequest.for_field(name, "may not be null", "null")
        setattr(user, name, value.value if isinstance(value, Currency) else value)
    if fields.meta is not None:
        merged = {**user.meta, **fields.meta}
        user.meta = {key: value for key, value in merged.items() if value is not None}
    user.updated_at = utcnow()


async def upsert_user(ctx: Context, data: Any) -> UpsertResult:
    ctx.principal.require(Scope.USERS_WRITE)
    fields = parse_input(UserUpsertInput, data)

    def run(session: Session) -> UpsertResult:
        user = session.exec(select(User).where(User.email == fields.email)).first()
        created = user is None
        if user is None:
            user = User(email=fields.email, name=fields.name)
        _apply(user, fields)
        session.add(user)
        session.flush()
        return UpsertResult(user=user, created=created)

    try:
        return await ctx.db.write(run)
    except IntegrityError:
        # Two first upserts of one email raced on PostgreSQL; the loser now finds the winner's row.
        return await ctx.db.write(run)


async def get_user(ctx: Context, user_id: str | uuid.UUID) -> User:
    key = parse_id(user_id, kind="user")
    user = await ctx.db.read(lambda session: session.get(User, key))
    if user is None:
        raise NotFound(f"no user with id '{key}'")
    return user


async def get_user_by_email(ctx: Context, email: str | None) -> User:
    if not email or not email.strip():
        raise InvalidRequest.for_field("email", "is required", "missing")
    try:
        normalised = normalise_email(email)
    except ValueError:
        raise NotFound("no user with that email") from None
    user = await ctx.db.read(
        lambda session: session.exec(select(User).where(User.email == normalised)).first()
    )
    if user is None:
        raise NotFound("no user with that email")
    return user


async def update_user(ctx: Context, user_id: str | uuid.UUID, data: Any) -> User:
    ctx.principal.require(Scope.USERS_WRITE)
    key = parse_id(user_id, kind="user")
    fields = parse_input(UserPatchInput, data)
    if not fields.model_fields_set:
        raise InvalidRequest("give at least one of name, locale, currency, meta")

    def run(session: Session) -> User:
        user = session.get(User, key)
        if user is None:
            raise NotFound(f"no user with id '{key}'")
        _apply(user, fields)
        session.add(user)
        session.flush()
        return user

    return await ctx.db.write(run)
