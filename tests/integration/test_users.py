"""Users: idempotent upsert by normalised email, normalisation, meta merging and PATCH validation."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DB_KINDS, LiveServer
from tests.support import assert_error, row_counts, shared_server


def upsert(http: httpx.Client, **fields: Any) -> httpx.Response:
    return http.post("/api/v1/users/upsert", json={"name": "Grace", **fields})


@pytest.fixture(scope="module", params=DB_KINDS)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """One server for the table-driven tests; each of them works on a user of its own."""
    workdir: Path = tmp_path_factory.mktemp("users")
    live: LiveServer
    with shared_server(request, str(request.param), workdir) as live, live.client() as http:
        yield http


def fresh_email() -> str:
    return f"u-{uuid.uuid4().hex[:12]}@example.com"


def test_upsert_is_idempotent_across_case_and_whitespace(client: httpx.Client, db_url: str) -> None:
    first = upsert(client, email="Grace.Hopper@Example.ORG")
    assert first.status_code == 201
    user = first.json()["user"]
    assert user["email"] == "grace.hopper@example.org"
    assert (user["locale"], user["currency"], user["meta"]) == ("en-GB", "GBP", {})

    for variant in ("grace.hopper@example.org", "  GRACE.HOPPER@EXAMPLE.ORG\t", "Grace.Hopper@example.org"):
        again = upsert(client, email=variant, name="Grace H.")
        assert again.status_code == 200, again.text
        body = again.json()
        assert body["updated"] is True
        assert "created" not in body
        assert body["user"]["id"] == user["id"]
        assert body["user"]["email"] == "grace.hopper@example.org"
        assert body["user"]["created_at"] == user["created_at"]
        assert body["user"]["updated_at"] >= user["updated_at"]
    assert row_counts(db_url)["users"] == 1


def test_upsert_keeps_fields_it_was_not_given(client: httpx.Client) -> None:
    upsert(client, email="k@example.com", locale="fr-FR", currency="EUR", meta={"a": 1})
    again = upsert(client, email="k@example.com", name="Kay").json()["user"]
    assert (again["name"], again["locale"], again["currency"], again["meta"]) == (
        "Kay",
        "fr-FR",
        "EUR",
        {"a": 1},
    )


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("en_gb", "en-GB"),
        ("EN-us", "en-US"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("de", "de"),
        (" pt-br ", "pt-BR"),
    ],
)
def test_locale_is_normalised(shared: httpx.Client, sent: str, stored: str) -> None:
    created = upsert(shared, email=fresh_email(), locale=sent)
    assert created.status_code == 201, created.text
    user = created.json()["user"]
    assert user["locale"] == stored
    shared.patch(f"/api/v1/users/{user['id']}", json={"locale": "de"})
    patched = shared.patch(f"/api/v1/users/{user['id']}", json={"locale": sent})
    assert patched.json()["user"]["locale"] == stored


def test_meta_merges_and_null_removes_a_key(client: httpx.Client) -> None:
    user = upsert(client, email="m@example.com", meta={"a": 1, "b": {"deep": [1, 2]}}).json()["user"]
    path = f"/api/v1/users/{user['id']}"

    merged = client.patch(path, json={"meta": {"b": None, "c": "three"}}).json()["user"]
    assert merged["meta"] == {"a": 1, "c": "three"}

    via_upsert = upsert(client, email="m@example.com", meta={"a": None, "d": True}).json()["user"]
    assert via_upsert["meta"] == {"c": "three", "d": True}

    unchanged = client.patch(path, json={"meta": {}}).json()["user"]
    assert unchanged["meta"] == {"c": "three", "d": True}
    renamed = client.patch(path, json={"name": "Em"}).json()["user"]
    assert renamed["meta"] == {"c": "three", "d": True}
    assert renamed["name"] == "Em"
    assert client.get(path).json()["meta"] == {"c": "three", "d": True}


def test_patch_changes_only_what_it_names(client: httpx.Client) -> None:
    user = upsert(client, email="p@example.com", locale="en-GB", currency="GBP").json()["user"]
    patched = client.patch(f"/api/v1/users/{user['id']}", json={"currency": "USD"}).json()["user"]
    assert patched["currency"] == "USD"
    assert {k: v for k, v in patched.items() if k not in {"currency", "updated_at"}} == {
        k: v for k, v in user.items() if k not in {"currency", "updated_at"}
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, None),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": None}, "name"),
        ({"name": 7}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"locale": "not a locale"}, "locale"),
        ({"locale": None}, "locale"),
        ({"currency": "JPY"}, "currency"),
        ({"currency": None}, "currency"),
        ({"meta": ["a"]}, "meta"),
        ({"meta": "x"}, "meta"),
        ({"email": "new@example.com"}, "email"),
        ({"id": "6f1c1a2e-0000-4000-8000-000000000000"}, "id"),
        ({"name": "ok", "nickname": "x"}, "nickname"),
    ],
)
def test_patch_refuses_bad_fields_and_changes_nothing(
    shared: httpx.Client, body: dict[str, Any], field: str | None
) -> None:
    user = upsert(shared, email=fresh_email()).json()["user"]
    response = shared.patch(f"/api/v1/users/{user['id']}", json=body)
    assert_error(response, 400, "invalid_request", field=field)
    assert shared.get(f"/api/v1/users/{user['id']}").json() == user


def test_concurrent_first_upserts_create_one_user(server: Any, db_url: str) -> None:
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def race(index: int) -> None:
        email = "Race@Example.com" if index % 2 else " race@example.com"
        with server.client() as http:
            barrier.wait(timeout=30)
            response = upsert(http, email=email, name=f"Racer {index}")
        with lock:
            results.append(response)

    workers = [threading.Thread(target=race, args=(index,)) for index in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    statuses = sorted(response.status_code for response in results)
    assert statuses == [200] * (threads_n - 1) + [201], [r.text for r in results]
    assert len({response.json()["user"]["id"] for response in results}) == 1
    assert row_counts(db_url)["users"] == 1


FULL_WIDTH_JOHN = "\uff4a\uff4f\uff48\uff4e"  # "john" in full-width letters


@pytest.mark.parametrize(
    ("first", "look_alikes"),
    [
        ("straße@example.com", ["strasse@example.com", "STRASSE@example.com", "Straße@Example.com"]),
        (f"{FULL_WIDTH_JOHN}@example.com", ["john@example.com", "JOHN@example.com"]),
        ("anna@example.com", [f"anna@{chr(0xFF45)}xample.com", "ANNA@EXAMPLE.COM "]),  # full-width e
    ],
)
def test_email_look_alikes_are_one_user(
    client: httpx.Client, db_url: str, first: str, look_alikes: list[str]
) -> None:
    """NFKC and case folding before comparing: a look-alike address upserts and finds the same user,
    which keeps the address it was first given."""
    created = upsert(client, email=first)
    assert created.status_code == 201, created.text
    user = created.json()["user"]
    for variant in look_alikes:
        again = upsert(client, email=variant, name="Again")
        assert again.status_code == 200, (variant, again.text)
        assert again.json()["user"]["id"] == user["id"]
        assert again.json()["user"]["email"] == user["email"]
        found = client.get("/api/v1/users", params={"email": variant})
        assert found.status_code == 200, (variant, found.text)
        assert found.json()["id"] == user["id"]
    assert row_counts(db_url)["users"] == 1


def test_addresses_that_only_look_close_stay_apart(client: httpx.Client, db_url: str) -> None:
    """Folding is Unicode's compatibility caseless match, not a confusables map: Cyrillic a (U+0430) is
    not Latin a."""
    assert upsert(client, email="anna@example.com").status_code == 201
    assert upsert(client, email="\u0430nna@example.com").status_code == 201
    assert row_counts(db_url)["users"] == 2
