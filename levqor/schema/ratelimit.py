"""Each root mutation field counts as one request against the rate limits (CONTRACT.md §3).

The HTTP request has paid for one field in the request gateway; this extension charges the others before
anything runs, so 25 aliased `submitJob` fields cost 25 and a document over the allowance does nothing
at all. Queries are charged per HTTP request only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any, Protocol

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    parse,
)
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension

from levqor.errors import RateLimited

# Distinct (query text, operation name) pairs whose count is kept; bounded against unique documents.
MUTATION_COUNT_CACHE_ENTRIES = 256


class Allowance(Protocol):
    """What the request gateway leaves on the request (`levqor.http.ratelimit.Allowance`)."""

    request_counted: bool

    async def charge(self, cost: int) -> None: ...


def root_field_count(document: DocumentNode, operation_name: str | None) -> int:
    """Distinct response keys at the root of the operation, through fragments: what will execute
    (fields with the same response key are merged into one, per the spec's field collection)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    keys: set[str] = set()
    pending: list[SelectionSetNode] = [operation.selection_set]
    seen_fragments: set[str] = set()
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                if selection.name.value != "__typename":
                    keys.add((selection.alias or selection.name).value)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in fragments and name not in seen_fragments:
                    seen_fragments.add(name)
                    pending.append(fragments[name].selection_set)
    return len(keys)


class MutationFieldRateLimit(SchemaExtension):
    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            refusal = await charge_mutation_fields(
                context.context, document, context.query, context.operation_name
            )
            if refusal is not None:
                # A result set before execution replaces it: no field of the document runs.
                context.result = refusal
        yield


async def charge_mutation_fields(
    graphql_context: Any, document: DocumentNode, query: str | None, operation_name: str | None
) -> ExecutionResult | None:
    """Charge the root mutation fields the request has not paid for yet; the refusal to answer
    instead of executing, when the allowance is spent (and the response marked 429)."""
    allowance = _allowance_of(graphql_context)
    if allowance is None:
        return None
    fields = _mutation_field_count(document, query, operation_name)
    if not fields:
        return None
    try:
        await allowance.charge(fields - 1 if allowance.request_counted else fields)
    except RateLimited as exc:
        _mark_response(graphql_context, exc)
        return ExecutionResult(data=None, errors=[GraphQLError(exc.message, original_error=exc)])
    return None


def _mutation_field_count(document: DocumentNode, query: str | None, operation_name: str | None) -> int:
    """Root fields of the operation if it is a mutation, else 0."""
    if query is None:  # a document given without its text: nothing to key a cache on
        return _count_mutation_fields(document, operation_name)
    return _mutation_field_count_of_text(query, operation_name)


@lru_cache(maxsize=MUTATION_COUNT_CACHE_ENTRIES)
def _mutation_field_count_of_text(query: str, operation_name: str | None) -> int:
    # Counted once per query text and operation name. The text parsed before it got here (a
    # document of the request), so parsing it again, once, cannot fail.
    return _count_mutation_fields(parse(query, no_location=True), operation_name)


def _count_mutation_fields(document: DocumentNode, operation_name: str | None) -> int:
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation != OperationType.MUTATION:
        return 0
    return root_field_count(document, operation_name)


def _allowance_of(graphql_context: Any) -> Allowance | None:
    request = getattr(graphql_context, "request", None)
    state = getattr(request, "scope", {}).get("state", {}) if request is not None else {}
    allowance = state.get("rate_limit")
    return allowance if allowance is not None and hasattr(allowance, "charge") else None


def _mark_response(graphql_context: Any, exc: RateLimited) -> None:
    response = getattr(graphql_context, "response", None)
    if response is not None:
        response.status_code = exc.status
        response.headers.update(exc.http_headers())
