"""The bare Starlette route bench/http.py prints beside its figures, as context and not a target.

No middleware, no database, no validation beyond parsing the JSON body. The paths are Levqor's, so the
very same wrk scripts load every server.

Run by bench/http.py as `uvicorn bench.bare_app:app` from the repository root, uvicorn's defaults.
"""

from __future__ import annotations

import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def intake(request: Request) -> JSONResponse:
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("workflow"), str):
        return JSONResponse({"error": "invalid_request"}, status_code=400)
    return JSONResponse({"job_id": str(uuid.uuid4()), "status": "queued"}, status_code=202)


async def status(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "job_id": request.path_params["job_id"],
            "status": "queued",
            "created_at": 0,
            "result": None,
            "error": None,
        }
    )


app = Starlette(
    routes=[
        Route("/api/v1/intake", intake, methods=["POST"]),
        Route("/api/v1/status/{job_id}", status, methods=["GET"]),
    ]
)
