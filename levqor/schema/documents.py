"""A GraphQL document is read and checked once per distinct query text, not once per request.

Clients send the same few documents over and over with new variables, so the token limit, the parse
and the validation (the spec's rules plus the depth and alias limits) are cached by the query text
and run in one operation hook. Strawberry skips its own parse when a document is already set, and
its own validation when the errors are already known; a document that does not parse is left to
Strawberry's parse step, so the syntax error goes through `LevqorErrors` like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse, specified_rules
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter, SchemaExtension
from strawberry.schema.schema import validate_document

MAX_QUERY_DEPTH = 10
MAX_QUERY_TOKENS = 2_000
# Room for a batch of 25 aliased mutations; each root mutation field is charged to the rate limits.
MAX_ALIASES = 30
# Distinct query texts kept; bounded so a client sending unique documents cannot grow memory.
DOCUMENT_CACHE_ENTRIES = 256

# The depth and alias limiters each make a new validation-rule class when constructed. Built once
# here, so the rules are the same objects on every request and the validation cache, which keys on
# them, hits.
LIMIT_RULES: tuple[type[ASTValidationRule], ...] = (
    *QueryDepthLimiter(max_depth=MAX_QUERY_DEPTH).validation_rules,
    *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
)


def with_limit_rules(rules: tuple[type[ASTValidationRule], ...]) -> tuple[type[ASTValidationRule], ...]:
    """A request's validation rules: the given ones, then the depth and alias limits."""
    return (*rules, *LIMIT_RULES)


# What a request is validated against when nothing else asks for other rules: Strawberry's default
# (the spec's rules) with the limits. The key of the cache below, for both GraphQL paths.
REQUEST_RULES = with_limit_rules(tuple(specified_rules))


def prepared_document(
    schema: GraphQLSchema, query: str, rules: tuple[type[ASTValidationRule], ...]
) -> tuple[DocumentNode, list[GraphQLError]] | None:
    """The document and its validation errors, or None when it does not parse (or is over the
    token limit). A text that does not parse is not kept: Strawberry parses it again to report the
    error, and remembering failures would let a stream of unique bad texts fill the cache."""
    try:
        return _parsed_and_validated(schema, query, rules)
    except GraphQLError:
        return None


@lru_cache(maxsize=DOCUMENT_CACHE_ENTRIES)
def _parsed_and_validated(
    schema: GraphQLSchema, query: str, rules: tuple[type[ASTValidationRule], ...]
) -> tuple[DocumentNode, list[GraphQLError]]:
    # Keyed on the query text: a key holding the document itself would be hashed node by node (AST
    # nodes are frozen dataclasses) on every request. A syntax error raised here is not cached.
    document = parse(query, max_tokens=MAX_QUERY_TOKENS)
    return document, validate_document(schema, document, rules)


class PreparedDocument(SchemaExtension):
    """Sets the token limit and the extra validation rules, and the cached document and its
    validation errors, before Strawberry's own parse and validation steps."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        # Strawberry's own parse (of a document that does not parse) must count tokens too.
        context.parse_options["max_tokens"] = MAX_QUERY_TOKENS
        context.validation_rules = with_limit_rules(context.validation_rules)
        if context.query is not None and context.graphql_document is None:
            prepared = prepared_document(context.schema._schema, context.query, context.validation_rules)
            if prepared is not None:
                context.graphql_document, errors = prepared
                # A list, even empty, tells Strawberry that validation has run; a copy, as the
                # cached one is shared by every request with this document.
                context.pre_execution_errors = list(errors)
        yield
