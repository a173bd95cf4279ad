"""levqor.http.protocol: one socket write per small answer, and otherwise the very bytes of uvicorn.

Two real uvicorn servers run side by side in threads, one on `HeadHoldingProtocol` and one on
uvicorn's own `HttpToolsProtocol`, each connection's transport wrapped to record every write. Raw
socket clients send the same requests to both and compare what comes back, but for the Date header.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import logging
import os
import re
import socket
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from levqor.http.app import create_app
from levqor.http.protocol import HeadHoldingProtocol, HeadHoldingTransport
from tests.conftest import serve_in_thread, settings_for, start_server_process, stop_server_process

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SLOW_BODY_S = 0.3  # how long /slow's body keeps its head waiting
JSON_BODY = b'{"ok":true,"items":[1,2,3]}'
DATE = re.compile(rb"\r\ndate: [^\r]*")
PROTOCOL = "levqor.http.protocol:HeadHoldingProtocol"


# --- a real server whose writes are recorded --------------------------------------------------------


class RecordingTransport(asyncio.Transport):
    """A connection's transport that records each write before passing it on."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        super().__init__()
        self._transport = transport
        self.writes = writes

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()


def recording(protocol: type[HttpToolsProtocol], connections: list[list[bytes]]) -> type[HttpToolsProtocol]:
    """`protocol`, with the writes of each connection recorded in a list of `connections`."""

    class Recording(protocol):  # type: ignore[valid-type, misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            writes: list[bytes] = []
            connections.append(writes)
            super().connection_made(RecordingTransport(transport, writes))

    return Recording


@dataclass
class Server:
    port: int
    server: uvicorn.Server
    thread: threading.Thread
    connections: list[list[bytes]] = field(default_factory=list)

    def exchange(self, request: bytes, *, timeout: float = 10) -> tuple[bytes, list[bytes]]:
        """Send `request` on a new connection and read until the server closes it: the bytes read,
        and the writes the server made on that connection."""
        seen = len(self.connections)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            received = read_until_closed(sock)
        assert len(self.connections) == seen + 1
        return received, self.connections[seen]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve(app: ASGIApp, protocol: type[HttpToolsProtocol], **config: Any) -> Server:
    """`app` on a uvicorn server in a thread, as tests/conftest.py's live server, on `protocol`."""
    connections: list[list[bytes]] = []
    settings = {"log_config": None, "lifespan": "off", "access_log": False, **config}
    server, thread, port = serve_in_thread(
        uvicorn.Config(app, http=recording(protocol, connections), **settings)
    )
    return Server(port=port, server=server, thread=thread, connections=connections)


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_head(sock: socket.socket) -> bytes:
    """Read until the end of a response head (and whatever came with it)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {received!r}"
        received += chunk
    return received


def without_date(data: bytes) -> bytes:
    return DATE.sub(b"", data)


def get(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- the app both servers run ------------------------------------------------------------------------


def start(status: int, *headers: tuple[bytes, bytes]) -> Message:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data: bytes, *, more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


def make_app(outcomes: list[str]) -> ASGIApp:
    """Raw ASGI routes, one per behaviour uvicorn must keep; /stream appends how it ended to
    `outcomes`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        json_length = (b"content-length", str(len(JSON_BODY)).encode())
        json_type = (b"content-type", b"application/json")
        if path == "/json":
            await send(start(200, json_type, json_length))
            await send(body(JSON_BODY))
        elif path == "/close":
            await send(start(200, json_type, json_length, (b"connection", b"close")))
            await send(body(JSON_BODY))
        elif path == "/no-content":
            await send(start(204))
            await send(body(b""))
        elif path == "/not-modified":
            await send(start(304, (b"etag", b'"v1"')))
            await send(body(b""))
        elif path == "/chunked":
            await send(start(200, (b"content-type", b"text/plain")))
            await send(body(b"a", more=True))
            await send(body(b"", more=True))
            await send(body(b"bb", more=True))
            await send(body(b""))
        elif path == "/slow":
            await send(start(200, (b"content-type", b"text/plain")))
            await asyncio.sleep(SLOW_BODY_S)
            await send(body(b"late"))
        elif path == "/stream":
            await stream_until_disconnect(receive, send, outcomes)
        elif path == "/echo":
            received = b""
            more = True
            while more:
                message = await receive()
                received += message.get("body", b"")
                more = message.get("more_body", False)
            await send(start(200, (b"content-length", str(len(received)).encode())))
            await send(body(received))
        elif path == "/raise-before":
            raise RuntimeError("the app fails before its answer")
        elif path == "/raise-after":
            await send(start(200, (b"content-length", b"10")))
            raise RuntimeError("the app fails after the head")
        elif path == "/incomplete":
            await send(start(200, (b"content-length", b"5")))
        elif path == "/short":
            await send(start(200, (b"content-length", b"10")))
            await send(body(b"12345"))
        elif path == "/long":
            await send(start(200, (b"content-length", b"2")))
            await send(body(b"12345"))
        elif path == "/bad-header":
            await send(start(200, (b"x-bad", b"a\x01b")))
            await send(body(b"never"))
        else:
            await send(start(404, (b"content-length", b"0")))
            await send(body(b""))

    return app


async def stream_until_disconnect(receive: Receive, send: Send, outcomes: list[str]) -> None:
    """A chunk every 20 ms until the client goes (at most 10 s), as an event stream would."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    try:
        await send(start(200, (b"content-type", b"text/event-stream")))
        for _ in range(500):
            await send(body(b"data: tick\n\n", more=True))
            try:
                await asyncio.wait_for(gone.wait(), 0.02)
            except TimeoutError:
                continue
            outcomes.append("disconnected")
            return
        outcomes.append("never disconnected")
    except BaseException as exc:
        outcomes.append(f"raised {exc!r}")
        raise
    finally:
        watcher.cancel()


@dataclass
class Pair:
    """The same app on Levqor's protocol and on uvicorn's."""

    levqor: Server
    uvicorn: Server
    levqor_outcomes: list[str]
    uvicorn_outcomes: list[str]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    levqor_outcomes: list[str] = []
    uvicorn_outcomes: list[str] = []
    ours = serve(make_app(levqor_outcomes), HeadHoldingProtocol)
    theirs = serve(make_app(uvicorn_outcomes), HttpToolsProtocol)
    yield Pair(ours, theirs, levqor_outcomes, uvicorn_outcomes)
    ours.stop()
    theirs.stop()


# --- one write -----------------------------------------------------------------------------------------


def test_a_small_json_answer_leaves_in_one_write(pair: Pair) -> None:
    received, writes = pair.levqor.exchange(get("/json", "Connection: close"))
    assert writes == [received]
    assert received.endswith(b"\r\n\r\n" + JSON_BODY)
    # uvicorn's own protocol takes two: the head, then the body.
    received, writes = pair.uvicorn.exchange(get("/json", "Connection: close"))
    assert writes == [received[: -len(JSON_BODY)], JSON_BODY]


def test_keep_alive_answers_take_one_write_each(pair: Pair) -> None:
    requests = get("/json") * 3 + get("/json", "Connection: close")
    received, writes = pair.levqor.exchange(requests)
    assert len(writes) == 4
    assert b"".join(writes) == received
    assert all(write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(JSON_BODY) for write in writes)


def test_a_chunked_answer_writes_its_head_with_the_first_chunk(pair: Pair) -> None:
    received, writes = pair.levqor.exchange(get("/chunked", "Connection: close"))
    assert writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n1\r\na\r\n")
    assert b"".join(writes) == received
    _, uvicorn_writes = pair.uvicorn.exchange(get("/chunked", "Connection: close"))
    assert len(writes) == len(uvicorn_writes) - 1


def test_a_head_whose_body_is_slow_is_not_kept_waiting(pair: Pair) -> None:
    for server in (pair.levqor, pair.uvicorn):
        with socket.create_connection(("127.0.0.1", server.port), timeout=SLOW_BODY_S / 3) as sock:
            sock.sendall(get("/slow", "Connection: close"))
            began = time.monotonic()
            head = read_head(sock)
            assert time.monotonic() - began < SLOW_BODY_S / 2
            assert head.endswith(b"transfer-encoding: chunked\r\n\r\n")
            sock.settimeout(10)
            rest = read_until_closed(sock)
        assert rest == b"4\r\nlate\r\n0\r\n\r\n"
    writes = pair.levqor.connections[-1]
    assert writes[0].endswith(b"\r\n\r\n")
    assert writes[1:] == [b"4\r\nlate\r\n0\r\n\r\n"]


def test_levqor_answers_leave_in_one_write_each(sqlite_template: Path, tmp_path: Path) -> None:
    """The app's own middleware passes the head and body on in one turn, so they meet."""
    path = tmp_path / "levqor.db"
    path.write_bytes(sqlite_template.read_bytes())
    server = serve(create_app(settings_for(f"sqlite:///{path}")), HeadHoldingProtocol, lifespan="on")
    try:
        payload = json.dumps({"workflow": "echo", "payload": {"text": "one write"}}).encode()
        intake = (
            f"POST /api/v1/intake HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        received, writes = server.exchange(get("/health") + intake + get("/nowhere", "Connection: close"))
        assert [write.split(b"\r\n", 1)[0] for write in writes] == [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 202 Accepted",
            b"HTTP/1.1 404 Not Found",
        ]
        assert b"".join(writes) == received
        job_id = json.loads(writes[1].split(b"\r\n\r\n", 1)[1])["job_id"]
        received, writes = server.exchange(get(f"/api/v1/status/{job_id}", "Connection: close"))
        assert writes == [received]
        assert json.loads(received.split(b"\r\n\r\n", 1)[1])["job_id"] == job_id
    finally:
        server.stop()


# --- the same bytes as uvicorn -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(get("/json", "Connection: close"), id="json"),
        pytest.param(get("/json") * 2 + get("/json", "Connection: close"), id="keep-alive"),
        pytest.param(get("/json", method="HEAD") + get("/json", "Connection: close"), id="head-keep-alive"),
        pytest.param(get("/json", "Connection: close", method="HEAD"), id="head-close"),
        pytest.param(get("/no-content") + get("/not-modified", "Connection: close"), id="204-304"),
        pytest.param(get("/chunked") + get("/chunked", "Connection: close"), id="chunked"),
        pytest.param(get("/chunked", "Connection: close", method="HEAD"), id="chunked-head"),
        pytest.param(get("/close") + get("/json"), id="app-connection-close"),
        pytest.param(b"GET /json HTTP/1.0\r\n\r\n", id="http-1.0"),
        pytest.param(get("/raise-before") + get("/json"), id="raise-before-start"),
        pytest.param(get("/raise-after") + get("/json"), id="raise-after-start"),
        pytest.param(get("/incomplete") + get("/json"), id="returns-incomplete"),
        pytest.param(get("/short") + get("/json"), id="content-shorter"),
        pytest.param(get("/long") + get("/json"), id="content-longer"),
        pytest.param(get("/bad-header") + get("/json"), id="bad-header"),
        pytest.param(get("/json") + b"NOT HTTP\r\n\r\n", id="bad-request-after"),
    ],
)
def test_the_same_bytes_as_uvicorn(pair: Pair, request_bytes: bytes) -> None:
    ours, _ = pair.levqor.exchange(request_bytes)
    theirs, _ = pair.uvicorn.exchange(request_bytes)
    assert without_date(ours) == without_date(theirs)


def test_100_continue_as_uvicorn(pair: Pair) -> None:
    answers = []
    for server in (pair.levqor, pair.uvicorn):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                b"Connection: close\r\n\r\n"
            )
            assert read_head(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"hello")
            answers.append(without_date(read_until_closed(sock)))
    assert answers[0] == answers[1]
    assert answers[0].endswith(b"\r\n\r\nhello")


def test_a_client_leaving_an_open_stream_ends_it_as_with_uvicorn(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for server, outcomes in ((pair.levqor, pair.levqor_outcomes), (pair.uvicorn, pair.uvicorn_outcomes)):
        seen = len(outcomes)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(get("/stream"))
            assert b"data: tick" in read_head(sock) + sock.recv(65536)
        deadline = time.monotonic() + 10
        while len(outcomes) == seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert outcomes[seen:] == ["disconnected"]
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


# --- a connection lost while the head is held -------------------------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.mark.parametrize("protocol", [HeadHoldingProtocol, HttpToolsProtocol])
async def test_a_connection_lost_before_the_body_writes_nothing_after_close(
    protocol: type[HttpToolsProtocol], caplog: pytest.LogCaptureFixture
) -> None:
    """The connection goes in the turn the head was sent: uvicorn had written the head already; the
    held head is dropped. Neither writes after the close, nor fails."""
    connection: list[HttpToolsProtocol] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, (b"content-length", b"2")))
        connection[0].connection_lost(None)
        await send(body(b"ok"))

    config = uvicorn.Config(app, log_config=None, lifespan="off")
    state = ServerState()
    handler = protocol(config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop())
    connection.append(handler)
    transport = FakeTransport()
    handler.connection_made(transport)
    handler.data_received(get("/"))
    await asyncio.gather(*state.tasks)
    for _ in range(3):
        await asyncio.sleep(0)  # the end of the turn, when a held head would go
    assert transport.closed
    expected = [] if protocol is HeadHoldingProtocol else [transport.writes[0]]
    assert transport.writes == expected
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("protocol", [HeadHoldingProtocol, HttpToolsProtocol])
async def test_a_head_answer_is_written_when_it_completes(protocol: type[HttpToolsProtocol]) -> None:
    """A HEAD answer writes no body to join its head to: the head is written by the time the last
    send returns, as with uvicorn, not later in the turn."""
    written: list[list[bytes]] = []
    transport = FakeTransport()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, (b"content-length", b"2")))
        await send(body(b"ok"))
        written.append(list(transport.writes))

    config = uvicorn.Config(app, log_config=None, lifespan="off")
    state = ServerState()
    handler = protocol(config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop())
    handler.connection_made(transport)
    handler.data_received(get("/", method="HEAD"))
    await asyncio.gather(*state.tasks)
    assert len(written) == 1
    assert len(written[0]) == 1
    assert written[0][0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert written[0][0].endswith(b"content-length: 2\r\n\r\n")
    assert not transport.closed


class CapturedCallbacks:
    """An event loop's `call_soon` that only keeps the callbacks, to run them when the test says."""

    def __init__(self) -> None:
        self.callbacks: list[tuple[Callable[..., None], tuple[Any, ...]]] = []

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        self.callbacks.append((callback, args))


def test_the_end_of_a_turn_writes_only_its_own_head() -> None:
    """A response's end-of-turn flush, run after that response left and the connection's next one
    started, leaves the next head held for its body."""
    loop = CapturedCallbacks()
    transport = FakeTransport()
    holder = HeadHoldingTransport(transport, cast(asyncio.AbstractEventLoop, loop))
    holder.hold_next_write()
    holder.write(b"head 1|")
    holder.write(b"body 1")
    holder.hold_next_write()
    holder.write(b"head 2|")
    callback, args = loop.callbacks[0]
    callback(*args)
    assert transport.writes == [b"head 1|body 1"]
    holder.write(b"body 2")
    assert transport.writes == [b"head 1|body 1", b"head 2|body 2"]


# --- the copy of uvicorn's code --------------------------------------------------------------------------


def function_tree(function: Callable[..., Any]) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    definition = tree.body[0]
    assert isinstance(definition, ast.FunctionDef)
    return definition


def test_the_copied_method_is_still_uvicorns() -> None:
    """HeadHoldingProtocol.on_headers_complete mirrors uvicorn's but for the cycle's class and
    transport: a new uvicorn that changes the method fails here, to be copied again."""
    ours = function_tree(HeadHoldingProtocol.on_headers_complete)
    theirs = function_tree(HttpToolsProtocol.on_headers_complete)
    docstring = ours.body[0]
    assert isinstance(docstring, ast.Expr)
    assert isinstance(docstring.value, ast.Constant)
    ours.body = ours.body[1:]
    for node in ast.walk(ours):
        if isinstance(node, ast.Name) and node.id == "HeadHoldingCycle":
            node.id = "RequestResponseCycle"
        if isinstance(node, ast.Attribute) and node.attr == "head_holder":
            node.attr = "transport"
    assert ast.dump(ours) == ast.dump(theirs)


# --- levqor serve ------------------------------------------------------------------------------------------

# Reports, in every Python process it starts (spawned server workers too), the HTTP protocol class each
# uvicorn server loads; and with TEST_BLOCK_HTTPTOOLS=1, makes httptools impossible to import.
SITE_CUSTOMIZE = """
import os
import sys

if os.environ.get("TEST_BLOCK_HTTPTOOLS") == "1":
    sys.modules["httptools"] = None

import uvicorn.config

_load = uvicorn.config.Config.load


def load(self):
    _load(self)
    cls = self.http_protocol_class
    print(f"http protocol: {cls.__module__}:{cls.__qualname__}", file=sys.stderr, flush=True)


uvicorn.config.Config.load = load
"""


def serve_env(tmp_path: Path, sqlite_template: Path, **extra: str) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_CUSTOMIZE, encoding="utf-8")
    database = tmp_path / "levqor.db"
    database.write_bytes(sqlite_template.read_bytes())
    python_path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {
        "PYTHONPATH": python_path,
        "SQLITE_PATH": str(database),
        "LEVQOR_INPROCESS_WORKER": "false",
        **extra,
    }


def protocols_loaded(log: str) -> list[str]:
    return re.findall(r"^http protocol: (\S+)$", log, flags=re.MULTILINE)


def test_levqor_serve_runs_every_worker_on_the_protocol(tmp_path: Path, sqlite_template: Path) -> None:
    proc = start_server_process(
        serve_env(tmp_path, sqlite_template), tmp_path / "server.log", "--workers", "2"
    )
    try:
        deadline = time.monotonic() + 30
        while len(protocols_loaded(proc.log())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", int(proc.url.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(get("/health", "Connection: close"))
            answer = read_until_closed(sock)
    finally:
        stop_server_process(proc)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert protocols_loaded(proc.log()) == [PROTOCOL, PROTOCOL]


def test_levqor_serve_without_httptools_falls_back_to_uvicorns_default(
    tmp_path: Path, sqlite_template: Path
) -> None:
    env = serve_env(tmp_path, sqlite_template, TEST_BLOCK_HTTPTOOLS="1")
    proc = start_server_process(env, tmp_path / "server.log")  # waits for /health to answer 200
    stop_server_process(proc)
    assert protocols_loaded(proc.log()) == ["uvicorn.protocols.http.h11_impl:H11Protocol"]
