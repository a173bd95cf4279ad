"""uvicorn's httptools HTTP protocol, with one socket write per small answer.

uvicorn writes a response's head (status line and headers) with one `transport.write` when the app
sends `http.response.start`, and the body with another at `http.response.body`. On loopback each
write runs the kernel's TCP send path and, when the client sleeps, wakes it: for an answer that fits
in one packet, that is a second send and a second wake-up for nothing. So here the head waits for the
first body bytes and leaves with them, in one write; for chunked encoding, with the first chunk's
framing, exactly as uvicorn frames it.

A head whose body does not follow in the same event-loop turn (a stream, server-sent events, a slow
generator) is written at the end of that turn, so headers never wait for a slow body. A HEAD answer's
head is written at its first body message (it has no body bytes to join), and a held head is written
before the transport is closed; it is dropped, never written, once the connection is closing or lost
(uvicorn's own `send` stops writing once it learns the connection is lost).

What is kept of uvicorn: everything else, by running uvicorn's own code. `RequestResponseCycle.send`,
`receive` and `run_asgi` are uvicorn's, unchanged (header validation, Content-Length accounting,
HEAD, 204/304, keep-alive, `Connection: close`, chunked framing, the 500 on app errors, 100-continue,
flow control); the cycle only writes through the connection's `HeadHoldingTransport`, which holds
the head's write, and tells it which write that is. The one piece of uvicorn copied is
`HttpToolsProtocol.on_headers_complete`, which creates the cycle with no way to choose its class or
transport: it mirrors uvicorn 0.54.0's line for line but for those two, pyproject pins uvicorn to 0.54,
and tests/integration/test_http_protocol.py fails if uvicorn's version of the method changes.

The additions are kept cheap, or they would eat what the saved write gives: one holder per
connection, not per request; the cycle's `send` is a plain function handing back uvicorn's coroutine,
not a second coroutine around it; one `call_soon` per response. Measured on bench.bare_app's status
GET under wrk: about 1 us more of Python per request (in-process, on a stub transport), about 4 us
less of system time, so 38 us of server CPU per request instead of 41.5.

`levqor serve` and the benchmark's reference servers run on `HeadHoldingProtocol` when httptools is
installed (uvicorn's "auto" would pick it); without it they fall back to uvicorn's default.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Coroutine
from typing import Any

import httptools
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

__all__ = ["HeadHoldingCycle", "HeadHoldingProtocol", "HeadHoldingTransport"]


class HeadHoldingTransport(asyncio.Transport):
    """A connection's transport as its request cycles see it, one cycle at a time. The cycle marks
    the write that carries the response head (`hold_next_write`); that write is held, and goes out
    joined to the next write, at the end of the event-loop turn, at `flush` or before a close,
    whichever comes first. Every other call goes straight to the connection's transport."""

    __slots__ = ("_head", "_hold_next", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._hold_next = False
        self._head: bytes | None = None

    def hold_next_write(self) -> None:
        self._hold_next = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif self._hold_next:
            self._hold_next = False
            self._head = head = bytes(data)
            self._loop.call_soon(self._flush_if_held, head)
        else:
            self._transport.write(data)

    def _flush_if_held(self, head: bytes) -> None:
        # The end of the turn the head was held in: write it unless it left already (this head, not
        # a later response's on the same connection).
        if self._head is head:
            self.flush()

    def flush(self) -> None:
        """Write the held head, if any; drop it once the connection is closing or lost (the
        transport is closing by the time uvicorn learns of a lost connection)."""
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class HeadHoldingCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, writing through the connection's `HeadHoldingTransport`."""

    transport: HeadHoldingTransport

    def send(self, message: ASGISendEvent) -> Coroutine[Any, Any, None]:
        """uvicorn's `send`, the head's write marked first. A plain function that hands back
        uvicorn's coroutine, so that each message costs no second coroutine."""
        if not self.response_started:
            # uvicorn's send, given the start, writes the whole head at once: it is the next write.
            self.transport.hold_next_write()
        elif self.scope["method"] == "HEAD":
            # No body bytes will be written to join the head to.
            self.transport.flush()
        return super().send(message)


class HeadHoldingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose requests run in a `HeadHoldingCycle`."""

    head_holder: HeadHoldingTransport

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self.head_holder = HeadHoldingTransport(transport, self.loop)

    def on_headers_complete(self) -> None:
        """uvicorn 0.54.0's `HttpToolsProtocol.on_headers_complete`, but for the cycle's class and
        transport."""
        http_version = self.parser.get_http_version()
        method = self.parser.get_method()
        self.scope["method"] = method.decode("ascii")
        if http_version != "1.1":
            self.scope["http_version"] = http_version
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        full_path = self.root_path + path
        full_raw_path = self.root_path.encode("ascii") + raw_path
        self.scope["path"] = full_path
        self.scope["raw_path"] = full_raw_path
        self.scope["query_string"] = parsed_url.query or b""

        # Handle 503 responses when 'limit_concurrency' is exceeded.
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            message = "Exceeded concurrency limit."
            self.logger.warning(message)
        else:
            app = self.app

        existing_cycle = self.cycle
        self.cycle = HeadHoldingCycle(
            scope=self.scope,
            transport=self.head_holder,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and self.parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if existing_cycle is None or existing_cycle.response_complete:
            # Standard case - start processing the request.
            self._start_asgi_task(self.cycle, app)
        else:
            # Pipelined HTTP requests need to be queued up.
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, app))
