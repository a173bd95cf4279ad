"""A method a REST path does not serve is 405, and its `Allow` names every method the path serves
(RFC 9110 §15.5.6), whichever of its routes the method would have been."""

from __future__ import annotations

import httpx
import pytest

from levqor.rest.routing import ApiPath
from tests.conftest import LiveServer
from tests.support import UNKNOWN_ID

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def served(live: LiveServer) -> dict[str, set[str]]:
    """Each REST path of the running app with the methods it serves."""
    return {
        route.path: set(route.operations)
        for route in live.server.config.app.routes
        if isinstance(route, ApiPath)
    }


def test_every_rest_path_answers_405_naming_all_its_methods(server: LiveServer, client: httpx.Client) -> None:
    paths = served(server)
    assert {"GET", "PATCH"} <= paths["/api/v1/users/{user_id}"]
    for path, methods in sorted(paths.items()):
        url = (
            path.replace("{user_id}", UNKNOWN_ID)
            .replace("{job_id}", UNKNOWN_ID)
            .replace("{key_id}", UNKNOWN_ID)
        )
        allowed = set(methods) | ({"HEAD"} if "GET" in methods else set())
        for method in sorted(set(METHODS) - methods):
            response = client.request(method, url)
            assert response.status_code == 405, (method, path, response.text)
            assert {m.strip() for m in response.headers["allow"].split(",")} == allowed, (method, path)
            assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("method", ["PATCH", "GET", "DELETE"])
def test_a_concrete_path_is_not_an_id_of_its_template(client: httpx.Client, method: str) -> None:
    """As OpenAPI matches paths: /api/v1/users/upsert serves POST only; it is no user id."""
    response = client.request(method, "/api/v1/users/upsert")
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"


def test_ids_that_are_not_uuids_are_still_not_found(client: httpx.Client) -> None:
    response = client.get("/api/v1/users/nope")
    assert response.status_code == 404
    assert response.json()["message"] == "no user with id 'nope'"
