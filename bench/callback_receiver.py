"""The webhook receiver bench/callbacks.py measures against: a bare ASGI app under uvicorn on
loopback that answers 204 at once and notes each callback's `webhook-id` and arrival time. The first
few requests are kept whole, so the bench can check their signatures.

    python -m bench.callback_receiver --port N

`GET /arrivals` answers `{"arrivals": [[webhook_id, unix_s], ...], "samples": [{"headers", "body"}]}`
and `POST /reset` forgets them.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import uvicorn

KEPT_WHOLE = 5

arrivals: list[tuple[str, float]] = []
samples: list[dict[str, Any]] = []


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(send: Any, status: int, body: bytes = b"") -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    if scope["method"] == "GET" and scope["path"] == "/arrivals":
        await respond(send, 200, json.dumps({"arrivals": arrivals, "samples": samples}).encode())
        return
    if scope["method"] == "POST" and scope["path"] == "/reset":
        arrivals.clear()
        samples.clear()
        await respond(send, 204)
        return
    at = time.time()
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    arrivals.append((headers.get("webhook-id", ""), at))
    if len(samples) < KEPT_WHOLE:
        samples.append({"headers": headers, "body": body.decode()})
    await respond(send, 204)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
