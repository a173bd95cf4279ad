"""The dashboard in a real headless Chromium against `levqor serve` as a subprocess, with every request
off loopback blocked and recorded and the console's errors collected (issue 14, "What it must show"):
sign in; a job submitted over REST appears on the list and turns succeeded on its page without a
reload; filter and share the URL; retry a failed job and cancel a queued one from the list; a
delivery and its attempts; spend against a budget; a jobs:read key sees no retry button and gets 403
posting anyway; a forged cross-site POST is refused. Each page is saved at 1280 and 390 px wide under
tests/.screenshots. One server and one browser for the module."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from tests.browser_support import Guard, chromium, screenshot
from tests.callback_support import Receiver, start_receiver
from tests.conftest import ROOT, TEST_WEBHOOK_SECRET, ServerProcess, start_server_process, stop_server_process
from tests.integration.test_job_control_http import submit
from tests.ops_support import server_env
from tests.queue_support import TEST_WORKFLOWS

ADMIN_KEY = "dashboard-browser-admin-key-0123456789"
WIDTHS = (1280, 390)
TIMEOUT_MS = 15_000
EVIL_ORIGIN = "http://evil.example"  # answered by the test itself: never reaches a network


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("dashboard-browser")
    env = server_env(
        f"sqlite:///{folder / 'levqor.db'}",
        API_KEYS=ADMIN_KEY,
        LEVQOR_SESSION_SECRET="dashboard-browser-session-secret-0123456789",
        LEVQOR_INPROCESS_WORKER="true",
        LEVQOR_WORKFLOWS=TEST_WORKFLOWS,
        PYTHONPATH=str(ROOT),
        LEVQOR_CALLBACK_ALLOW_PRIVATE="true",
        LEVQOR_WEBHOOK_SECRET=TEST_WEBHOOK_SECRET,
        LEVQOR_CALLBACK_RETRY_S="1",
    )
    proc = start_server_process(env, folder / "server.log")
    yield proc
    stop_server_process(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as shared:
        yield shared


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found, stop = start_receiver()
    yield found
    stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-Api-Key": ADMIN_KEY}, timeout=30) as http:
        yield http


@pytest.fixture
def guard() -> Iterator[Guard]:
    watching = Guard()
    yield watching
    assert watching.off_loopback == []
    assert watching.console_errors == []


@pytest.fixture
def new_context(browser: Browser, guard: Guard) -> Iterator[Callable[..., BrowserContext]]:
    contexts: list[BrowserContext] = []

    def make(width: int = 1280) -> BrowserContext:
        context = browser.new_context(viewport={"width": width, "height": 900})
        guard.watch_context(context)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


def sign_in(context: BrowserContext, server: ServerProcess, key: str, path: str = "/dashboard/") -> Page:
    page = context.new_page()
    page.goto(f"{server.url}{path}")
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next="))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.url}{path}")
    return page


def wait_status(api: httpx.Client, job_id: str, status: str) -> None:
    deadline = time.monotonic() + 20
    while api.get(f"/api/v1/jobs/{job_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"{job_id} never became {status}"
        time.sleep(0.05)


def shoot(page: Page, name: str) -> None:
    """Saves the page at each width, and checks that it fits: wide tables scroll in their own box,
    the page itself never sideways."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (name, width)
        screenshot(page, f"dashboard-{name}-{width}")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_sign_in_and_jobs_appear_and_finish_live(
    server: ServerProcess, api: httpx.Client, new_context: Callable[..., BrowserContext]
) -> None:
    context = new_context()
    login = context.new_page()
    login.goto(f"{server.url}/dashboard/login")
    shoot(login, "login")
    login.close()
    page = sign_in(context, server, ADMIN_KEY, "/dashboard/jobs")
    page.evaluate("window.notReloaded = true")
    appeared = submit(api, "sleep", {"seconds": 4})
    # The list refreshes itself: the new job shows up with no reload.
    expect(page.get_by_role("link", name=appeared)).to_be_visible(timeout=TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True
    shoot(page, "jobs")

    page.get_by_role("link", name=appeared).click()
    expect(page.locator("[data-job-status]")).to_have_text(re.compile("queued|running"))
    page.evaluate("window.notReloaded = true")
    expect(page.locator("[data-job-status]")).to_have_text("succeeded", timeout=TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True
    # The whole page follows the job, not its badge alone: its result, its finish time and its
    # timeline as the server draws them, and no cancel button once it has ended.
    expect(page.locator("[data-job-timeline] tr").last).to_contain_text("succeeded")
    expect(page.get_by_text('"slept_s": 4')).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("No result yet.")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel…")).to_have_count(0)
    expect(page.locator("[data-job-timeline] tr").last).to_contain_text(" UTC")
    assert page.evaluate("window.notReloaded") is True
    shoot(page, "job")

    # Paused, a job page stays as it was.
    paused = submit(api, "sleep", {"seconds": 2})
    page.goto(f"{server.url}/dashboard/jobs/{paused}")
    page.get_by_role("button", name="Pause live updates").click()
    wait_status(api, paused, "succeeded")
    page.wait_for_timeout(500)
    expect(page.locator("[data-job-status]")).not_to_have_text("succeeded")
    page.get_by_role("button", name="Resume live updates").click()
    expect(page.locator("[data-job-status]")).to_have_text("succeeded", timeout=TIMEOUT_MS)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You have signed out.")).to_be_visible()
    page.goto(f"{server.url}/dashboard/jobs")
    expect(page).to_have_url(re.compile(r"/dashboard/login"))


def test_filter_share_retry_and_cancel_from_the_list(
    server: ServerProcess, api: httpx.Client, new_context: Callable[..., BrowserContext]
) -> None:
    failed = submit(api, "test.permanent")
    wait_status(api, failed, "failed")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    queued = submit(api, "echo", run_at=later)

    page = sign_in(new_context(), server, ADMIN_KEY)
    page.get_by_role("link", name="Jobs", exact=True).click()
    page.get_by_label("State").select_option("failed")
    page.get_by_label("Workflow").fill("test.permanent")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=failed"))
    shared_url = page.url
    assert "workflow=test.permanent" in shared_url

    # The address is the view: another signed-in browser opening it sees the same filtered list.
    other = sign_in(new_context(390), server, ADMIN_KEY)
    other.goto(shared_url)
    expect(other.get_by_label("State")).to_have_value("failed")
    expect(other.get_by_role("link", name=failed)).to_be_visible()
    expect(other.get_by_role("link", name=queued)).to_have_count(0)

    page.get_by_label(f"Select job {failed}").check()
    page.get_by_role("button", name="Retry…").click()
    expect(page.get_by_role("heading", name="Retry 1 job?")).to_be_visible()
    shoot(page, "confirm")
    page.get_by_role("button", name="Yes, retry 1 job").click()
    expect(page.get_by_role("heading", name="Retry: 1 of 1 done")).to_be_visible()
    shoot(page, "bulk-result")
    events = api.get(f"/api/v1/jobs/{failed}").json()["events"]
    assert any(event["type"] == "retried" for event in events)

    page.goto(f"{server.url}/dashboard/jobs?status=queued")
    page.get_by_label(f"Select job {queued}").check()
    page.get_by_role("button", name="Cancel…").click()
    page.get_by_role("button", name="Yes, cancel 1 job").click()
    expect(page.get_by_role("heading", name="Cancel: 1 of 1 done")).to_be_visible()
    expect(page.locator(".badge.cancelled")).to_have_count(1)
    assert api.get(f"/api/v1/jobs/{queued}").json()["status"] == "cancelled"


def test_a_delivery_and_its_attempts(
    server: ServerProcess, api: httpx.Client, receiver: Receiver, new_context: Callable[..., BrowserContext]
) -> None:
    receiver.script = [500]  # the first attempt fails, the retry is delivered
    job_id = submit(api, "echo", {"hello": "world"}, callback_url=receiver.url)
    receiver.wait_for(1)
    page = sign_in(new_context(), server, ADMIN_KEY, f"/dashboard/jobs/{job_id}")
    delivery = page.locator(".delivery").first
    expect(delivery).to_contain_text("job.succeeded")
    expect(delivery.locator("tbody tr").first).to_contain_text("500")
    page.get_by_role("button", name="Re-send this callback").first.click()
    expect(page.locator(".delivery")).to_have_count(2)
    deadline = time.monotonic() + 20
    resent = page.locator(".delivery").last
    while "delivered" not in (resent.locator(".badge").text_content() or ""):
        assert time.monotonic() < deadline, "the re-sent callback was never delivered"
        page.wait_for_timeout(200)
        page.reload()
    expect(resent.locator("tbody tr").first).to_contain_text("200")
    # The re-send is in the audit log, with the key that asked for it.
    page.goto(f"{server.url}/dashboard/keys#audit")
    expect(page.locator("#audit + .table-wrap tbody tr").first).to_contain_text("delivery.resent")
    shoot(page, "job-deliveries")


def test_spend_against_a_budget_and_keys(
    server: ServerProcess, api: httpx.Client, new_context: Callable[..., BrowserContext]
) -> None:
    made = api.post("/api/v1/keys", json={"name": "spender", "scopes": ["jobs:read", "jobs:write"]}).json()
    key_id, secret = made["key"]["id"], made["secret"]
    put = api.put(f"/api/v1/budgets/keys/{key_id}", json={"period": "day", "limit_micros": 10_000_000})
    assert put.status_code == 200, put.text
    spent = httpx.post(
        f"{server.url}/api/v1/intake",
        json={"workflow": "test.priced", "payload": {"estimate": 3_000_000, "cost": 2_500_000}},
        headers={"X-Api-Key": secret},
    ).json()["job_id"]
    wait_status(api, spent, "succeeded")

    page = sign_in(new_context(), server, ADMIN_KEY, "/dashboard/spend")
    budget = page.locator(".budgets li").filter(has_text=key_id)
    expect(budget).to_contain_text("$2.50 spent")
    expect(budget).to_contain_text("of $10.00")
    expect(budget.locator("meter")).to_have_attribute("value", "25.0")
    shoot(page, "spend")

    page.get_by_role("link", name="Keys & budgets").click()
    expect(page.get_by_role("cell", name=re.compile("^spender"))).to_be_visible()
    shoot(page, "keys")
    page.get_by_role("link", name="Overview").click()
    shoot(page, "overview")


def test_a_read_only_key_sees_no_retry_and_is_refused_if_it_posts(
    server: ServerProcess, api: httpx.Client, new_context: Callable[..., BrowserContext], guard: Guard
) -> None:
    failed = submit(api, "test.permanent")
    wait_status(api, failed, "failed")
    secret = api.post("/api/v1/keys", json={"name": "reader", "scopes": ["jobs:read"]}).json()["secret"]
    context = new_context()
    page = sign_in(context, server, secret, "/dashboard/jobs?status=failed")
    expect(page.get_by_role("link", name=failed)).to_be_visible()
    expect(page.get_by_role("button", name="Retry…")).to_have_count(0)
    page.goto(f"{server.url}/dashboard/jobs/{failed}")
    expect(page.get_by_role("button", name="Retry…")).to_have_count(0)
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    # Posting anyway, with the session and its token, as the page itself would.
    answer = page.evaluate(
        """async ([id, token]) => {
            const body = new URLSearchParams({action: "retry", job: id, confirmed: "yes", csrf: token});
            const response = await fetch("/dashboard/jobs/bulk", {method: "POST", body});
            return [response.status, await response.text()];
        }""",
        [failed, token],
    )
    assert answer[0] == 403
    assert "jobs:write" in answer[1]
    assert api.get(f"/api/v1/jobs/{failed}").json()["status"] == "failed"
    # The refusal shows as a page too.
    page.goto(f"{server.url}/dashboard/keys")
    expect(page.get_by_role("heading", name=re.compile("403"))).to_be_visible()
    shoot(page, "forbidden")
    guard.forgive(page, 403, 2)  # the browser logs each refused request: these two are under test


def test_a_forged_cross_site_post_is_refused(
    server: ServerProcess, api: httpx.Client, new_context: Callable[..., BrowserContext], guard: Guard
) -> None:
    queued = submit(api, "echo", run_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    context = new_context()
    page = sign_in(context, server, ADMIN_KEY)
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    forged = f"""<!doctype html><title>Win a prize</title>
<form method="post" action="{server.url}/dashboard/jobs/bulk">
<input name="action" value="cancel"><input name="job" value="{queued}"><input name="confirmed" value="yes">
<input name="csrf" value="{token}"><button>Claim</button></form>"""

    def evil_site(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body=forged)

    # Served by the test itself, so nothing leaves the machine; routes added later are tried first.
    context.route(f"{EVIL_ORIGIN}/**", evil_site)
    page.goto(f"{EVIL_ORIGIN}/prize")
    with page.expect_response(f"{server.url}/dashboard/jobs/bulk") as refused:
        page.get_by_role("button", name="Claim").click()
    assert refused.value.status == 403
    assert api.get(f"/api/v1/jobs/{queued}").json()["status"] == "queued"
    guard.forgive(page, 403, 1)
    assert guard.off_loopback == []


def test_the_pages_read_without_the_script(
    server: ServerProcess, browser: Browser, api: httpx.Client, guard: Guard
) -> None:
    """With scripts off, the list still reads, filters and paginates (the script only adds liveness)."""
    for _ in range(3):
        submit(api, "echo")
    context = browser.new_context(java_script_enabled=False)
    guard.watch_context(context)
    try:
        page = sign_in(context, server, ADMIN_KEY, "/dashboard/jobs")
        page.goto(f"{server.url}/dashboard/jobs?limit=2&workflow=echo")
        expect(page.locator("tbody tr")).to_have_count(2)
        page.get_by_role("link", name="Older »").click()
        expect(page).to_have_url(re.compile(r"cursor="))
        expect(page.locator("tbody tr")).not_to_have_count(0)
    finally:
        context.close()


def test_schedules_and_a_run(
    server: ServerProcess, api: httpx.Client, new_context: Callable[..., BrowserContext]
) -> None:
    made = api.post(
        "/api/v1/schedules",
        json={"name": "hourly-report", "cron": "0 * * * *", "job": {"workflow": "echo", "payload": {}}},
    )
    assert made.status_code == 201, made.text
    steps = [
        {"key": "fetch", "workflow": "echo", "payload": {}},
        {"key": "summarise", "workflow": "echo", "payload": {}, "depends_on": ["fetch"]},
    ]
    accepted = api.post("/api/v1/runs", json={"steps": steps}).json()
    page = sign_in(new_context(), server, ADMIN_KEY, "/dashboard/schedules")
    expect(page.get_by_role("cell", name="hourly-report")).to_be_visible()
    shoot(page, "schedules")
    page.goto(f"{server.url}/dashboard/jobs/{accepted['jobs']['summarise']}")
    page.get_by_role("link", name=accepted["run_id"]).click()
    expect(page.get_by_role("cell", name="fetch (cancel)")).to_be_visible()
    shoot(page, "run")
