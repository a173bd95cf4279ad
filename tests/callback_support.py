"""A real webhook receiver for the callback tests: a Starlette app under uvicorn on loopback, which
records every request and answers as the test scripts it (a status per request, or a hang)."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.conftest import serve_in_thread

HANG = -1  # a scripted answer: accept the request and never answer


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    script: list[int] = field(default_factory=list)  # answers for the next requests; then `default`
    default: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)

    def answer(self) -> int:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def record(self, item: Received) -> None:
        with self.lock:
            self.received.append(item)

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.snapshot()
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise AssertionError(f"the receiver got {len(self.snapshot())} requests, expected {count}")


def receiver_app(receiver: Receiver) -> Starlette:
    async def hook(request: Request) -> Response:
        body = await request.body()
        receiver.record(Received(request.url.path, dict(request.headers), body, time.time()))
        status = receiver.answer()
        if status == HANG:
            while not receiver.closing.is_set():  # until the test ends: the sender must cut it
                await asyncio.sleep(0.05)
            status = 503
        return PlainTextResponse(f"answered {status}", status_code=status)

    return Starlette(routes=[Route("/{path:path}", hook, methods=["POST", "GET"])])


def start_receiver() -> tuple[Receiver, Callable[[], None]]:
    receiver = Receiver(url="")
    config = uvicorn.Config(receiver_app(receiver), log_config=None, access_log=False, lifespan="off")
    server, thread, port = serve_in_thread(config)
    receiver.url = f"http://127.0.0.1:{port}/hooks"

    def stop() -> None:
        receiver.closing.set()
        server.should_exit = True
        thread.join(timeout=10)

    return receiver, stop


def receivers() -> Iterator[Callable[[], Receiver]]:
    """A factory of receivers, all stopped at the end (the body of a fixture)."""
    stops: list[Callable[[], None]] = []

    def make() -> Receiver:
        receiver, stop = start_receiver()
        stops.append(stop)
        return receiver

    yield make
    for stop in stops:
        stop()


def wait_for_job(
    http: httpx.Client, job_id: str, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0
) -> dict[str, Any]:
    """Poll the job's detail until `predicate` holds for it."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = http.get(f"/api/v1/jobs/{job_id}").json()
        if predicate(body):
            return body
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not get there in {timeout_s} s: {body}")
