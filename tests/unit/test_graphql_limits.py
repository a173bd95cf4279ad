"""The GraphQL document limits (tokens, depth, aliases) hold on every request, also once the
document is cached: the second sending of a refused document is refused the same way."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from levqor.schema import schema
from levqor.schema.documents import MAX_ALIASES, MAX_QUERY_DEPTH, MAX_QUERY_TOKENS

# What `ClientErrors` reads from the GraphQL context; these documents never reach a resolver.
CONTEXT = SimpleNamespace(levqor=SimpleNamespace(request_id="req-limits"), request=None, response=None)


async def codes_and_messages(query: str) -> list[tuple[str, str]]:
    result = await schema.execute(query, context_value=CONTEXT)
    assert result.data is None
    return [((error.extensions or {}).get("code", ""), error.message) for error in result.errors or []]


def nested(depth: int) -> str:
    # `jobs { edges { node { ... } } }` would need a deep type; the limiter counts field nesting
    # before the field names are checked, so made-up names do.
    return "{ " + "a { " * depth + "b" + " }" * depth + " }"


@pytest.mark.parametrize("attempt", ["first", "cached"])
async def test_a_document_over_the_token_limit_does_not_parse(attempt: str) -> None:
    query = "{ " + "__typename " * MAX_QUERY_TOKENS + "}"
    errors = await codes_and_messages(query)
    assert [code for code, _ in errors] == ["GRAPHQL_PARSE_FAILED"]
    assert f"more than {MAX_QUERY_TOKENS} tokens" in errors[0][1]


@pytest.mark.parametrize("attempt", ["first", "cached"])
async def test_a_document_nested_too_deeply_is_refused(attempt: str) -> None:
    errors = await codes_and_messages(nested(MAX_QUERY_DEPTH + 1))
    assert {code for code, _ in errors} == {"GRAPHQL_VALIDATION_FAILED"}
    assert any(f"exceeds maximum operation depth of {MAX_QUERY_DEPTH}" in message for _, message in errors)


@pytest.mark.parametrize("attempt", ["first", "cached"])
async def test_too_many_aliases_are_refused(attempt: str) -> None:
    fields = " ".join(f"h{index}: health {{ ok }}" for index in range(MAX_ALIASES + 1))
    errors = await codes_and_messages("{ " + fields + " }")
    assert [code for code, _ in errors] == ["GRAPHQL_VALIDATION_FAILED"]
    assert "aliases" in errors[0][1]


async def test_a_document_within_the_limits_runs() -> None:
    fields = " ".join(f"h{index}: health {{ ok }}" for index in range(MAX_ALIASES))
    for _ in range(2):  # parsed, then from the cache
        result = await schema.execute("{ " + fields + " }", context_value=CONTEXT)
        assert result.errors is None
        assert result.data == {f"h{index}": {"ok": True} for index in range(MAX_ALIASES)}
