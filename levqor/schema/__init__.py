"""The Strawberry schema."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql.error import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext
from strawberry.types.base import StrawberryObjectDefinition

from levqor.schema.documents import PreparedDocument
from levqor.schema.errors import LevqorErrors
from levqor.schema.input_values import build_inputs_leanly
from levqor.schema.mutation import Mutation
from levqor.schema.names import CachedNameConverter
from levqor.schema.query import Query
from levqor.schema.ratelimit import MutationFieldRateLimit
from levqor.schema.runner import LeanExtensionsRunner


class LevqorSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """`LevqorErrors` has logged what deserves a log line; client errors need none."""

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return LeanExtensionsRunner(execution_context=execution_context, extensions=extensions)


def build_schema() -> strawberry.Schema:
    built = LevqorSchema(
        query=Query,
        mutation=Mutation,
        config=StrawberryConfig(name_converter=CachedNameConverter()),
        # Classes: Strawberry makes each extension anew for every request (it keeps that request's
        # execution context). The limits and caches are one extension (`levqor.schema.documents`).
        extensions=[LevqorErrors, PreparedDocument, MutationFieldRateLimit],
    )
    build_inputs_leanly(
        definition.origin
        for definition in (
            graphql_type.definition for graphql_type in built.schema_converter.type_map.values()
        )
        if isinstance(definition, StrawberryObjectDefinition) and definition.is_input
    )
    return built


schema = build_schema()


def sdl() -> str:
    return schema.as_str() + "\n"


__all__: list[Any] = ["build_schema", "schema", "sdl"]
