"""The dashboard over a real server, on both databases: sign-in and its cookie, sessions that end when
their key is revoked, CSRF and cross-site refusals, scopes, bad input answered 4xx as dashboard pages
(never 500), bulk retry and cancel through the shared resolvers (whose events name the acting key),
and the audit log of key and budget changes (issue 14, items 1 and 2)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer

from levqor.dashboard.session import COOKIE_NAME, SESSION_MAX_AGE_S, SessionCodec
from levqor.db.engine import Database
from tests.conftest import LiveServer
from tests.integration.test_job_control_http import claim_all, submit

ADMIN_KEY = "dashboard-admin-key-0123456789"
SESSION_SECRET = "dashboard-test-session-secret-0123456789"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
HTML = "text/html; charset=utf-8"


@pytest.fixture
def keyed(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(API_KEYS=ADMIN_KEY, LEVQOR_SESSION_SECRET=SESSION_SECRET)


@pytest.fixture
def api(keyed: LiveServer) -> Iterator[httpx.Client]:
    with keyed.client(headers={"X-Api-Key": ADMIN_KEY}) as http:
        yield http


def browser(server: LiveServer) -> httpx.Client:
    """A client that behaves like a browser on the dashboard: it keeps cookies and sends the
    headers a browser sends with a same-origin form."""
    return server.client(headers={"Sec-Fetch-Site": "same-origin", "Origin": server.url})


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, page.text
    return found.group(1)


def sign_in(http: httpx.Client, key: str) -> httpx.Response:
    form = http.get("/dashboard/login")
    return http.post("/dashboard/login", data={"key": key, "next": "/dashboard/jobs", "csrf": csrf_of(form)})


def managed_key(api: httpx.Client, *scopes: str) -> tuple[str, str]:
    made = api.post("/api/v1/keys", json={"name": "-".join(scopes), "scopes": list(scopes)})
    assert made.status_code == 201, made.text
    return made.json()["key"]["id"], made.json()["secret"]


def test_signing_in_sets_a_strict_cookie_that_never_holds_the_key(keyed: LiveServer) -> None:
    with browser(keyed) as http:
        first = http.get("/dashboard/jobs?status=queued")
        assert first.status_code == 303
        assert first.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fjobs%3Fstatus%3Dqueued"
        login = http.get("/dashboard/login")
        assert login.status_code == 200
        assert login.headers["content-type"] == HTML
        assert login.headers["content-security-policy"] == (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )

        signed = sign_in(http, ADMIN_KEY)
        assert signed.status_code == 303
        assert signed.headers["location"] == "/dashboard/jobs"
        cookie = signed.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "max-age", "path", "samesite"} <= attributes
        assert "secure" not in attributes  # plain http here; https is below
        assert f"Max-Age={SESSION_MAX_AGE_S}" in cookie
        assert "Path=/dashboard" in cookie
        assert "SameSite=strict" in cookie
        assert ADMIN_KEY not in cookie

        jobs = http.get("/dashboard/jobs")
        assert jobs.status_code == 200
        assert "Sign out" in jobs.text
        assert ADMIN_KEY not in jobs.text
        # The cookie is for the dashboard only: the API does not take it as a key.
        assert (
            http.get(
                "/api/v1/jobs", headers={"Cookie": f"{COOKIE_NAME}={http.cookies[COOKIE_NAME]}"}
            ).status_code
            == 401
        )

        out = http.post("/dashboard/logout", data={"csrf": csrf_of(jobs)})
        assert out.status_code == 303
        assert 'levqor_session=""' in out.headers["set-cookie"]
        assert http.get("/dashboard/jobs").status_code == 303


def test_the_cookie_is_secure_behind_a_trusted_https_proxy(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(API_KEYS=ADMIN_KEY, LEVQOR_TRUSTED_PROXIES="127.0.0.1")
    with browser(server) as http:
        http.headers["X-Forwarded-Proto"] = "https"
        signed = sign_in(http, ADMIN_KEY)
        assert signed.status_code == 303
        assert "Secure" in signed.headers["set-cookie"]


def test_a_wrong_key_is_refused_and_counts_against_the_address(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(API_KEYS=ADMIN_KEY, RATE_BURST="3/minute")
    with browser(server) as http:
        # Fetched with a key, so that only the sign-ins count against the address.
        token = csrf_of(http.get("/dashboard/login", headers={"X-Api-Key": ADMIN_KEY}))
        answers = [http.post("/dashboard/login", data={"key": f"wrong-{n}", "csrf": token}) for n in range(4)]
        assert [answer.status_code for answer in answers] == [401, 401, 401, 429]
        assert "invalid API key" in answers[0].text
        assert all("set-cookie" not in answer.headers for answer in answers)
        # The API shares the allowance of refused keys: the address may not present even a good
        # key there until it refills.
        assert http.get("/api/v1/jobs", headers={"X-Api-Key": ADMIN_KEY}).status_code == 429


def test_revoking_a_key_ends_its_sessions(keyed: LiveServer, api: httpx.Client) -> None:
    key_id, secret = managed_key(api, "jobs:read")
    with browser(keyed) as http:
        assert sign_in(http, secret).status_code == 303
        assert http.get("/dashboard/jobs").status_code == 200
        assert api.delete(f"/api/v1/keys/{key_id}").status_code == 200
        ended = http.get("/dashboard/jobs")
        assert ended.status_code == 303
        login = http.get(ended.headers["location"])
        assert "Your session has ended: this API key has been revoked" in login.text
        assert 'levqor_session=""' in login.headers["set-cookie"]


def test_forged_altered_and_expired_cookies_are_no_session(keyed: LiveServer) -> None:
    forged = URLSafeTimedSerializer("another-secret", salt="levqor.dashboard.session").dumps(
        [f"static:{'0' * 12}", "nonce"]
    )
    with browser(keyed) as http:
        sign_in(http, ADMIN_KEY)
        genuine = http.cookies[COOKIE_NAME]
    for value in (forged, genuine[:-2] + "xx", "garbage", "x" * 5000):
        with browser(keyed) as http:
            answer = http.get("/dashboard/jobs", headers={"Cookie": f"{COOKIE_NAME}={value}"})
            assert answer.status_code == 303, value
            assert answer.headers["location"].startswith("/dashboard/login")

    codec = SessionCodec(keyed.settings)
    value = codec.encode(codec.new("static:abc"))
    assert codec.decode(value) is not None
    codec.max_age_s = 0
    time.sleep(1.1)  # itsdangerous's timestamps are whole seconds
    assert codec.decode(value) is None


def test_posts_without_the_token_or_from_another_site_are_refused(
    keyed: LiveServer, api: httpx.Client
) -> None:
    job_id = submit(api)
    with browser(keyed) as http:
        sign_in(http, ADMIN_KEY)
        token = csrf_of(http.get("/dashboard/jobs"))
        form = {"action": "cancel", "job": job_id, "confirmed": "yes"}
        no_token = http.post("/dashboard/jobs/bulk", data=form)
        assert no_token.status_code == 403
        assert "did not come from the dashboard" in no_token.text
        assert no_token.headers["content-type"] == HTML
        wrong = http.post("/dashboard/jobs/bulk", data={**form, "csrf": "0" * 64})
        assert wrong.status_code == 403
        cross = http.post(
            "/dashboard/jobs/bulk", data={**form, "csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 403
        other_origin = http.post(
            "/dashboard/jobs/bulk", data={**form, "csrf": token}, headers={"Origin": "https://evil.example"}
        )
        assert other_origin.status_code == 403
        assert api.get(f"/api/v1/jobs/{job_id}").json()["status"] == "queued"

        done = http.post("/dashboard/jobs/bulk", data={**form, "csrf": token})
        assert done.status_code == 200
        assert "cancel: 1 of 1 done" in done.text.lower()
        assert api.get(f"/api/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_a_read_only_key_sees_no_controls_and_is_refused_if_it_posts(
    keyed: LiveServer, api: httpx.Client, db: Database
) -> None:
    job_id = submit(api)
    _key_id, secret = managed_key(api, "jobs:read")
    with browser(keyed) as http:
        sign_in(http, secret)
        page = http.get("/dashboard/jobs")
        assert page.status_code == 200
        assert job_id in page.text
        assert 'value="retry"' not in page.text
        assert 'value="cancel"' not in page.text
        assert "Keys &amp; budgets" not in page.text
        token = csrf_of(page)
        for confirmed in ("", "yes"):
            refused = http.post(
                "/dashboard/jobs/bulk",
                data={"action": "cancel", "job": job_id, "confirmed": confirmed, "csrf": token},
            )
            assert refused.status_code == 403
            assert "lacks the &#39;jobs:write&#39; scope" in refused.text
        assert http.get("/dashboard/keys").status_code == 403
    assert api.get(f"/api/v1/jobs/{job_id}").json()["status"] == "queued"


def test_bulk_retry_and_cancel_report_each_job_and_name_the_key(
    keyed: LiveServer, api: httpx.Client, db: Database
) -> None:
    failed, queued = submit(api), submit(api)
    claimed = [job for job in claim_all(db) if str(job.id) == failed]
    api.post(
        f"/api/v1/jobs/{failed}/fail",
        json={
            "worker_id": "w1",
            "attempt": claimed[0].attempt,
            "error": {"message": "no"},
            "retryable": False,
        },
    )
    assert api.get(f"/api/v1/jobs/{failed}").json()["status"] == "failed"
    key_id, secret = managed_key(api, "jobs:read", "jobs:write")
    with browser(keyed) as http:
        sign_in(http, secret)
        token = csrf_of(http.get("/dashboard/jobs"))
        ask = http.post(
            "/dashboard/jobs/bulk", data={"action": "retry", "job": [failed, queued], "csrf": token}
        )
        assert ask.status_code == 200
        assert "Retry 2 jobs?" in ask.text
        assert api.get(f"/api/v1/jobs/{failed}").json()["status"] == "failed"  # asking changes nothing
        done = http.post(
            "/dashboard/jobs/bulk",
            data={"action": "retry", "job": [failed, queued], "confirmed": "yes", "csrf": token},
        )
        assert done.status_code == 200
        assert "Retry: 1 of 2 done" in done.text
        assert "only failed or cancelled jobs can be retried" in done.text
    events = api.get(f"/api/v1/jobs/{failed}").json()["events"]
    assert events[-1]["type"] == "retried"
    assert events[-1]["detail"] == {"by": f"key:{key_id}"}
    # The same shared path names the caller on the API too.
    api.post(f"/api/v1/jobs/{queued}/cancel")
    assert api.get(f"/api/v1/jobs/{queued}").json()["events"][-1]["detail"] == {
        "by": "static:" + _static_id()
    }


def _static_id() -> str:
    from levqor.resolvers.auth import static_principal

    return static_principal(ADMIN_KEY).id.removeprefix("static:")


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/dashboard/jobs?status=bogus", 400, "status"),
        ("/dashboard/jobs?cursor=not-a-cursor", 400, "cursor"),
        ("/dashboard/jobs?limit=100000", 400, "limit"),
        ("/dashboard/jobs?workflow=" + "w" * 5000, 400, "workflow"),
        ("/dashboard/jobs/not-a-uuid", 404, "no job with id"),
        (f"/dashboard/jobs/{uuid.uuid4()}", 404, "no job with id"),
        ("/dashboard/jobs/not-a-uuid/events", 404, "no job with id"),
        ("/dashboard/nowhere", 404, "no page at"),
        ("/dashboard/spend?from=yesterday", 400, "from"),
    ],
)
def test_bad_addresses_are_4xx_dashboard_pages(keyed: LiveServer, path: str, status: int, says: str) -> None:
    with browser(keyed) as http:
        sign_in(http, ADMIN_KEY)
        answer = http.get(path)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == HTML
        assert says in answer.text
        assert "Back to the overview" in answer.text


@pytest.mark.parametrize(
    ("path", "form", "status", "says"),
    [
        ("/dashboard/jobs/bulk", {"action": "delete", "job": "x"}, 400, "must be retry or cancel"),
        ("/dashboard/jobs/bulk", {"action": "retry"}, 400, "select at least one job"),
        (
            "/dashboard/jobs/bulk",
            {"action": "retry", "job": [str(n) for n in range(101)]},
            400,
            "at most 100",
        ),
        ("/dashboard/jobs/bulk", {"action": "retry", "job": "y" * 5000}, 400, "longer than"),
        ("/dashboard/keys", {"name": "", "scope": "jobs:read"}, 400, "name"),
        ("/dashboard/keys", {"name": "k", "scope": "root"}, 400, "unknown scope"),
        ("/dashboard/keys/not-a-uuid/revoke", {}, 404, "no API key"),
        (
            "/dashboard/budgets",
            {"kind": "key", "subject_id": "x", "period": "day", "limit": "abc"},
            400,
            "dollars",
        ),
        (
            "/dashboard/budgets",
            {"kind": "team", "subject_id": "x", "period": "day", "limit": "1"},
            400,
            "subject",
        ),
        (
            "/dashboard/budgets",
            {"kind": "key", "subject_id": str(uuid.uuid4()), "period": "week", "limit": "1"},
            400,
            "period",
        ),
        ("/dashboard/budgets/key/not-a-uuid/delete", {}, 404, "no API key"),
        ("/dashboard/login", {"key": "k" * 600}, 400, "Enter an API key"),
    ],
)
def test_bad_forms_are_4xx_dashboard_pages(
    keyed: LiveServer, path: str, form: dict[str, Any], status: int, says: str
) -> None:
    with browser(keyed) as http:
        sign_in(http, ADMIN_KEY)
        token = csrf_of(http.get("/dashboard/keys"))
        answer = http.post(path, data={**form, "csrf": token})
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == HTML
        assert says in answer.text


def test_a_form_in_another_encoding_or_too_large_is_refused(keyed: LiveServer) -> None:
    with browser(keyed) as http:
        sign_in(http, ADMIN_KEY)
        as_json = http.post("/dashboard/jobs/bulk", json={"action": "retry"})
        assert as_json.status_code == 415
        huge = http.post(
            "/dashboard/jobs/bulk",
            content=b"job=" + b"a" * 70_000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert huge.status_code == 400
        assert "larger than" in huge.text


def test_keys_made_and_revoked_on_the_dashboard_are_in_the_audit_log(
    keyed: LiveServer, api: httpx.Client
) -> None:
    with browser(keyed) as http:
        sign_in(http, ADMIN_KEY)
        token = csrf_of(http.get("/dashboard/keys"))
        made = http.post("/dashboard/keys", data={"name": "reporting", "scope": ["jobs:read"], "csrf": token})
        assert made.status_code == 200
        secret = re.search(r"data-secret>(lvq_[\w-]+)<", made.text)
        assert secret is not None
        assert api.get("/api/v1/jobs", headers={"X-Api-Key": secret.group(1)}).status_code == 200
        key_id = next(
            key["id"] for key in api.get("/api/v1/keys").json()["keys"] if key["name"] == "reporting"
        )
        ask = http.post(f"/dashboard/keys/{key_id}/revoke", data={"csrf": token})
        assert "Revoke “reporting”?" in ask.text
        assert api.get("/api/v1/jobs", headers={"X-Api-Key": secret.group(1)}).status_code == 200
        revoked = http.post(f"/dashboard/keys/{key_id}/revoke", data={"csrf": token, "confirmed": "yes"})
        assert revoked.status_code == 303
        assert api.get("/api/v1/jobs", headers={"X-Api-Key": secret.group(1)}).status_code == 401

        budget = http.post(
            "/dashboard/budgets",
            data={"kind": "key", "subject_id": key_id, "period": "day", "limit": "12.50", "csrf": token},
        )
        assert budget.status_code == 303
        budgets = api.get("/api/v1/budgets").json()["budgets"]
        assert [b["limit_micros"] for b in budgets if b["subject_id"] == key_id] == [12_500_000]
        page = http.get("/dashboard/keys")
        actor = f"static:{_static_id()}"
        for action in ("key.created", "key.revoked", "budget.set"):
            assert re.search(rf"<code>{actor}</code></td><td>{re.escape(action)}</td>", page.text), action
        assert secret.group(1) not in page.text


def test_development_mode_opens_without_sign_in_and_says_so(make_server: Callable[..., LiveServer]) -> None:
    server = make_server()
    with browser(server) as http:
        for path in ("/dashboard/", "/dashboard/jobs", "/dashboard/keys", "/dashboard/spend"):
            page = http.get(path)
            assert page.status_code == 200, path
            assert "Development mode:" in page.text
        assert http.get("/dashboard/login").headers["location"] == "/dashboard/"
        assert http.get("/dashboard", follow_redirects=False).headers["location"] == "/dashboard/"


def test_the_static_files_carry_digests_and_are_cached(keyed: LiveServer) -> None:
    with browser(keyed) as http:
        page = http.get("/dashboard/login").text
        for name in ("dashboard.css", "dashboard.js"):
            url = re.search(rf'"(/dashboard/static/{re.escape(name)}\?v=[0-9a-f]{{16}})"', page)
            assert url is not None, name
            asset = http.get(url.group(1))
            assert asset.status_code == 200
            assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_the_overview_links_each_state_to_the_filtered_list_and_draws_throughput(
    keyed: LiveServer, api: httpx.Client, db: Database
) -> None:
    done = submit(api)
    submit(api)
    claimed = claim_all(db)
    api.post(
        f"/api/v1/jobs/{done}/complete", json={"worker_id": "w1", "attempt": claimed[0].attempt, "result": {}}
    )
    with browser(keyed) as http:
        sign_in(http, ADMIN_KEY)
        page = http.get("/dashboard/")
        assert page.status_code == 200
        assert re.search(
            r'<span class="figure">1</span> <a href="/dashboard/jobs\?status=succeeded">', page.text
        )
        assert re.search(
            r'<span class="figure">1</span> <a href="/dashboard/jobs\?status=running">', page.text
        )
        assert "1 succeeded, 0 failed, 0 cancelled in the window" in page.text
        assert page.text.count('<rect class="succeeded"') == 1
        assert http.get("/dashboard/?window_s=5").status_code == 400
        filtered = http.get("/dashboard/jobs?status=succeeded")
        assert done in filtered.text


def test_the_list_takes_every_filter_of_the_resolver(keyed: LiveServer, api: httpx.Client) -> None:
    needle = api.post("/api/v1/intake", json={"workflow": "echo", "payload": {"q": "find-me-please"}}).json()[
        "job_id"
    ]
    other = submit(api)
    with browser(keyed) as http:
        sign_in(http, ADMIN_KEY)
        found = http.get("/dashboard/jobs?text=find-me")
        assert needle in found.text
        assert other not in found.text
        assert 'value="find-me"' in found.text  # the form shows the filter it applied
        later = http.get("/dashboard/jobs?created_after=2999-01-01T00:00")
        assert "No jobs match these filters." in later.text
        assert http.get("/dashboard/jobs?created_after=yesterday").status_code == 400
        assert http.get("/dashboard/jobs?key_id=not-a-key").status_code == 400


def test_schedules_are_listed_read_only(keyed: LiveServer, api: httpx.Client) -> None:
    made = api.post(
        "/api/v1/schedules",
        json={"name": "nightly", "cron": "0 3 * * *", "job": {"workflow": "echo", "payload": {}}},
    )
    assert made.status_code == 201, made.text
    with browser(keyed) as http:
        sign_in(http, ADMIN_KEY)
        page = http.get("/dashboard/schedules")
        assert page.status_code == 200
        assert "nightly" in page.text
        assert "<code>0 3 * * *</code>" in page.text
        assert http.get("/dashboard/schedules?cursor=bad").status_code == 400


def test_a_run_shows_its_steps_and_edges(keyed: LiveServer, api: httpx.Client) -> None:
    steps = [
        {"key": "a", "workflow": "echo", "payload": {}},
        {"key": "b", "workflow": "echo", "payload": {}, "depends_on": ["a"]},
    ]
    accepted = api.post("/api/v1/runs", json={"steps": steps})
    assert accepted.status_code == 202, accepted.text
    run_id, step_b = accepted.json()["run_id"], accepted.json()["jobs"]["b"]
    with browser(keyed) as http:
        sign_in(http, ADMIN_KEY)
        job = http.get(f"/dashboard/jobs/{step_b}")
        assert f'href="/dashboard/runs/{run_id}"' in job.text
        page = http.get(f"/dashboard/runs/{run_id}")
        assert page.status_code == 200
        assert "<td>a (cancel)</td>" in page.text
        assert f'href="/dashboard/jobs/{step_b}"' in page.text
        assert http.get(f"/dashboard/runs/{uuid.uuid4()}").status_code == 404
        assert http.get("/dashboard/runs/not-a-run").status_code == 404
