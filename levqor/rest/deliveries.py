"""REST route of a job's callback deliveries: re-send one (the deliveries show on the job's detail)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from levqor.http.context import context_for
from levqor.resolvers import deliveries
from levqor.resolvers.context import Scope
from levqor.rest.routing import ApiPath, ApiRoute, Operation, api_paths, json_response
from levqor.rest.shapes import DeliveryBody, ErrorBody


async def resend(request: Request) -> Response:
    record = await deliveries.resend_delivery(
        context_for(request), request.path_params["job_id"], request.path_params["delivery_id"]
    )
    return json_response(DeliveryBody.from_record(record), status_code=202)


def routes() -> list[ApiPath]:
    errors = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 429: ErrorBody}
    return api_paths(
        [
            ApiRoute(
                "POST",
                "/api/v1/jobs/{job_id}/deliveries/{delivery_id}/resend",
                resend,
                Operation(
                    "Send a callback again, as a new delivery of the same event (admin)",
                    {202: DeliveryBody, **errors},
                    "jobs",
                    scope=Scope.ADMIN,
                ),
            )
        ]
    )
