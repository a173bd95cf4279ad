"""GraphiQL at /graphql in a real headless Chromium, with every request off loopback blocked: the
editor renders from Levqor's own files, runs a query and a subscription with the API key typed in its
headers editor, opens a dialog, and logs no console error (so no Content-Security-Policy violation)
(issue 14, item 4). Needs Debian's `chromium` (/usr/bin/chromium)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser_support import Guard, chromium, screenshot
from tests.conftest import ServerProcess, start_server_process, stop_server_process
from tests.ops_support import server_env

KEY = "graphiql-browser-key-0123456789"
# `jobs` needs a key once keys are configured: its answer shows the header reached the server.
QUERY = "{ health { ok } jobs(first: 1) { edges { cursor } } }"
SUBSCRIPTION = 'subscription { jobUpdates(id: "JOB_ID") { jobId status } }'
RENDER_TIMEOUT_MS = 15_000
# GraphiQL re-reads the edited document after a pause; run before then, it takes the old one.
EDITOR_SETTLE_MS = 1_000


@pytest.fixture
def keyed_server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_server_process(server_env(db_url, API_KEYS=KEY), tmp_path / "server.log")
    yield proc
    stop_server_process(proc)


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium() as browser:
        yield browser.new_page(viewport={"width": 1280, "height": 800})


def set_editor(page: Page, editor: str, text: str) -> None:
    """Sets the visible GraphiQL editor's text through CodeMirror's API (`setValue`), as typing would."""
    page.locator(f"{editor} .CodeMirror:visible").evaluate(
        "(node, text) => node.CodeMirror.setValue(text)", text
    )
    page.wait_for_timeout(EDITOR_SETTLE_MS)


def run_and_read(page: Page, expected: str) -> object:
    """Runs the document in the editor and returns the JSON the response pane shows."""
    page.locator(".graphiql-execute-button").click()
    response = page.locator(".graphiql-response .CodeMirror")
    response.get_by_text(expected).first.wait_for(timeout=RENDER_TIMEOUT_MS)
    return json.loads(response.evaluate("node => node.CodeMirror.getValue()"))


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_graphiql_runs_a_query_with_the_key_and_nothing_off_loopback(
    page: Page, keyed_server: ServerProcess, db_kind: str
) -> None:
    guard = Guard()
    page.route("**/*", guard.only_loopback)
    guard.watch_page(page)
    socket_frames: list[str] = []
    page.on(
        "websocket", lambda socket: socket.on("framesent", lambda frame: socket_frames.append(str(frame)))
    )

    page.goto(f"{keyed_server.url}/graphql", wait_until="load")
    page.locator(".graphiql-query-editor .CodeMirror").wait_for(timeout=RENDER_TIMEOUT_MS)
    page.get_by_role("button", name="Headers").click()
    set_editor(page, ".graphiql-editor-tool", json.dumps({"X-Api-Key": KEY}))
    set_editor(page, ".graphiql-query-editor", QUERY)
    assert run_and_read(page, '"edges"') == {"data": {"health": {"ok": True}, "jobs": {"edges": []}}}
    screenshot(page, "graphiql-1280")

    # A subscription goes over the graphql-transport-ws socket, with the key in connection_init.
    submitted = httpx.post(
        f"{keyed_server.url}/api/v1/intake",
        json={"workflow": "echo", "payload": {}},
        headers={"X-Api-Key": KEY},
    )
    job_id = submitted.json()["job_id"]
    set_editor(page, ".graphiql-query-editor", SUBSCRIPTION.replace("JOB_ID", job_id))
    answer = run_and_read(page, "jobId")
    assert answer == {"data": {"jobUpdates": {"jobId": job_id, "status": "QUEUED"}}}
    init = json.loads(socket_frames[0])
    assert init == {"type": "connection_init", "payload": {"X-Api-Key": KEY}}

    # GraphiQL's dialogs write the one inline style the page's policy allows by its hash.
    page.get_by_role("button", name="Open settings dialog").click()
    page.get_by_role("dialog").wait_for(timeout=RENDER_TIMEOUT_MS)
    page.keyboard.press("Escape")

    assert guard.off_loopback == []
    assert guard.console_errors == []
