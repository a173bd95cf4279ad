"""The Strawberry schema."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql.error import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
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


# The depth and alias limiters each make a new validation-rule class when constructed. Built once here,
# so the rules are the same objects on every request and `ValidationCache`, which keys on them, hits.
_LIMIT_RULES = [
    *QueryDepthLimiter(max_depth=MAX_QUERY_DEPTH).validation_rules,
    *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
]


def build_schema() -> strawberry.Schema:
    return LevqorSchema(
        query=Query,
        mutation=Mutation,
        extensions=[
            LevqorErrors,
            MutationFieldRateLimit,
            lambda: AddValidationRules(_LIMIT_RULES),
            lambda: MaxTokensLimiter(max_token_count=MAX_QUERY_TOKENS),
            lambda: QueryParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
        ],
    )


schema = build_schema()


def sdl() -> str:
    return schema.as_str() + "\n"


__all__: list[Any] = ["build_schema", "schema", "sdl"]
