"""uvicorn's httptools HTTP protocol with a cap on a request head's size and on the time to send it.

uvicorn limits neither with httptools: one 32 MiB header was answered 200, ten unfinished ones took a
process from ~105 to ~490 MB, and 1,100 sockets that never finish a head kept `/health` from
answering under `ulimit -n 1024`. Here an unfinished head that passes `max_head_bytes` is answered
431 (one that arrives whole is judged by `levqor.http.request_context`, with the request id), and a
head not complete `head_timeout_s` after its first byte (or after the connection opened) is answered
408 (or the idle connection closed). Between requests uvicorn's own keep-alive timeout applies.

Only the asyncio protocol interface (`connection_made`, `data_received`, `connection_lost`) and the
parser callbacks uvicorn implements (`on_message_begin`, `on_headers_complete`) are extended, each
calling uvicorn's own first or last. Bytes are counted as they arrive while a head is unfinished,
which bounds what the parser can be holding; with pipelined requests the count can include the end of
the previous body, so the cap errs on the strict side only then.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from levqor.config import DEFAULT_HEAD_TIMEOUT_S, DEFAULT_MAX_HEADER_BYTES, Settings
from levqor.http.errors import error_response
from levqor.http.request_context import SECURITY_HEADERS

logger = logging.getLogger(__name__)


def _answer(status: int, reason: str, message: str) -> bytes:
    """The contract's error body (no request id: no request began), written before the app runs."""
    response = error_response(status, "invalid_request", message, request_id=None)
    headers = [
        *response.raw_headers,
        (b"connection", b"close"),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS),
    ]
    head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    return b"HTTP/1.1 %d %s\r\n%s\r\n%s" % (status, reason.encode("latin-1"), head, bytes(response.body))


class HeadLimitedProtocol(HttpToolsProtocol):
    max_head_bytes: ClassVar[int] = DEFAULT_MAX_HEADER_BYTES
    head_timeout_s: ClassVar[float] = DEFAULT_HEAD_TIMEOUT_S

    head_pending: bool
    head_bytes: int
    head_timer: asyncio.TimerHandle | None

    @classmethod
    def with_limits(cls, settings: Settings) -> type[HeadLimitedProtocol]:
        """This protocol with the head limits of `settings` (uvicorn takes a class)."""
        return type(
            cls.__name__,
            (cls,),
            {"max_head_bytes": settings.max_header_bytes, "head_timeout_s": settings.head_timeout_s},
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_timer = None
        self._begin_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begin_head()

    def on_headers_complete(self) -> None:
        self.head_pending = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head_pending and not self.transport.is_closing():
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head_bytes:
                message = f"the request head is larger than {self.max_head_bytes} bytes"
                self._refuse(431, "Request Header Fields Too Large", message)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().connection_lost(exc)

    def _begin_head(self) -> None:
        self.head_pending = True
        self.head_bytes = 0
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if not self.head_pending or self.transport.is_closing():
            return
        if self.head_bytes == 0 and self.cycle is None:
            self.transport.close()  # a connection that never sent a byte: nothing to answer
            return
        message = f"the request head did not arrive within {self.head_timeout_s:g} s"
        self._refuse(408, "Request Timeout", message)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self.head_pending = False
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
        logger.warning("refused a request head: %s", message, extra={"client": client, "status": status})
        self.transport.write(_answer(status, reason, message))
        self.transport.close()
