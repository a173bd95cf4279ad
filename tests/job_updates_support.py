"""Clients for the live job streams, as users run them: `gql` over graphql-transport-ws for the
`jobUpdates` subscription, and `httpx` for the server-sent events, read frame by frame."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from tests.conftest import LiveServer

JOB_UPDATES = """subscription($id: ID!) {
  jobUpdates(id: $id) {
    jobId status progress
    event { at type fromStatus toStatus attempt workerId detail }
  }
}"""
_LINE_END = re.compile(r"\r\n|\r|\n")


def job_updates(job_id: str) -> GraphQLRequest:
    return GraphQLRequest(JOB_UPDATES, variable_values={"id": job_id})


async def started(task: asyncio.Task[Any], first: asyncio.Event, timeout_s: float = 20) -> None:
    """Wait until `first` is set, failing with the task's own error if it ends before."""
    waiting = asyncio.ensure_future(first.wait())
    done, _ = await asyncio.wait({task, waiting}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task in done:
        task.result()
    if not first.is_set():
        raise AssertionError("the stream sent nothing in time")


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http://", "ws://") + "/graphql"


def ws_transport(
    server: LiveServer, *, init_payload: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=ws_url(server),
        init_payload=init_payload or {},
        headers=headers,
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        connect_timeout=10,
        ack_timeout=10,
        close_timeout=5,
    )


def ws_client(server: LiveServer, **options: Any) -> Client:
    return Client(transport=ws_transport(server, **options), fetch_schema_from_transport=False)


@dataclass
class SseEvent:
    id: str | None
    data: str
    event: str | None = None


@dataclass
class SseReader:
    """The event-stream format of the HTML standard ("Server-sent events", "Interpreting an event
    stream"): lines end with CR, LF or CRLF; a blank line dispatches; `:` starts a comment."""

    buffer: str = ""
    event_id: str | None = None
    data: list[str] = field(default_factory=list)
    event: str | None = None
    comments: int = 0

    def feed(self, text: str) -> Iterator[SseEvent]:
        self.buffer += text
        while True:
            match = _LINE_END.search(self.buffer)
            # A CR at the very end may be the first half of a CRLF still to come.
            if match is None or (match.group() == "\r" and match.end() == len(self.buffer)):
                return
            line, self.buffer = self.buffer[: match.start()], self.buffer[match.end() :]
            dispatched = self._line(line)
            if dispatched is not None:
                yield dispatched

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self.data:
                self.event = None
                return None
            dispatched = SseEvent(id=self.event_id, data="\n".join(self.data), event=self.event)
            self.data, self.event = [], None
            return dispatched
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "id" and "\0" not in value:
            self.event_id = value  # kept for later events too, as a browser keeps its last event id
        elif name == "event":
            self.event = value
        return None


async def sse_events(chunks: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
    reader = SseReader()
    async for chunk in chunks:
        for event in reader.feed(chunk):
            yield event
