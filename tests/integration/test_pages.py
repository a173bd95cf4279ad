"""The public pages: served at pretty and file paths, valid HTML, linked to each other, locked down."""

from __future__ import annotations

import html5lib
import httpx
import pytest
from html5lib.html5parser import ParseError

from levqor.http.pages import PAGE_CSP, PAGES, PUBLIC_DIR

FILE_PATHS = {pretty: f"/public/{file}" for pretty, file in PAGES.items()}
SEED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "geolocation=(), microphone=()",
}


@pytest.fixture
def db_kind() -> str:
    """The pages do not touch the database: the servers of this module run on SQLite only."""
    return "sqlite"


def parse_strict(markup: bytes) -> object:
    """Parse by the WHATWG algorithm, failing on any parse error (html5lib's strict mode)."""
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(markup)


def links_of(document: object) -> list[tuple[str, str]]:
    """(attribute, url) of every link, stylesheet and resource in a parsed page."""
    return [
        (attribute, element.get(attribute))  # type: ignore[attr-defined]
        for element in document.iter()  # type: ignore[attr-defined]
        for attribute in ("href", "src")
        if element.get(attribute) is not None
    ]


def ids_of(document: object) -> set[str]:
    return {element.get("id") for element in document.iter() if element.get("id")}  # type: ignore[attr-defined]


@pytest.mark.parametrize("pretty", list(PAGES))
def test_each_page_is_served_at_both_paths_with_its_headers(client: httpx.Client, pretty: str) -> None:
    bodies = []
    for path in (pretty, FILE_PATHS[pretty]):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["Content-Security-Policy"] == PAGE_CSP
        for name, value in SEED_HEADERS.items():
            assert response.headers[name] == value
        assert response.headers["X-Request-Id"]
        assert "set-cookie" not in response.headers
        bodies.append(response.content)
    assert bodies[0] == bodies[1]
    head = client.head(pretty)
    assert head.status_code == 200
    assert head.content == b""


@pytest.mark.parametrize("pretty", list(PAGES))
def test_each_page_is_valid_html_with_title_language_and_one_heading(pretty: str) -> None:
    markup = (PUBLIC_DIR / PAGES[pretty]).read_bytes()
    assert markup.startswith(b"<!DOCTYPE html>\n")
    document = parse_strict(markup)
    assert document.get("lang") == "en"  # type: ignore[attr-defined]
    assert document.find("head/title").text.endswith("· Levqor")  # type: ignore[attr-defined]
    assert len(document.findall(".//h1")) == 1  # type: ignore[attr-defined]
    assert document.find(".//main") is not None  # type: ignore[attr-defined]
    assert not document.findall(".//script")  # type: ignore[attr-defined]  # the CSP would block it


def test_the_strict_parser_does_refuse_broken_markup() -> None:
    with pytest.raises(ParseError):
        parse_strict(b"<!DOCTYPE html><html lang=en><title>x</title><p>open <b>close</i></p>")


def test_every_link_of_every_page_resolves(client: httpx.Client) -> None:
    """Crawl from the FAQ: every same-site link answers 200, every #fragment names an element."""
    to_visit = ["/faq"]
    seen: set[str] = set()
    documents: dict[str, object] = {}
    fragments: list[tuple[str, str]] = []
    while to_visit:
        path = to_visit.pop()
        if path in seen:
            continue
        seen.add(path)
        response = client.get(path)
        assert response.status_code == 200, f"{path} answers {response.status_code}"
        if not response.headers["content-type"].startswith("text/html"):
            continue
        documents[path] = document = parse_strict(response.content)
        for _attribute, url in links_of(document):
            if url.startswith("mailto:"):
                assert url.endswith("@levqor.ai"), url
            elif url.startswith("#"):
                fragments.append((path, url[1:]))
            else:
                assert url.startswith("/"), f"{path} links off-site or relatively: {url}"
                target, _, fragment = url.partition("#")
                to_visit.append(target)
                if fragment:
                    fragments.append((target, fragment))
    assert set(PAGES) <= seen  # the four pages reach each other
    assert "/public/styles.css" in seen
    for path, fragment in fragments:
        assert fragment in ids_of(documents[path]), f"{path} has no #{fragment}"


def test_each_page_links_to_the_other_three(client: httpx.Client) -> None:
    for pretty in PAGES:
        document = parse_strict(client.get(pretty).content)
        assert set(PAGES) <= {url for _attribute, url in links_of(document)}


def test_the_stylesheet_is_served_as_css(client: httpx.Client) -> None:
    response = client.get("/public/styles.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")


def test_the_privacy_policy_names_what_the_service_stores(client: httpx.Client) -> None:
    text = client.get("/legal/privacy").text
    for stored in ("payload", "Email address", "locale", "currency", "SHA-256", "IP address", "user agent"):
        assert stored in text, stored


def test_a_missing_file_under_public_is_the_contracts_404(client: httpx.Client) -> None:
    response = client.get("/public/legal/nothing.html")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    outside = client.get("/public/%2e%2e/pyproject.toml")  # encoded, so the client sends it as is
    assert outside.status_code == 404
