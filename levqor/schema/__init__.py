"""The Strawberry schema."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql.error import GraphQLError
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from levqor.schema.errors import LevqorErrors, QueryParserCache
from levqor.schema.mutation import Mutation
from levqor.schema.query import Query
from levqor.schema.ratelimit import MutationFieldRateLimit

MAX_QUERY_DEPTH = 10
MAX_QUERY_TOKENS = 2_000
# Room for a batch of 25 aliased mutations; each root mutation field is charged to the rate limits.
MAX_ALIASES = 30


class LevqorSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """`LevqorErrors` has logged what deserves a log line; client errors need none."""


def build_schema() -> strawberry.Schema:
    return LevqorSchema(
        query=Query,
        mutation=Mutation,
        extensions=[
            LevqorErrors,
            MutationFieldRateLimit,
            lambda: QueryDepthLimiter(max_depth=MAX_QUERY_DEPTH),
            lambda: MaxTokensLimiter(max_token_count=MAX_QUERY_TOKENS),
            lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
            lambda: QueryParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
        ],
    )


schema = build_schema()


def sdl() -> str:
    return schema.as_str() + "\n"


__all__: list[Any] = ["build_schema", "schema", "sdl"]
