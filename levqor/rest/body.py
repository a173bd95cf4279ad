"""Reading a JSON request body: 415 for another media type, 400 for JSON that does not parse."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from levqor.errors import InvalidRequest, UnsupportedMediaType


def is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def read_json(request: Request, *, allow_empty: bool = False) -> Any:
    raw = await request.body()
    if not raw.strip() and allow_empty:
        return {}
    if not is_json(request.headers.get("content-type", "")):
        raise UnsupportedMediaType("send the body as application/json")
    return decode_json(raw)


def decode_json(raw: str | bytes) -> Any:
    """Strict JSON (RFC 8259) as both API surfaces read it; `InvalidRequest` when it is not."""
    try:
        return _DECODER.decode(_text_of(raw))
    except UnicodeDecodeError:
        raise InvalidRequest("the request body is not UTF-8") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError:
        # Python refuses to convert integers of more than 4300 digits (CVE-2020-10735).
        raise InvalidRequest("the request body has a number too long to read") from None


def _text_of(raw: str | bytes) -> str:
    """The text `json.loads` would read: bytes decoded as their first bytes say (UTF-8, -16 or -32),
    a str with a byte-order mark refused. `json.loads` with any option builds a new decoder per call;
    this lets every body share one."""
    if isinstance(raw, str):
        if raw.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
        return raw
    return raw.decode(json.detect_encoding(raw), "surrogatepass")


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (RFC 8259) and PostgreSQL's jsonb do not.
    raise InvalidRequest(f"the request body is not valid JSON: {name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
