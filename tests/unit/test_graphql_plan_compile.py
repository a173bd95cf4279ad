"""Which documents get a compiled plan (levqor.schema.plans) and which take the general path."""

from __future__ import annotations

import pytest

from levqor.schema import schema
from levqor.schema.plans import operation_plan

SUBMIT = (
    "mutation Submit($input: SubmitJobInput!) { submitJob(input: $input) "
    "{ job { id status } userErrors { field message code } } }"
)

COMPILED = [
    pytest.param(SUBMIT, None, id="bench submitJob"),
    pytest.param(SUBMIT, "Submit", id="named operation"),
    pytest.param("{ health { ok ts } }", None, id="query"),
    pytest.param("{ __typename a: health { ok __typename } b: health { ts } }", None, id="aliases"),
    pytest.param(
        "query($id: ID!) { job(id: $id) { id payload costEstimate runAt status } }", None, id="scalars"
    ),
    pytest.param(
        "{ jobs(first: 2) { edges { cursor node { id } } pageInfo { hasNextPage } } }", None, id="lists"
    ),
    pytest.param("query A { health { ok } } query B { workflows { name } }", "B", id="chosen operation"),
    pytest.param(
        "mutation { a: cancelJob(id: 1) { job { id } } b: retryJob(id: 2) { job { id } } }", None, id="batch"
    ),
]

FALLBACK = [
    pytest.param("{ health { ok ", None, id="does not parse"),
    pytest.param("{ health { nope } }", None, id="does not validate"),
    pytest.param("query A { health { ok } } query B { health { ok } }", None, id="no operation chosen"),
    pytest.param("query A { health { ok } }", "C", id="unknown operation"),
    pytest.param("{ health { ...H } } fragment H on Health { ok }", None, id="fragment"),
    pytest.param("{ health { ... on Health { ok } } }", None, id="inline fragment"),
    pytest.param("query($s: Boolean!) { health { ok @include(if: $s) } }", None, id="directive"),
    pytest.param("query($id: ID!) { job(id: $id) { id events { type } } }", None, id="field with a resolver"),
    pytest.param("{ health { ok } health { ts } }", None, id="merged fields"),
    pytest.param("{ __schema { queryType { name } } }", None, id="introspection"),
    pytest.param("subscription { jobUpdates(id: 1) { id } }", None, id="subscription"),
]


@pytest.mark.parametrize(("query", "operation_name"), COMPILED)
def test_plain_operations_compile(query: str, operation_name: str | None) -> None:
    plan = operation_plan(schema, query, operation_name)
    assert plan is not None
    assert plan is operation_plan(schema, query, operation_name)  # compiled once


@pytest.mark.parametrize(("query", "operation_name"), FALLBACK)
def test_other_operations_take_the_general_path(query: str, operation_name: str | None) -> None:
    assert operation_plan(schema, query, operation_name) is None


def test_mutations_are_marked_for_the_get_refusal() -> None:
    mutation = operation_plan(schema, SUBMIT, None)
    query = operation_plan(schema, "{ health { ok } }", None)
    assert mutation is not None
    assert mutation.is_mutation
    assert query is not None
    assert not query.is_mutation
