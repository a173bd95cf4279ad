"""The callback guard against real sockets: intake refuses callback URLs that reach this machine or a
private network (REST and GraphQL alike), a guarded request never connects to one (not even after
DNS rebinding), connects to the checked address with the name kept in Host and TLS, follows no
redirect, is cut at its deadline and keeps at most so many bytes of the answer."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from levqor.callbacks.guard import (
    AddressRefused,
    GuardedResponse,
    HostResolver,
    IPAddress,
    OutboundSession,
    guarded_request,
)
from tests.conftest import LiveServer, settings_for, start_live_server
from tests.support import assert_error, gql, row_counts

GUARD_ON = {"LEVQOR_CALLBACK_ALLOW_PRIVATE": "false"}
SUBMIT = """mutation($i: SubmitJobInput!) {
  submitJob(input: $i) { job { id } userErrors { field message code } } }"""
# Hosts that reach this machine, in the forms an attacker would try; and two that reach a network.
LOOPBACK_HOSTS = (
    "127.0.0.1",
    "localhost",  # through the system's resolver
    "[::1]",
    "0.0.0.0",
    "[::ffff:127.0.0.1]",
    "2130706433",
    "0x7f000001",
)
OTHER_FORMS = ("2130706433", "0x7f000001")
REFUSED_HOSTS = (*LOOPBACK_HOSTS, "0177.0.0.1", "10.0.0.1", "169.254.169.254")
PUBLIC = "8.8.8.8"
NAME = "hooks.levqor.test"  # resolvable only through the resolvers below


class NameResolver(HostResolver):
    """Answers each name from a table, in place of DNS, which tests cannot reach."""

    def __init__(self, *answers: str) -> None:
        self.answers = [
            [ipaddress.ip_address(address) for address in answer.split(",")] for answer in answers
        ]
        self.calls = 0

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The next answer; the last one is kept once the others are used."""
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return answer


# --- receivers -----------------------------------------------------------------------------------


@dataclass
class Listener:
    """Loopback sockets (IPv4 and IPv6, one port) that nothing should connect to. They never accept,
    so the kernel's backlog keeps every connection made, for `connections()` to count."""

    port: int
    sockets: list[socket.socket]

    def connections(self) -> int:
        count = 0
        for sock in self.sockets:
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                conn.close()
                count += 1
        return count


def _bind_pair() -> tuple[int, list[socket.socket]]:
    for _ in range(20):
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.bind(("127.0.0.1", 0))
        port = v4.getsockname()[1]
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            v6.bind(("::1", port))
        except OSError:  # the port is taken on ::1: another pair
            v4.close()
            v6.close()
            continue
        return port, [v4, v6]
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")


@pytest.fixture
def listener() -> Iterator[Listener]:
    port, sockets = _bind_pair()
    for sock in sockets:
        sock.listen(64)
        sock.setblocking(False)
    yield Listener(port, sockets)
    for sock in sockets:
        sock.close()


@dataclass
class Receiver:
    url: str
    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)


def _handler(
    receiver: Receiver, answer: Callable[[BaseHTTPRequestHandler], None]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so pooling can be seen

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            receiver.requests.append(
                {
                    "peer": self.client_address,
                    "host": self.headers["Host"],
                    "cookie": self.headers["Cookie"],
                    "body": self.rfile.read(length),
                }
            )
            answer(self)

        do_GET = do_POST = _record

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read what was received, not a log."""

    return Handler


@pytest.fixture
def serve() -> Iterator[Callable[..., Receiver]]:
    """Start HTTP receivers on 127.0.0.1 with the given answer (TLS when given a context)."""
    servers: list[ThreadingHTTPServer] = []

    def start(
        answer: Callable[[BaseHTTPRequestHandler], None], tls: ssl.SSLContext | None = None
    ) -> Receiver:
        receiver = Receiver(url="", port=0)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver, answer))
        server.daemon_threads = True
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        receiver.port = server.server_address[1]
        receiver.url = f"{'https' if tls else 'http'}://127.0.0.1:{receiver.port}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def answer_with(status: int, body: bytes = b"ok", **headers: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


async def send(
    url: str,
    *,
    allow_private: bool = True,
    resolver: HostResolver | None = None,
    session: OutboundSession | None = None,
    timeout_s: float = 5,
    max_response_bytes: int = 1 << 20,
) -> GuardedResponse:
    """One POST through the guard, on `session` or on a session of its own."""

    async def go(outbound: OutboundSession) -> GuardedResponse:
        return await guarded_request(
            outbound,
            "POST",
            url,
            headers={"Content-Type": "application/json"},
            content=b'{"type":"job.succeeded"}',
            timeout_s=timeout_s,
            max_response_bytes=max_response_bytes,
        )

    if session is not None:
        return await go(session)
    async with OutboundSession(allow_private=allow_private, resolver=resolver) as outbound:
        return await go(outbound)


# --- intake --------------------------------------------------------------------------------------


def test_intake_refuses_callbacks_to_this_machine_or_a_private_network(
    make_server: Callable[..., LiveServer], db_url: str, listener: Listener
) -> None:
    before = row_counts(db_url)
    with make_server(**GUARD_ON).client() as http:
        for host in REFUSED_HOSTS:
            url = f"http://{host}:{listener.port}/hook"
            rest = http.post("/api/v1/intake", json={"workflow": "echo", "payload": {}, "callback_url": url})
            body = assert_error(rest, 400, "invalid_request", field="callback_url")
            assert "not a public address" in body["message"], (host, body)

            answer = gql(http, SUBMIT, {"i": {"workflow": "echo", "payload": {}, "callbackUrl": url}})
            assert answer["data"]["submitJob"]["job"] is None, (host, answer)
            [error] = answer["data"]["submitJob"]["userErrors"]
            assert (error["field"], error["code"]) == ("callbackUrl", "invalid"), (host, error)
            assert "not a public address" in error["message"]
    assert row_counts(db_url) == before
    assert listener.connections() == 0


def test_intake_takes_a_callback_that_resolves_to_public_addresses_only(db_url: str) -> None:
    live = start_live_server(
        settings_for(db_url, **GUARD_ON), resolver=NameResolver(f"{PUBLIC},2001:4860::1")
    )
    try:
        with live.client() as http:
            accepted = http.post(
                "/api/v1/intake",
                json={"workflow": "echo", "payload": {}, "callback_url": f"https://{NAME}/hook"},
            )
            assert accepted.status_code == 202, accepted.text
            mixed = http.post(
                "/api/v1/intake",
                json={"workflow": "echo", "payload": {}, "callback_url": f"https://{NAME}.:8443/"},
            )
            assert mixed.status_code == 202, mixed.text
    finally:
        live.stop()


def test_intake_lets_private_callbacks_through_when_allowed(client: httpx.Client) -> None:
    """The test servers run with LEVQOR_CALLBACK_ALLOW_PRIVATE=true: local receivers are allowed."""
    accepted = client.post(
        "/api/v1/intake", json={"workflow": "echo", "payload": {}, "callback_url": "http://127.0.0.1:9/hook"}
    )
    assert accepted.status_code == 202, accepted.text


# --- sending -------------------------------------------------------------------------------------


async def test_a_guarded_request_never_connects_to_this_machine_or_a_private_network(
    listener: Listener,
) -> None:
    for host in REFUSED_HOSTS:
        with pytest.raises(AddressRefused, match=r"not a public address|not a valid URL"):
            await send(f"http://{host}:{listener.port}/hook", allow_private=False)
    assert listener.connections() == 0


async def test_the_same_urls_reach_the_listener_when_private_addresses_are_allowed(
    listener: Listener,
) -> None:
    """The control for the test above: each of these URLs does reach the listener, which never
    answers, so the request is cut at its deadline."""
    canonical = [host for host in LOOPBACK_HOSTS if host not in OTHER_FORMS]
    for host in canonical:
        with pytest.raises(TimeoutError):
            await send(f"http://{host}:{listener.port}/hook", allow_private=True, timeout_s=0.3)
    assert listener.connections() == len(canonical)
    # Other ways of writing an IPv4 address are refused outright: parsers and resolvers read them
    # differently.
    for host in OTHER_FORMS:
        with pytest.raises(AddressRefused, match="written another way"):
            await send(f"http://{host}:{listener.port}/hook", allow_private=True)
    assert listener.connections() == 0  # none more


def submit_to_name(http: httpx.Client, port: int) -> str:
    """Submit a job whose callback names NAME (accepted while the resolver answers a public address)."""
    body = {"workflow": "echo", "payload": {}, "callback_url": f"http://{NAME}:{port}/hook"}
    accepted = http.post("/api/v1/intake", json=body)
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["job_id"])


async def test_dns_rebinding_after_intake_is_refused_at_send(db_url: str, listener: Listener) -> None:
    """The name answers a public address at intake and loopback when the callback is sent: the send
    checks the answer it connects with, and nothing reaches the listener."""
    rebinding = NameResolver(PUBLIC, "127.0.0.1")
    live = start_live_server(settings_for(db_url, **GUARD_ON), resolver=rebinding)
    try:
        with live.client() as http:
            job_id = submit_to_name(http, listener.port)
            callback_url = http.get(f"/api/v1/jobs/{job_id}").json()["callback_url"]
    finally:
        live.stop()

    with pytest.raises(AddressRefused, match=rf"{NAME} resolves to 127\.0\.0\.1"):
        await send(callback_url, allow_private=False, resolver=rebinding)
    assert rebinding.calls == 2
    assert listener.connections() == 0


async def test_one_lookup_and_the_checked_address_is_the_one_connected_to(
    serve: Callable[..., Receiver],
) -> None:
    """The name is looked up once per connection, the connection goes to the address answered, the
    name stays in Host, and the connection is pooled for the next call."""
    receiver = serve(answer_with(200))
    resolver = NameResolver("127.0.0.1")
    async with OutboundSession(allow_private=True, resolver=resolver) as session:
        for _ in range(2):
            response = await send(f"http://{NAME}:{receiver.port}/hook", session=session)
            assert response.status_code == 200
    assert resolver.calls == 1
    assert [request["host"] for request in receiver.requests] == [f"{NAME}:{receiver.port}"] * 2
    assert [request["body"] for request in receiver.requests] == [b'{"type":"job.succeeded"}'] * 2
    assert len({request["peer"] for request in receiver.requests}) == 1  # one connection, reused


async def test_the_next_checked_record_is_tried_when_one_refuses_the_connection(
    serve: Callable[..., Receiver],
) -> None:
    receiver = serve(answer_with(204, b""))  # on 127.0.0.1 only: ::1 refuses the connection
    response = await send(
        f"http://{NAME}:{receiver.port}/", allow_private=True, resolver=NameResolver("::1,127.0.0.1")
    )
    assert response.status_code == 204
    assert len(receiver.requests) == 1


async def test_cookies_from_one_answer_are_not_sent_with_the_next(serve: Callable[..., Receiver]) -> None:
    receiver = serve(answer_with(200, Set_Cookie="session=receiver-one"))
    async with OutboundSession(allow_private=True) as session:
        for _ in range(2):
            await send(f"{receiver.url}/", session=session)
    assert [request["cookie"] for request in receiver.requests] == [None, None]


async def test_a_redirect_is_answered_not_followed(
    serve: Callable[..., Receiver], listener: Listener
) -> None:
    elsewhere = f"http://127.0.0.1:{listener.port}/elsewhere"
    receiver = serve(answer_with(302, b"", Location=elsewhere))
    response = await send(f"{receiver.url}/hook", allow_private=True)
    assert response.status_code == 302
    assert response.headers["location"] == elsewhere
    assert len(receiver.requests) == 1
    assert listener.connections() == 0


async def test_a_receiver_that_accepts_and_hangs_is_cut_at_the_deadline(
    serve: Callable[..., Receiver],
) -> None:
    release = threading.Event()
    receiver = serve(lambda handler: release.wait(10))
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match=r"did not complete within 0\.5 s"):
            await send(f"{receiver.url}/", allow_private=True, timeout_s=0.5)
    finally:
        release.set()
    assert 0.5 <= time.monotonic() - started < 2
    assert len(receiver.requests) == 1


async def test_the_deadline_covers_the_whole_answer_not_each_read(serve: Callable[..., Receiver]) -> None:
    """A receiver that sends a byte every 0.1 s never lets one read wait long; the deadline still
    ends the exchange."""
    release = threading.Event()

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            if release.wait(0.1):
                return
            handler.wfile.write(b".")
            handler.wfile.flush()

    receiver = serve(trickle)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            await send(f"{receiver.url}/", allow_private=True, timeout_s=0.8)
    finally:
        release.set()
    assert time.monotonic() - started < 2


async def test_the_pool_still_serves_after_a_request_was_cut(serve: Callable[..., Receiver]) -> None:
    release = threading.Event()
    hanging = serve(lambda handler: release.wait(10))
    answering = serve(answer_with(200))
    async with OutboundSession(allow_private=True, limit=1) as session:
        try:
            with pytest.raises(TimeoutError):
                await send(f"{hanging.url}/", session=session, timeout_s=0.3)
        finally:
            release.set()
        response = await send(f"{answering.url}/", session=session, timeout_s=2)
    assert response.status_code == 200


async def test_a_big_answer_is_truncated_at_the_cap(serve: Callable[..., Receiver]) -> None:
    receiver = serve(answer_with(200, b"x" * 100_000))
    capped = await send(f"{receiver.url}/", allow_private=True, max_response_bytes=1000)
    assert (capped.status_code, capped.body, capped.truncated) == (200, b"x" * 1000, True)
    whole = await send(f"{receiver.url}/", allow_private=True, max_response_bytes=100_000)
    assert (len(whole.body), whole.truncated) == (100_000, False)


async def test_transport_failures_are_client_errors() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await send(f"http://127.0.0.1:{port}/", allow_private=True)


async def test_the_scheme_is_checked_when_private_addresses_are_allowed() -> None:
    with pytest.raises(AddressRefused, match="only http and https"):
        await send("ftp://127.0.0.1/hook", allow_private=True)


# --- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for NAME alone (not for 127.0.0.1)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    workdir = tmp_path_factory.mktemp("tls")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            openssl,
            *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={NAME}"),
            *("-addext", f"subjectAltName=DNS:{NAME}"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_verifies_the_name_while_connecting_to_the_checked_address(
    serve: Callable[..., Receiver], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    names_asked: list[str | None] = []
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server_tls.sni_callback = lambda sock, name, context: names_asked.append(name)
    receiver = serve(answer_with(200), tls=server_tls)
    trusted = ssl.create_default_context(cafile=str(cert))
    resolver = NameResolver("127.0.0.1")
    async with OutboundSession(allow_private=True, resolver=resolver, tls=trusted) as session:
        response = await send(f"https://{NAME}:{receiver.port}/", session=session)
        assert response.status_code == 200
        assert names_asked == [NAME]
        assert receiver.requests[0]["host"] == f"{NAME}:{receiver.port}"
        # The same address under a name the certificate does not carry fails verification, on the
        # same session: connections are pooled by name, so one verified for NAME is not lent to it.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await send(f"https://other.{NAME}:{receiver.port}/", session=session)
    assert len(receiver.requests) == 1


def test_the_delivery_loop_refuses_a_callback_rebound_to_loopback(db_url: str, listener: Listener) -> None:
    """End to end: accepted at intake (a public answer), the job runs on the in-process worker, and
    its callback's send sees loopback: the attempt is recorded as refused and nothing connects."""
    rebinding = NameResolver(PUBLIC, "127.0.0.1")
    settings = settings_for(db_url, **GUARD_ON, LEVQOR_INPROCESS_WORKER="true", LEVQOR_CALLBACK_RETRY_S="60")
    live = start_live_server(settings, resolver=rebinding)
    try:
        with live.client() as http:
            job_id = submit_to_name(http, listener.port)
            deadline = time.monotonic() + 20
            while True:
                deliveries = http.get(f"/api/v1/jobs/{job_id}").json()["deliveries"]
                log = deliveries[0]["attempt_log"] if deliveries else []
                if log and log[0]["finished_at"] is not None:
                    break
                assert time.monotonic() < deadline, deliveries
                time.sleep(0.05)
    finally:
        live.stop()
    assert log[0]["status_code"] is None
    assert log[0]["error"] == f"refused: {NAME} resolves to 127.0.0.1, which is not a public address"
    assert deliveries[0]["status"] == "pending"  # retried on the schedule, refused each time
    assert listener.connections() == 0
