"""The `http.request` workflow: one outbound HTTP call, through the callback guard.

2xx and 3xx answers succeed (redirects are reported, never followed); 429 and 5xx fail the attempt
so it is retried (honouring a numeric `Retry-After`); other 4xx answers fail the job at once, since
sending the same request again would get the same answer.
"""

from __future__ import annotations

import json
from email.message import Message
from typing import Any

import aiohttp

from levqor.callbacks.guard import AddressRefused, GuardedResponse, OutboundSession, guarded_request
from levqor.workflows.context import JobFailed, JobRunContext
from levqor.workflows.registry import workflow

DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 60
MAX_RESPONSE_BYTES = 1024 * 1024  # 1 MiB of response body is kept in the result
MAX_ERROR_BODY_CHARS = 1000
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

HTTP_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "method": {"enum": METHODS, "default": "GET"},
        "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://", "maxLength": 2048},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 8192},
            "maxProperties": 50,
        },
        "body": {"description": "A string is sent as is; any other JSON value is sent as JSON."},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
    },
    "required": ["url"],
    "additionalProperties": False,
}


def _retry_after_s(response: GuardedResponse) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def _text(response: GuardedResponse) -> str:
    """The body as text, in the Content-Type's charset when it names a known one, else UTF-8."""
    header = Message()
    header["content-type"] = response.headers.get("content-type", "")
    try:
        text = response.body.decode(header.get_content_charset() or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know, or a codec that is not a text encoding
        text = response.body.decode("utf-8", errors="replace")
    # U+0000 cannot be stored in a PostgreSQL jsonb value; the body is text for people to read.
    return text.replace("\x00", "\ufffd")


def _request_args(payload: dict[str, Any]) -> tuple[dict[str, str], bytes | None]:
    headers = dict(payload.get("headers") or {})
    if "body" not in payload:
        return headers, None
    body = payload["body"]
    if isinstance(body, str):
        return headers, body.encode()
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return headers, json.dumps(body).encode()


@workflow(
    "http.request",
    description="Make one outbound HTTP request (public addresses only) and return the response.",
    payload_schema=HTTP_REQUEST_SCHEMA,
    timeout_s=MAX_TIMEOUT_S + 30,
)
async def http_request(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    url = payload["url"]
    method = payload.get("method", "GET")
    timeout_s = float(payload.get("timeout_s", DEFAULT_TIMEOUT_S))
    headers, content = _request_args(payload)
    async with OutboundSession(allow_private=ctx.settings.callback_allow_private) as outbound:
        try:
            response = await guarded_request(
                outbound,
                method,
                url,
                headers=headers,
                content=content,
                timeout_s=timeout_s,
                max_response_bytes=MAX_RESPONSE_BYTES,
            )
        except AddressRefused as exc:
            raise JobFailed(str(exc), retryable=False, details={"url": url}) from None
        except TimeoutError:
            raise JobFailed(f"{method} {url} timed out after {timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise JobFailed(f"{method} {url} failed: {type(exc).__name__}: {exc}") from None
    text = _text(response)
    if response.status_code >= 400:
        retryable = response.status_code == 429 or response.status_code >= 500
        raise JobFailed(
            f"{method} {url} answered {response.status_code}",
            retryable=retryable,
            retry_after_s=_retry_after_s(response) if retryable else None,
            details={"status": response.status_code, "body": text[:MAX_ERROR_BODY_CHARS]},
        )
    result: dict[str, Any] = {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": text,
        "truncated": response.truncated,
    }
    if not response.truncated and "json" in response.headers.get("content-type", ""):
        result["json"] = _json_or_none(text)
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_or_none(text: str) -> Any:
    """The parsed body, or None when it does not parse as strict JSON (the text is in `body`)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:  # JSONDecodeError is a ValueError
        return None
