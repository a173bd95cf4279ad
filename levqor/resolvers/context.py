"""What every resolver receives: the database, the settings and who is calling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from levqor.config import Settings
from levqor.db.engine import Database
from levqor.errors import Forbidden, Unauthorized
from levqor.queue.wakeup import Wakeup

if TYPE_CHECKING:
    from levqor.callbacks.guard import HostResolver
    from levqor.resolvers.batches import RequestBatches
    from levqor.resolvers.job_feed import JobUpdateFeed


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
    rate_limit: int | None = None  # requests per minute of the key's own; None: LEVQOR_RATE_KEY
    # A managed key that has a webhook secret of its own (to sign its jobs' callbacks), as read with
    # the key on this request, so intake can tell whether callbacks will be signed without a read.
    has_webhook_secret: bool = False
    # False for a caller that sent no key while keys are configured (CONTRACT.md §5): what needs a
    # key answers 401 to it, and 403 only to a key that lacks the scope.
    authenticated: bool = True

    def require(self, scope: str) -> None:
        self.require_key()
        if scope not in self.scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope")

    def require_key(self) -> None:
        """Any valid key will do (the seed's protected ops health)."""
        if not self.authenticated:
            raise Unauthorized("this needs an API key: send it as X-Api-Key or Authorization: Bearer")


# Development mode as the seed: with no key configured anywhere, every caller may do everything.
DEV_PRINCIPAL = Principal(id="dev", scopes=Scope.ALL)
# A caller without a key once keys exist: public routes only.
ANONYMOUS = Principal(id="anonymous", scopes=frozenset(), authenticated=False)


@dataclass(frozen=True, slots=True)
class Context:
    db: Database
    settings: Settings
    principal: Principal = DEV_PRINCIPAL
    request_id: str | None = None
    # The process's wake-up for new jobs (owned by the app lifespan); long-polling claims wait on it.
    wakeup: Wakeup | None = None
    # The process's coalescing intake and status reads (owned by the app lifespan); without them,
    # each call has its own transaction.
    batches: RequestBatches | None = None
    # The process's live job streams (owned by the app lifespan), which `jobUpdates` and the REST
    # event stream watch jobs through.
    job_updates: JobUpdateFeed | None = None
    # How intake resolves a callback URL's host (CONTRACT.md §8); None: the system's resolver.
    resolver: HostResolver | None = None

    def for_caller(self, principal: Principal, request_id: str | None) -> Context:
        """This context's services for another caller and request."""
        return Context(
            self.db,
            self.settings,
            principal,
            request_id,
            self.wakeup,
            self.batches,
            self.job_updates,
            self.resolver,
        )
