"""A document's cost is measured in time linear in its text, and a document over the bounds is refused
before any validation rule walks its fragments; valid documents are still parsed and validated once."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest
from graphql import get_introspection_query, parse
from strawberry.extensions import ValidationCache

from levqor.schema import schema
from levqor.schema.documents import (
    DOCUMENT_CACHE_ENTRIES,
    MAX_EXPANDED_FIELDS,
    MAX_FIELDS_PER_KEY,
    SCHEMA_FIELD_WEIGHT,
    ParsedDocuments,
    document_cost,
)

CONTEXT = SimpleNamespace(levqor=SimpleNamespace(request_id="req-cost"), request=None, response=None)


def fragment_bomb(levels: int) -> str:
    """Each fragment spreads the next twice: ~50 bytes a level, 2^levels fields once spread."""
    fragments = " ".join(
        f"fragment F{i} on Query {{ health {{ ok }} ...F{i + 1} ...F{i + 1} }}" for i in range(levels)
    )
    return f"query {{ ...F0 }} {fragments} fragment F{levels} on Query {{ health {{ ok }} }}"


def test_the_expansion_is_counted_without_walking_it() -> None:
    # F_i selects 2 fields and twice F_{i+1}: F_i's expansion is 2 * (2^(4-i) - 1) fields for
    # fragment_bomb(3), and the operation spreads F0; every definition's expansion counts.
    fragments = sum(2 * (2 ** (4 - i) - 1) for i in range(4))
    assert document_cost(parse(fragment_bomb(3))).expanded_fields == 2 * (2**4 - 1) + fragments
    started = time.perf_counter()
    cost = document_cost(parse(fragment_bomb(200)))
    assert time.perf_counter() - started < 0.5
    assert cost.expanded_fields == MAX_EXPANDED_FIELDS + 1  # capped, not 2^200


def test_fragment_cycles_and_unknown_fragments_end_the_count() -> None:
    cycle = parse("query { ...A } fragment A on Query { health { ok } ...B } fragment B on Query { ...A }")
    # The operation and A select `health { ok }`; B, which spreads A while A is counted, nothing.
    assert document_cost(cycle).expanded_fields == 4
    assert document_cost(parse("query { ...Nowhere health { ok } }")).expanded_fields == 2


def test_an_unused_fragment_counts_too() -> None:
    # The alias limit walks each fragment definition's expansion, spread or not.
    unused_bomb = fragment_bomb(20).replace("query { ...F0 }", "query { health { ok } }")
    assert document_cost(parse(unused_bomb)).expanded_fields > MAX_EXPANDED_FIELDS


def test_fields_of_one_name_are_counted_through_fragments_and_inline_fragments() -> None:
    document = parse(
        "query { health { ok } ... on Query { health { ok } } ...A ...A } "
        "fragment A on Query { health { ts } }"
    )
    assert document_cost(document).fields_per_key == 4
    aliased = parse("query { a: health { ok } b: health { ok } }")
    assert document_cost(aliased).fields_per_key == 1


async def codes_and_messages(query: str) -> list[tuple[str, str]]:
    result = await schema.execute(query, context_value=CONTEXT)
    assert result.data is None
    return [((error.extensions or {}).get("code", ""), error.message) for error in result.errors or []]


@pytest.mark.parametrize("levels", [20, 30])
async def test_a_fragment_bomb_is_refused_at_once(levels: int) -> None:
    started = time.perf_counter()
    errors = await codes_and_messages(fragment_bomb(levels))
    assert time.perf_counter() - started < 1
    assert errors == [
        (
            "GRAPHQL_VALIDATION_FAILED",
            f"the document selects more than {MAX_EXPANDED_FIELDS} fields once its fragments are spread "
            f"(`__schema` counting as {SCHEMA_FIELD_WEIGHT})",
        )
    ]


async def test_many_fields_of_one_name_are_refused_at_once() -> None:
    started = time.perf_counter()
    errors = await codes_and_messages("{" + " health { ok }" * 480 + " }")
    assert time.perf_counter() - started < 1
    [(code, message)] = errors
    assert code == "GRAPHQL_VALIDATION_FAILED"
    assert f"more than {MAX_FIELDS_PER_KEY} fields of the same name" in message


async def test_a_document_at_the_bounds_runs() -> None:
    fields = " ".join(["health { ok }"] * MAX_FIELDS_PER_KEY)
    result = await schema.execute("{ " + fields + " }", context_value=CONTEXT)
    assert result.errors is None
    assert result.data == {"health": {"ok": True}}


async def test_a_valid_document_is_parsed_and_validated_once() -> None:
    # A text no other test sends, so the first execution is a miss of both caches.
    query = f"{{ h{uuid.uuid4().hex}: health {{ ok }} }}"
    parse_cache = ParsedDocuments(maxsize=DOCUMENT_CACHE_ENTRIES).cached_parse_document
    validation_cache = ValidationCache(maxsize=DOCUMENT_CACHE_ENTRIES).cached_validate_document
    await schema.execute(query, context_value=CONTEXT)
    parses, validations = parse_cache.cache_info(), validation_cache.cache_info()
    for _ in range(3):
        result = await schema.execute(query, context_value=CONTEXT)
        assert result.errors is None
    assert parse_cache.cache_info().hits == parses.hits + 3
    assert parse_cache.cache_info().misses == parses.misses
    assert validation_cache.cache_info().hits == validations.hits + 3
    assert validation_cache.cache_info().misses == validations.misses


async def test_the_full_introspection_query_runs_but_not_many_schemas_in_one_document() -> None:
    full = await schema.execute(get_introspection_query(descriptions=True), context_value=CONTEXT)
    assert full.errors is None
    wide = " ".join(f"s{index}: __schema {{ types {{ name }} }}" for index in range(5))
    [(code, message)] = await codes_and_messages("{ " + wide + " }")
    assert code == "GRAPHQL_VALIDATION_FAILED"
    assert f"`__schema` counting as {SCHEMA_FIELD_WEIGHT}" in message
