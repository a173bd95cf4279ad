"""The Strawberry schema."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import strawberry
from graphql.error import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from levqor.schema.documents import document_extensions
from levqor.schema.errors import ClientErrors
from levqor.schema.mutation import Mutation
from levqor.schema.names import CachedNameConverter
from levqor.schema.query import Query
from levqor.schema.ratelimit import MutationFieldRateLimit
from levqor.schema.scalars import SCALARS
from levqor.schema.subscription import Subscription, SubscriptionsOverWebSocket

ExtensionFactory = type[SchemaExtension] | Callable[[], SchemaExtension]


class LevqorSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """`ClientErrors` logs what deserves a log line; client errors need none."""


def build_schema(extra_extensions: Sequence[ExtensionFactory] = ()) -> strawberry.Schema:
    """The schema; `extra_extensions` run after Levqor's own (classes or factories: Strawberry makes
    each extension anew for every request, as it keeps that request's execution context)."""
    return LevqorSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(name_converter=CachedNameConverter(), scalar_map=SCALARS),
        extensions=[
            ClientErrors,
            *document_extensions(),
            MutationFieldRateLimit,
            SubscriptionsOverWebSocket,
            *extra_extensions,
        ],
    )


schema = build_schema()


def sdl() -> str:
    return schema.as_str() + "\n"


__all__: list[Any] = ["build_schema", "schema", "sdl"]
