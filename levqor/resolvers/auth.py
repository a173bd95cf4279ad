"""Who is calling: a presented API key (or none) becomes a `Principal`, or `Unauthorized`.

Static keys (`API_KEYS`) are compared in constant time against their SHA-256, with every scope.
Managed keys (`lvq_...`) are looked up by hash in the database on every request, so a revocation
holds on the next request in every process; that is one read, and no cache to go stale. Under load
the reads of concurrent requests coalesce (levqor/db/batching.py): one thread hop and one statement
for all of them, each request's read still starting after the request arrived.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlmodel import Session, col

from levqor.config import Settings
from levqor.db.batching import MAX_IN_LIST_BATCH, Batcher
from levqor.db.engine import Database
from levqor.db.models import ApiKey
from levqor.db.principals import managed_key_id, managed_principal_id
from levqor.db.types import utcnow
from levqor.errors import Unauthorized
from levqor.resolvers.context import ANONYMOUS, DEV_PRINCIPAL, Principal, Scope
from levqor.resolvers.keys import SECRET_PREFIX, any_managed_key, hash_secret, presence_for

STATIC_ID_HEX_CHARS = 12
# Longer than any key we issue by far; a longer header is not a key, and is not worth hashing.
MAX_PRESENTED_KEY_CHARS = 512
# `last_used_at` is kept to the minute: one write per key per minute, not one per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


_LOOKUP_COLUMNS = select(
    col(ApiKey.secret_hash),
    col(ApiKey.id),
    col(ApiKey.scopes),
    col(ApiKey.revoked_at),
    col(ApiKey.expires_at),
    col(ApiKey.last_used_at),
    col(ApiKey.rate_limit),
    # Whether it has one, not the secret: the secret need not cross the wire on every request.
    col(ApiKey.webhook_secret).is_not(None).label("has_webhook_secret"),
)
_LOOKUP = _LOOKUP_COLUMNS.where(col(ApiKey.secret_hash).in_(bindparam("hashes", expanding=True)))


def static_principal(key: str) -> Principal:
    digest = hash_secret(key)
    ident = f"static:{digest[:STATIC_ID_HEX_CHARS]}"
    return Principal(id=ident, scopes=Scope.ALL, key_id=ident)


@dataclass(frozen=True, slots=True)
class _StaticKey:
    digest: bytes
    principal: Principal


@dataclass(frozen=True, slots=True)
class _Lookup:
    key_id: uuid.UUID
    scopes: frozenset[str]
    rate_limit: int | None
    has_webhook_secret: bool
    problem: str | None  # why the key may not be used, or None


class Authenticator:
    """One per server process (built in the app's lifespan); safe to share between requests."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._static = [
            _StaticKey(bytes.fromhex(hash_secret(key)), static_principal(key)) for key in settings.api_keys
        ]
        # Static keys met so far, by the text presented: settings never revoke them while the process
        # runs, so a key that matched once matches again without a hash. At most one entry per
        # static key; an entry is found only by the exact text of a key, so the look-up tells a
        # guess nothing.
        self._static_seen: dict[str, Principal] = {}
        self._presence = presence_for(db)
        # A read fails for all its keys or none: nothing to retry alone.
        self._lookups: Batcher[str, _Lookup | None] = Batcher(
            self._lookup_sync, max_batch=MAX_IN_LIST_BATCH, retry_alone=lambda _exc: False
        )
        # In development mode every request asks whether a key exists yet, so that a key made in
        # another process ends it for every request that arrives after; concurrent asks share a read.
        self._presence_checks: Batcher[None, bool] = Batcher(
            self._any_key_sync, max_batch=MAX_IN_LIST_BATCH, retry_alone=lambda _exc: False
        )

    async def start(self) -> None:
        """Coalesce the key look-ups of concurrent requests; without it each runs alone."""
        await self._lookups.start("levqor-key-lookups")
        await self._presence_checks.start("levqor-key-presence")

    async def stop(self) -> None:
        await self._lookups.stop()
        await self._presence_checks.stop()

    async def dev_mode(self) -> bool:
        """True while no key of any kind exists and this is not production (the seed's rule)."""
        if self._static or self.settings.is_production or self._presence.seen:
            return False
        # Keys are revoked, never deleted: once one is seen the answer stays no, at no cost.
        if await self._presence_checks.call(None):
            self._presence.seen = True
        return not self._presence.seen

    def _any_key_sync(self, asks: Sequence[None]) -> list[bool]:
        found = self.db.read_sync(any_managed_key)
        return [found] * len(asks)

    async def authenticate(self, presented: str | None) -> Principal:
        if presented is None:
            return DEV_PRINCIPAL if await self.dev_mode() else ANONYMOUS
        if len(presented) > MAX_PRESENTED_KEY_CHARS:
            return await self._unknown()
        static = self._static_seen.get(presented)
        if static is not None:
            return static
        digest_hex = hash_secret(presented)
        static = self._match_static(bytes.fromhex(digest_hex))
        if static is not None:
            if len(self._static_seen) < len(self._static):
                self._static_seen[presented] = static
            return static
        if presented.startswith(SECRET_PREFIX):
            found = await self._lookups.call(digest_hex)
            if found is not None:
                self._presence.seen = True
                if found.problem is not None:
                    raise Unauthorized(found.problem)
                key_id = str(found.key_id)
                return Principal(
                    id=managed_principal_id(key_id),
                    scopes=found.scopes,
                    key_id=key_id,
                    rate_limit=found.rate_limit,
                    has_webhook_secret=found.has_webhook_secret,
                )
        return await self._unknown()

    async def authenticate_reference(self, reference: str) -> Principal:
        """The principal of a key named by its reference, not its secret: a managed key's principal
        id (`key:<id>`) or a static key's (`static:<digest prefix>`), as a dashboard session keeps
        it. The key is checked as on every request, so a revoked or expired key is `Unauthorized`."""
        for static in self._static:
            if hmac.compare_digest(static.principal.id, reference):
                return static.principal
        key_id = managed_key_id(reference)
        if key_id is None:
            raise Unauthorized("this API key is no longer configured")
        found = await self.db.read(lambda session: _lookup_by_id(session, key_id))
        if found is None:
            raise Unauthorized("this API key no longer exists")
        if found.problem is not None:
            raise Unauthorized(found.problem)
        return Principal(
            id=managed_principal_id(found.key_id),
            scopes=found.scopes,
            key_id=str(found.key_id),
            rate_limit=found.rate_limit,
            has_webhook_secret=found.has_webhook_secret,
        )

    async def _unknown(self) -> Principal:
        # In development mode the seed lets everything through, whatever key is sent.
        if await self.dev_mode():
            return DEV_PRINCIPAL
        raise Unauthorized("invalid API key")

    def _match_static(self, digest: bytes) -> Principal | None:
        # Compare against every static key, so the time taken does not tell which one matched.
        match: Principal | None = None
        for key in self._static:
            if hmac.compare_digest(digest, key.digest):
                match = key.principal
        return match

    def _lookup_sync(self, digests: Sequence[str]) -> list[_Lookup | None]:
        """The managed key behind each digest (None for no key), in order; a key used for the first
        time this minute has its `last_used_at` written."""
        now = utcnow()

        def read(session: Session) -> dict[str, tuple[_Lookup, bool]]:
            # Only the columns needed, without building ORM objects: this runs on every request.
            found: dict[str, tuple[_Lookup, bool]] = {}
            for key in session.execute(_LOOKUP, {"hashes": list(dict.fromkeys(digests))}):
                problem = _problem(key, now)
                stale = key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION
                found[key.secret_hash] = (
                    _Lookup(
                        key.id, frozenset(key.scopes), key.rate_limit, bool(key.has_webhook_secret), problem
                    ),
                    stale and problem is None,
                )
            return found

        found = self.db.read_sync(read)
        touched = [lookup.key_id for lookup, stale in found.values() if stale]
        if touched:
            self.db.write_sync(lambda session: _touch(session, touched, now))
        return [found[digest][0] if digest in found else None for digest in digests]


def _lookup_by_id(session: Session, key_id: uuid.UUID) -> _Lookup | None:
    key = session.execute(_LOOKUP_COLUMNS.where(col(ApiKey.id) == key_id)).first()
    if key is None:
        return None
    return _Lookup(
        key.id, frozenset(key.scopes), key.rate_limit, bool(key.has_webhook_secret), _problem(key, utcnow())
    )


def _problem(key: Any, now: datetime) -> str | None:
    if key.revoked_at is not None:
        return "this API key has been revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "this API key has expired"
    return None


def _touch(session: Session, key_ids: Sequence[uuid.UUID], now: datetime) -> None:
    # Conditional, so several processes touching the same key in the same minute write once.
    cutoff = now - LAST_USED_RESOLUTION
    session.execute(
        update(ApiKey)
        .where(col(ApiKey.id).in_(key_ids))
        .where(col(ApiKey.last_used_at).is_(None) | (col(ApiKey.last_used_at) < cutoff))
        .values(last_used_at=now)
    )
