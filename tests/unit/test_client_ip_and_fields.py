"""Pure pieces of auth and limits: the client address behind proxies, the presented key, and how many
root mutation fields a GraphQL document runs."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import parse

from levqor.http.access import presented_key
from levqor.http.client_ip import ClientAddress, parse_address
from levqor.http.ratelimit import is_unlimited
from levqor.schema.ratelimit import root_field_count


def scope(peer: str | None, *headers: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 50000) if peer else None,
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
    }


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "client"),
    [
        # No trusted proxy: the header is ignored, whatever it says.
        ((), "198.51.100.7", ["203.0.113.9"], "198.51.100.7"),
        # A peer that is not trusted cannot speak for anyone else.
        (("10.0.0.0/8",), "198.51.100.7", ["203.0.113.9"], "198.51.100.7"),
        # The right-most address that is not a trusted proxy is the client; forged ones left of it lose.
        (("10.0.0.0/8",), "10.0.0.2", ["6.6.6.6, 203.0.113.9, 10.0.0.5"], "203.0.113.9"),
        # Several header lines are one list, in order.
        (("10.0.0.0/8",), "10.0.0.2", ["6.6.6.6", "203.0.113.9", "10.0.0.5"], "203.0.113.9"),
        # Every hop trusted: the farthest one we can see.
        (("10.0.0.0/8",), "10.0.0.2", ["10.0.0.9, 10.0.0.5"], "10.0.0.9"),
        # A trusted peer without the header is the client itself.
        (("10.0.0.2",), "10.0.0.2", [], "10.0.0.2"),
        # Ports and brackets as some proxies write them; IPv4-mapped IPv6 is the IPv4 address.
        (("10.0.0.0/8",), "10.0.0.2", ["203.0.113.9:4711"], "203.0.113.9"),
        (("10.0.0.0/8",), "10.0.0.2", ["[2001:db8::1]:443"], "2001:db8::1"),
        (("10.0.0.0/8",), "::ffff:10.0.0.2", ["::ffff:203.0.113.9"], "203.0.113.9"),
        # Garbage stops the walk at the last address our proxies wrote.
        (("10.0.0.0/8",), "10.0.0.2", ["203.0.113.9, not-an-ip, 10.0.0.5"], "10.0.0.5"),
    ],
)
def test_client_address(trusted: tuple[str, ...], peer: str, forwarded: list[str], client: str) -> None:
    headers = [("X-Forwarded-For", value) for value in forwarded]
    assert ClientAddress(trusted).of(scope(peer, *headers)) == client


def test_client_address_without_a_peer() -> None:
    assert ClientAddress(("10.0.0.0/8",)).of(scope(None, ("X-Forwarded-For", "1.2.3.4"))) == "unknown"


def test_parse_address_refuses_non_addresses() -> None:
    assert parse_address("example.com") is None
    assert parse_address("") is None
    assert str(parse_address(" 192.0.2.1 ")) == "192.0.2.1"


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ([], None),
        ([("X-Api-Key", "abc")], "abc"),
        ([("Authorization", "Bearer lvq_x")], "lvq_x"),
        ([("Authorization", "bearer  lvq_x ")], "lvq_x"),
        ([("Authorization", "Basic dXNlcjpwdw==")], None),
        # X-Api-Key wins over a bearer token, in either order.
        ([("Authorization", "Bearer b"), ("X-Api-Key", "a")], "a"),
        ([("X-Api-Key", "")], ""),  # sent but empty: a bad key, not no key
    ],
)
def test_presented_key(headers: list[tuple[str, str]], key: str | None) -> None:
    assert presented_key(scope("127.0.0.1", *headers)) == key


@pytest.mark.parametrize(
    ("document", "fields"),
    [
        ("mutation { a { x } }", 1),
        ("mutation { a: f { x } b: f { x } c: f { x } }", 3),
        ("mutation { __typename f { x } }", 1),
        # Fields with one response key are merged into one execution.
        ("mutation { f { x } f { y } }", 1),
        (
            "mutation { ...F ... on Mutation { c: f { x } } } "
            "fragment F on Mutation { a: f { x } b: f { x } }",
            3,
        ),
        ("mutation { ...F ...F } fragment F on Mutation { a: f { x } }", 1),
        ("query { a: f b: f }", 2),
    ],
)
def test_root_field_count(document: str, fields: int) -> None:
    assert root_field_count(parse(document), None) == fields


def test_root_field_count_of_the_named_operation() -> None:
    document = parse("mutation One { a: f } mutation Two { a: f b: f c: f }")
    assert root_field_count(document, "One") == 1
    assert root_field_count(document, "Two") == 3


@pytest.mark.parametrize(
    ("path", "unlimited"),
    [
        ("/", True),
        ("/health", True),
        ("/metrics", True),
        ("/faq", True),
        ("/legal/privacy", True),
        ("/public/legal/terms.html", True),
        ("/public/styles.css", True),
        ("/public/metrics", False),
        ("/api/v1/intake", False),
        ("/graphql", False),
        ("/healthz", False),
    ],
)
def test_unlimited_paths(path: str, unlimited: bool) -> None:
    assert is_unlimited(path) is unlimited
