"""REST adapters for users."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints
from starlette.requests import Request
from starlette.responses import Response

from levqor.errors import InvalidRequest
from levqor.http.context import context_for
from levqor.resolvers import users
from levqor.resolvers.context import Scope
from levqor.rest.body import read_json
from levqor.rest.routing import ApiPath, ApiRoute, Operation, api_paths, json_response
from levqor.rest.shapes import ErrorBody, UserBody, UserCreated, UserUpdated


async def upsert(request: Request) -> Response:
    result = await users.upsert_user(context_for(request), await read_json(request))
    user = UserBody.from_row(result.user)
    if result.created:
        return json_response(UserCreated(created=True, user=user), 201)
    return json_response(UserUpdated(updated=True, user=user), 200)


async def lookup(request: Request) -> Response:
    unknown = set(request.query_params) - {"email"}
    if unknown:
        raise InvalidRequest.for_field(
            sorted(unknown)[0], "is not a known query parameter", "extra_forbidden"
        )
    user = await users.get_user_by_email(context_for(request), request.query_params.get("email"))
    return json_response(UserBody.from_row(user))


async def get(request: Request) -> Response:
    user = await users.get_user(context_for(request), request.path_params["user_id"])
    return json_response(UserBody.from_row(user))


async def patch(request: Request) -> Response:
    ctx = context_for(request)
    user = await users.update_user(ctx, request.path_params["user_id"], await read_json(request))
    return json_response(UserUpdated(updated=True, user=UserBody.from_row(user)))


class EmailQuery(BaseModel):
    """What the lookup accepts: a blank email is 400, any other string 404 or the user."""

    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, StringConstraints(pattern=r"\S")]


def routes() -> list[ApiPath]:
    errors = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 429: ErrorBody}
    return api_paths(
        [
            ApiRoute(
                "POST",
                "/api/v1/users/upsert",
                upsert,
                Operation(
                    "Create or update a user by email (idempotent)",
                    {201: UserCreated, 200: UserUpdated, 413: ErrorBody, 415: ErrorBody, **errors},
                    "users",
                    body=users.UserUpsertInput,
                    scope=Scope.USERS_WRITE,
                    seed=True,
                ),
            ),
            ApiRoute(
                "GET",
                "/api/v1/users",
                lookup,
                Operation(
                    "Look a user up by email",
                    {200: UserBody, 404: ErrorBody, **errors},
                    "users",
                    query=EmailQuery,
                    seed=True,
                ),
            ),
            ApiRoute(
                "GET",
                "/api/v1/users/{user_id}",
                get,
                Operation("A user by id", {200: UserBody, 404: ErrorBody, **errors}, "users", seed=True),
            ),
            ApiRoute(
                "PATCH",
                "/api/v1/users/{user_id}",
                patch,
                Operation(
                    "Update a user's name, locale, currency or meta",
                    {200: UserUpdated, 404: ErrorBody, 413: ErrorBody, 415: ErrorBody, **errors},
                    "users",
                    body=users.UserPatchInput,
                    scope=Scope.USERS_WRITE,
                    seed=True,
                ),
            ),
        ]
    )
