"""The `http.request` workflow: one outbound HTTP call, through the address guard.

2xx and 3xx answers succeed (redirects are reported, never followed); 429 and 5xx fail the attempt
so it is retried (honouring a numeric `Retry-After`); other 4xx answers fail the job at once, since
sending the same request again would get the same answer.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from levqor.workflows.address_guard import AddressRefused, resolve_public
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


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


async def _read_capped(response: httpx.Response) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > MAX_RESPONSE_BYTES:
            return bytes(body[:MAX_RESPONSE_BYTES]), True
    return bytes(body), False


def _request_args(payload: dict[str, Any]) -> dict[str, Any]:
    headers = dict(payload.get("headers") or {})
    args: dict[str, Any] = {"headers": headers}
    if "body" in payload:
        body = payload["body"]
        if isinstance(body, str):
            args["content"] = body.encode()
        else:
            args["content"] = json.dumps(body).encode()
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
    return args


async def _send(
    client: httpx.AsyncClient, method: str, url: httpx.URL, args: dict[str, Any], allow_private: bool
) -> httpx.Response:
    if not allow_private:
        try:
            destination = await resolve_public(url.host, url.port or (443 if url.scheme == "https" else 80))
        except AddressRefused as exc:
            raise JobFailed(str(exc), retryable=False, details={"url": str(url)}) from None
        # Connect to the checked address; the name still goes in Host and in TLS (SNI, certificate).
        args["headers"].setdefault("Host", url.netloc.decode("ascii"))
        args["extensions"] = {"sni_hostname": url.host}
        url = url.copy_with(host=str(destination.address))
    request = client.build_request(method, url, **args)
    return await client.send(request, stream=True)


@workflow(
    "http.request",
    description="Make one outbound HTTP request (public addresses only) and return the response.",
    payload_schema=HTTP_REQUEST_SCHEMA,
    timeout_s=MAX_TIMEOUT_S + 30,
)
async def http_request(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    url = httpx.URL(payload["url"])
    method = payload.get("method", "GET")
    timeout_s = float(payload.get("timeout_s", DEFAULT_TIMEOUT_S))
    async with httpx.AsyncClient(follow_redirects=False, timeout=timeout_s, trust_env=False) as client:
        try:
            response = await _send(
                client, method, url, _request_args(payload), ctx.settings.callback_allow_private
            )
            try:
                body, truncated = await _read_capped(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise JobFailed(f"{method} {url} timed out after {timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise JobFailed(f"{method} {url} failed: {type(exc).__name__}: {exc}") from None
    # U+0000 cannot be stored in a PostgreSQL jsonb value; the body is text for people to read.
    text = body.decode(response.encoding or "utf-8", errors="replace").replace("\x00", "\ufffd")
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
        "truncated": truncated,
    }
    if not truncated and "json" in response.headers.get("content-type", ""):
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
