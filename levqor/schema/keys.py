"""GraphQL for managed API keys: the `apiKeys` query and the `createApiKey` / `updateApiKey` /
`revokeApiKey` / `rotateWebhookSecret` mutations, thin adapters over `levqor.resolvers.keys` like the
REST routes under /api/v1/keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from levqor.config import DEFAULT_WEBHOOK_OVERLAP_S
from levqor.db.models import ApiKey
from levqor.resolvers import keys
from levqor.schema.errors import with_user_errors
from levqor.schema.inputs import as_data
from levqor.schema.types import UserError

OVERLAP_S_DESCRIPTION = (
    f"Seconds the previous secret still signs, 0 to {keys.MAX_WEBHOOK_OVERLAP_S} (0 ends it at once); "
    f"default {DEFAULT_WEBHOOK_OVERLAP_S}."
)


@strawberry.type(
    name="ApiKey",
    description="A managed API key. Its secret is shown once, at creation; its webhook secret then and "
    "at each rotation, never on a read.",
)
class ApiKeyType:
    id: strawberry.ID
    name: str
    prefix: str = strawberry.field(description="The secret's first characters, to tell keys apart.")
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = strawberry.field(description="To the minute.")
    rate_limit: int | None = strawberry.field(
        description="Requests per minute; null: the server's per-key default."
    )
    max_running: int | None = strawberry.field(
        description="Jobs of this key that may run at once; null: no limit."
    )
    active: bool = strawberry.field(description="Neither revoked nor expired.")
    has_webhook_secret: bool = strawberry.field(
        description="Whether it has a webhook secret of its own to sign its jobs' callbacks; a key made "
        "before webhook secrets existed gets one from `rotateWebhookSecret`."
    )
    webhook_secret_previous_until: datetime | None = strawberry.field(
        description="After a rotation, until when the previous webhook secret still signs too; "
        "null: only the current one signs."
    )

    @classmethod
    def from_row(cls, row: ApiKey) -> ApiKeyType:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            prefix=row.prefix,
            scopes=list(row.scopes),
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
            rate_limit=row.rate_limit,
            max_running=row.max_running,
            active=keys.key_is_active(row),
            has_webhook_secret=row.webhook_secret is not None,
            webhook_secret_previous_until=keys.key_previous_signs_until(row),
        )


@strawberry.input(name="CreateApiKeyInput")
class CreateApiKeyInput:
    name: str
    scopes: list[str] = strawberry.field(
        description="Any of jobs:read, jobs:write, users:write, worker, admin."
    )
    expires_at: datetime | None = strawberry.UNSET
    rate_limit: int | None = strawberry.field(
        default=strawberry.UNSET, description="Requests per minute (default: the server's per-key limit)."
    )
    max_running: int | None = strawberry.field(
        default=strawberry.UNSET, description="Jobs of this key that may run at once (default: no limit)."
    )


@strawberry.input(
    name="UpdateApiKeyInput",
    description="A key's limits: a field left out is kept, null lifts it. At least one is needed.",
)
class UpdateApiKeyInput:
    rate_limit: int | None = strawberry.field(
        default=strawberry.UNSET,
        description="Requests per minute, 1 to 1000000; null: the server's per-key limit.",
    )
    max_running: int | None = strawberry.field(
        default=strawberry.UNSET,
        description="Jobs of this key that may run at once, 1 to 100000; null: no limit.",
    )


@strawberry.type
class CreateApiKeyPayload:
    api_key: ApiKeyType | None
    secret: str | None = strawberry.field(
        default=None, description="The key itself (`lvq_...`): shown this once, never stored."
    )
    webhook_secret: str | None = strawberry.field(
        default=None,
        description="Its webhook secret (`whsec_...`), which signs the callbacks of the jobs it "
        "submits: shown this once.",
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UpdateApiKeyPayload:
    api_key: ApiKeyType | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RevokeApiKeyPayload:
    api_key: ApiKeyType | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RotateWebhookSecretPayload:
    api_key: ApiKeyType | None
    webhook_secret: str | None = strawberry.field(
        default=None, description="The new webhook secret (`whsec_...`): shown this once."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class KeyQuery:
    @strawberry.field(description="Every managed API key, oldest first (needs `admin`).")
    async def api_keys(self, info: Info[Any, None]) -> list[ApiKeyType]:
        return [ApiKeyType.from_row(row) for row in await keys.list_api_keys(info.context.levqor)]


@strawberry.type
class KeyMutation:
    @strawberry.mutation(description="Create an API key (needs `admin`); the payload shows its secret once.")
    async def create_api_key(self, info: Info[Any, None], input: CreateApiKeyInput) -> CreateApiKeyPayload:
        async def call() -> CreateApiKeyPayload:
            created = await keys.create_api_key(info.context.levqor, as_data(input))
            return CreateApiKeyPayload(
                api_key=ApiKeyType.from_row(created.key),
                secret=created.secret,
                webhook_secret=created.webhook_secret,
            )

        return await with_user_errors(
            call, lambda errors: CreateApiKeyPayload(api_key=None, user_errors=errors)
        )

    @strawberry.mutation(
        description="Set or lift an API key's `rateLimit` and `maxRunning` (needs `admin`); both hold "
        "from its next request and the next claim."
    )
    async def update_api_key(
        self, info: Info[Any, None], id: strawberry.ID, input: UpdateApiKeyInput
    ) -> UpdateApiKeyPayload:
        async def call() -> UpdateApiKeyPayload:
            key = await keys.update_api_key(info.context.levqor, id, as_data(input))
            return UpdateApiKeyPayload(api_key=ApiKeyType.from_row(key))

        return await with_user_errors(
            call, lambda errors: UpdateApiKeyPayload(api_key=None, user_errors=errors)
        )

    @strawberry.mutation(description="Revoke an API key (needs `admin`); its next request gets 401.")
    async def revoke_api_key(self, info: Info[Any, None], id: strawberry.ID) -> RevokeApiKeyPayload:
        async def call() -> RevokeApiKeyPayload:
            key = await keys.revoke_api_key(info.context.levqor, id)
            return RevokeApiKeyPayload(api_key=ApiKeyType.from_row(key))

        return await with_user_errors(
            call, lambda errors: RevokeApiKeyPayload(api_key=None, user_errors=errors)
        )

    @strawberry.mutation(
        description="Give an API key a new webhook secret (needs `admin`), shown once in the payload; "
        "the previous one still signs too for `overlapS` seconds."
    )
    async def rotate_webhook_secret(
        self,
        info: Info[Any, None],
        id: strawberry.ID,
        overlap_s: Annotated[
            int | None, strawberry.argument(description=OVERLAP_S_DESCRIPTION)
        ] = strawberry.UNSET,
    ) -> RotateWebhookSecretPayload:
        async def call() -> RotateWebhookSecretPayload:
            data = {} if overlap_s is strawberry.UNSET else {"overlap_s": overlap_s}
            rotated = await keys.rotate_webhook_secret(info.context.levqor, id, data)
            return RotateWebhookSecretPayload(
                api_key=ApiKeyType.from_row(rotated.key), webhook_secret=rotated.webhook_secret
            )

        return await with_user_errors(
            call, lambda errors: RotateWebhookSecretPayload(api_key=None, user_errors=errors)
        )
