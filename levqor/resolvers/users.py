"""Users: idempotent upsert by normalised email, lookup, and partial update.

Two addresses are one user when their `email_key` is the same: trimmed, checked and lower-cased
as the seed did, then NFKC and case-folded (`levqor.db.models.email_key`), so look-alikes such as
`straße`/`strasse` or full-width letters do not make a second user. The address is shown as it
was first given (trimmed, lower-cased).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from levqor.db.models import Currency, User, email_key
from levqor.db.types import utcnow
from levqor.errors import InvalidRequest, NotFound
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.validation import omittable_not_null, parse_id, parse_input

MAX_META_BYTES = 16 * 1024
# BCP 47 in the shape people send: language, then optional script, region or variant subtags.
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}")
# What the field accepts: the tag, trimmed.
LOCALE_PATTERN = rf"^\s*{_LOCALE.pattern}\s*$"
MAX_EMAIL_CHARS = 254  # RFC 5321's path limit, as email_validator counts it (in UTF-8 bytes)


def _any_case(name: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in name)


# email_validator refuses special-use domains (RFC 6761: .test, .localhost, ...) in any case, which
# JSON Schema's `email` format admits; OpenAPI says so with a `not`.
_SPECIAL_USE_DOMAIN = "|".join(_any_case(name) for name in SPECIAL_USE_DOMAIN_NAMES)
EMAIL_JSON_SCHEMA = {
    "type": "string",
    "format": "email",
    "maxLength": MAX_EMAIL_CHARS,
    "not": {"pattern": rf"[@.](?:{_SPECIAL_USE_DOMAIN})\.?\s*$"},
}

# Trimmed; the pattern says what OpenAPI can: some character that is not a space.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"\S")]
Email = Annotated[str, WithJsonSchema(EMAIL_JSON_SCHEMA)]


def normalise_email(raw: str) -> str:
    """Trimmed, checked and lower-cased: `A@X.io ` is stored and shown as `a@x.io`.

    Whether the domain could receive mail is not this API's to judge (no DNS look-up), so
    special-use names such as `.test` pass too, as JSON Schema's `email` format lets them."""
    try:
        checked = validate_email(raw.strip(), check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return checked.normalized.lower()


def normalise_locale(raw: str) -> str:
    """`en_gb` → `en-GB`, `zh-hant-tw` → `zh-Hant-TW`."""
    value = raw.strip()
    if not _LOCALE.fullmatch(value):
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
    # Left out, a field keeps its value; null is refused (`_apply`).
    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra=omittable_not_null("locale", "currency")
    )

    locale: Annotated[str, StringConstraints(pattern=LOCALE_PATTERN)] | None = None
    currency: Annotated[Currency | None, Field(strict=False)] = None
    # Merged into the stored meta; a key set to null is removed (as payment APIs treat metadata).
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
    email: Email
    name: Name

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalise_email(value)


class UserPatchInput(_UserFields):
    model_config = ConfigDict(
        json_schema_extra=omittable_not_null("name", "locale", "currency", minProperties=1)
    )

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
        user = session.exec(select(User).where(User.email_key == email_key(fields.email))).first()
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
    key = email_key(normalised)
    user = await ctx.db.read(lambda session: session.exec(select(User).where(User.email_key == key)).first())
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
