"""REST adapters for managed API keys (`admin`): POST/GET /api/v1/keys, PATCH and DELETE
/api/v1/keys/<id>, POST /api/v1/keys/<id>/webhook-secret."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from levqor.db.models import ApiKey
from levqor.http.context import context_for
from levqor.resolvers import keys
from levqor.resolvers.context import Scope
from levqor.rest.body import read_json
from levqor.rest.routing import ApiPath, ApiRoute, Operation, api_paths, json_response
from levqor.rest.shapes import ErrorBody

NO_STORE = {"Cache-Control": "no-store"}


class ApiKeyBody(BaseModel):
    """A managed API key; never its secret, its hash or its webhook secrets. Timestamps in ISO-8601 UTC."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rate_limit: int | None = Field(description="Requests per minute; null: the server's per-key default.")
    max_running: int | None = Field(description="Jobs of this key that may run at once; null: no limit.")
    active: bool
    has_webhook_secret: bool = Field(
        description="Whether it has a webhook secret of its own to sign its jobs' callbacks; a key "
        "made before webhook secrets existed gets one by a rotation."
    )
    webhook_secret_previous_until: datetime | None = Field(
        description="After a rotation, until when the previous webhook secret still signs too; "
        "null: only the current one signs."
    )

    @classmethod
    def from_row(cls, key: ApiKey) -> ApiKeyBody:
        return cls(
            id=str(key.id),
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            last_used_at=key.last_used_at,
            rate_limit=key.rate_limit,
            max_running=key.max_running,
            active=keys.key_is_active(key),
            has_webhook_secret=key.webhook_secret is not None,
            webhook_secret_previous_until=keys.key_previous_signs_until(key),
        )


class ApiKeyCreated(BaseModel):
    """The new key, its secret (shown this once and never stored) and its webhook secret (shown this
    once)."""

    key: ApiKeyBody
    secret: str
    webhook_secret: str = Field(description="`whsec_...`: signs the callbacks of the jobs it submits.")


class WebhookSecretRotated(BaseModel):
    """The key and its new webhook secret, shown this once."""

    key: ApiKeyBody
    webhook_secret: str


class ApiKeyEnvelope(BaseModel):
    """One API key."""

    key: ApiKeyBody


class ApiKeyList(BaseModel):
    """Every managed API key, oldest first."""

    keys: list[ApiKeyBody]


async def create(request: Request) -> Response:
    created = await keys.create_api_key(context_for(request), await read_json(request))
    body = ApiKeyCreated(
        key=ApiKeyBody.from_row(created.key), secret=created.secret, webhook_secret=created.webhook_secret
    )
    # The secrets must not linger in a cache between here and the caller.
    return json_response(body, 201, NO_STORE)


async def list_keys(request: Request) -> Response:
    rows = await keys.list_api_keys(context_for(request))
    return json_response(ApiKeyList(keys=[ApiKeyBody.from_row(row) for row in rows]))


async def update(request: Request) -> Response:
    key = await keys.update_api_key(
        context_for(request), request.path_params["key_id"], await read_json(request)
    )
    return json_response(ApiKeyEnvelope(key=ApiKeyBody.from_row(key)))


async def revoke(request: Request) -> Response:
    key = await keys.revoke_api_key(context_for(request), request.path_params["key_id"])
    return json_response(ApiKeyEnvelope(key=ApiKeyBody.from_row(key)))


async def rotate_webhook_secret(request: Request) -> Response:
    rotated = await keys.rotate_webhook_secret(
        context_for(request), request.path_params["key_id"], await read_json(request, allow_empty=True)
    )
    body = WebhookSecretRotated(key=ApiKeyBody.from_row(rotated.key), webhook_secret=rotated.webhook_secret)
    return json_response(body, 200, NO_STORE)


def routes() -> list[ApiPath]:
    errors: dict[int, type[BaseModel] | None] = {401: ErrorBody, 403: ErrorBody, 429: ErrorBody}
    return api_paths(
        [
            ApiRoute(
                "POST",
                "/api/v1/keys",
                create,
                Operation(
                    "Create an API key; the answer shows its secret and its webhook secret once",
                    {201: ApiKeyCreated, 400: ErrorBody, 413: ErrorBody, 415: ErrorBody, **errors},
                    "keys",
                    body=keys.ApiKeyCreateInput,
                    scope=Scope.ADMIN,
                ),
            ),
            ApiRoute(
                "GET",
                "/api/v1/keys",
                list_keys,
                Operation("List API keys", {200: ApiKeyList, **errors}, "keys", scope=Scope.ADMIN),
            ),
            ApiRoute(
                "PATCH",
                "/api/v1/keys/{key_id}",
                update,
                Operation(
                    "Set or lift an API key's rate_limit and max_running (null lifts one; a field left "
                    "out is kept)",
                    {
                        200: ApiKeyEnvelope,
                        400: ErrorBody,
                        404: ErrorBody,
                        413: ErrorBody,
                        415: ErrorBody,
                        **errors,
                    },
                    "keys",
                    body=keys.ApiKeyUpdateInput,
                    scope=Scope.ADMIN,
                ),
            ),
            ApiRoute(
                "DELETE",
                "/api/v1/keys/{key_id}",
                revoke,
                Operation(
                    "Revoke an API key (at once, in every server process)",
                    {200: ApiKeyEnvelope, 404: ErrorBody, **errors},
                    "keys",
                    scope=Scope.ADMIN,
                ),
            ),
            ApiRoute(
                "POST",
                "/api/v1/keys/{key_id}/webhook-secret",
                rotate_webhook_secret,
                Operation(
                    "Rotate an API key's webhook secret; the answer shows the new one once, and the "
                    "previous one still signs for overlap_s (the body is optional)",
                    {
                        200: WebhookSecretRotated,
                        400: ErrorBody,
                        404: ErrorBody,
                        409: ErrorBody,
                        413: ErrorBody,
                        415: ErrorBody,
                        **errors,
                    },
                    "keys",
                    body=keys.WebhookSecretRotateInput,
                    scope=Scope.ADMIN,
                ),
            ),
        ]
    )
