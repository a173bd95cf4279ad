"""GraphQL errors: domain errors get `extensions.code`; anything unexpected is masked and logged."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from graphql.error import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import SchemaExtension
from strawberry.types import StreamExecutionResult

from levqor.errors import BudgetExceeded, Conflict, FieldCode, InvalidRequest, LevqorError, NotFound
from levqor.schema.types import UserError

logger = logging.getLogger("levqor.errors")

T = TypeVar("T")

# Failures a mutation reports in its payload's `userErrors`; the rest (auth, limits) are GraphQL errors.
USER_ERRORS = (InvalidRequest, Conflict, NotFound, BudgetExceeded)


def graphql_field_name(field: str | None) -> str | None:
    """The resolvers name input fields as REST does (`max_attempts`, `payload.user_key`); GraphQL
    clients know the input field as `maxAttempts` (and the `Idempotency-Key` header as the
    `idempotencyKey` argument). Only the first part is an input field: what follows is a path inside
    a JSON value (`payload.user_key`) and stays as the client sent it."""
    if not field:
        return field
    head, dot, rest = field.partition(".")
    if "_" in head or "-" in head:  # `max_attempts`, or a REST header such as `Idempotency-Key`
        first, *others = head.replace("-", "_").split("_")
        head = first.lower() + "".join(part[:1].upper() + part[1:].lower() for part in others)
    return head + dot + rest


def user_errors_of(exc: LevqorError) -> list[UserError]:
    """A refused field carries its `FieldCode`, as in REST's `details` (one set of codes on both
    surfaces); a failure of no one field carries the error's GraphQL code (`NOT_FOUND`, ...), and so
    does a refusal whose details describe something other than an input field (a budget's)."""
    if exc.details and isinstance(exc, InvalidRequest):
        return [
            UserError(
                field=graphql_field_name(detail.get("field")),
                message=str(detail.get("message")),
                code=str(FieldCode.of(detail.get("code"))),
            )
            for detail in exc.details
        ]
    return [UserError(field=None, message=exc.message, code=exc.graphql_code)]


async def with_user_errors(call: Callable[[], Awaitable[T]], on_error: Callable[[list[UserError]], T]) -> T:
    """Run a mutation's resolver; expected failures become the payload's `userErrors`."""
    try:
        return await call()
    except USER_ERRORS as exc:
        return on_error(user_errors_of(exc))


INTERNAL_ERROR_MESSAGE = "internal server error"


class ClientErrors(SchemaExtension):
    """Adds `extensions.code` to domain errors; masks every other exception as INTERNAL_SERVER_ERROR
    with the request id, after logging its traceback (CONTRACT.md §3)."""

    def __init__(self) -> None:
        super().__init__()
        self.streamed = False

    def on_operation(self) -> Iterator[None]:
        yield
        # A streamed operation (a query over the websocket) had each result treated on its way out.
        if not self.streamed:
            with_client_errors(self.execution_context.result, self.execution_context.context)

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        self.streamed = True
        with_client_errors(result, self.execution_context.context)
        yield


def with_client_errors(result: object, graphql_context: Any) -> None:
    """Replaces the errors of a result (Strawberry's or graphql-core's) by their `client_errors`."""
    errors = getattr(result, "errors", None)
    if errors:
        result.errors = client_errors(errors, graphql_context)  # type: ignore[attr-defined]


def client_errors(errors: list[GraphQLError], graphql_context: Any) -> list[GraphQLError]:
    """The errors as the client sees them: codes added, unexpected ones logged and masked."""
    request_id = getattr(getattr(graphql_context, "levqor", None), "request_id", None)
    return [_client_error(error, request_id) for error in errors]


def _client_error(error: GraphQLError, request_id: str | None) -> GraphQLError:
    original = error.original_error
    if original is None or (error.path is None and isinstance(original, GraphQLError | ValueError)):
        # The client's own request: a document that does not parse or validate, or variables
        # that do not coerce to their types (those carry the scalar's error, but no path).
        if isinstance(error, GraphQLSyntaxError):
            code = "GRAPHQL_PARSE_FAILED"
        elif original is None:
            code = "GRAPHQL_VALIDATION_FAILED"
        else:
            code = "BAD_USER_INPUT"
        extensions: dict[str, Any] = {"code": code, **(error.extensions or {})}
        return _with_extensions(error, error.message, extensions, keep_original=False)
    if isinstance(original, LevqorError):
        extensions = {"code": original.graphql_code}
        if original.details:
            extensions["details"] = original.details
        return _with_extensions(error, original.message, extensions)
    logger.error(
        "unhandled error in GraphQL resolver",
        exc_info=original,
        extra={"request_id": request_id, "path": error.path},
    )
    extensions = {"code": "INTERNAL_SERVER_ERROR", "request_id": request_id}
    return _with_extensions(error, INTERNAL_ERROR_MESSAGE, extensions, keep_original=False)


def _with_extensions(
    error: GraphQLError, message: str, extensions: dict[str, Any], *, keep_original: bool = True
) -> GraphQLError:
    return GraphQLError(
        message=message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error if keep_original else None,
        extensions=extensions,
    )
