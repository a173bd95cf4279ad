"""What every resolver receives: the database, the settings and who is calling."""

from __future__ import annotations

from dataclasses import dataclass

from levqor.config import Settings
from levqor.db.engine import Database
from levqor.errors import Forbidden


class Scope:
    JOBS_READ = "jobs:read"
    JOBS_WRITE = "jobs:write"
    USERS_WRITE = "users:write"
    WORKER = "worker"
    ADMIN = "admin"

    ALL: frozenset[str] = frozenset({JOBS_READ, JOBS_WRITE, USERS_WRITE, WORKER, ADMIN})


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. `id` scopes idempotency keys and usage; it is never a secret."""

    id: str
    scopes: frozenset[str]
    key_id: str | None = None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope")


# Development mode as the seed: with no key configured anywhere, every caller may do everything.
DEV_PRINCIPAL = Principal(id="dev", scopes=Scope.ALL)


@dataclass(frozen=True, slots=True)
class Context:
    db: Database
    settings: Settings
    principal: Principal = DEV_PRINCIPAL
    request_id: str | None = None
