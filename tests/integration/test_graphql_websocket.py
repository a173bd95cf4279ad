"""GraphQL over a WebSocket speaks `graphql-transport-ws` only. A client offering nothing but the
legacy `graphql-ws` protocol is refused at the handshake, without a traceback in the log (it used to be
accepted and to answer a plain query with INTERNAL_SERVER_ERROR)."""

from __future__ import annotations

import json
import logging

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import LiveServer

HEALTH = "query Health { health { ok } }"


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http://", "ws://") + "/graphql"


@pytest.mark.parametrize("db_kind", ["sqlite"])
@pytest.mark.parametrize("offered", [["graphql-ws"], [], ["graphql-ws", "something-else"]])
def test_a_client_without_graphql_transport_ws_is_refused_at_the_handshake(
    server: LiveServer, db_kind: str, offered: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server), subprotocols=offered or None, open_timeout=10)
    assert refused.value.response.status_code == 403
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_graphql_transport_ws_answers_a_query(
    server: LiveServer, db_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    # Offered second: the server picks the one protocol it speaks.
    with connect(ws_url(server), subprotocols=["graphql-ws", "graphql-transport-ws"], open_timeout=10) as ws:
        assert ws.subprotocol == "graphql-transport-ws"
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "connection_ack"}
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": HEALTH}}))
        assert json.loads(ws.recv(timeout=10)) == {
            "id": "1",
            "type": "next",
            "payload": {"data": {"health": {"ok": True}}},
        }
        assert json.loads(ws.recv(timeout=10)) == {"id": "1", "type": "complete"}
        # Errors get their codes on this transport too.
        ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": "{ nosuchField }"}}))
        answer = json.loads(ws.recv(timeout=10))
        assert answer["type"] == "error"
        assert [error["extensions"]["code"] for error in answer["payload"]] == ["GRAPHQL_VALIDATION_FAILED"]
    assert not [record for record in caplog.records if record.exc_info]
