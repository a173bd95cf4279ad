"""GraphQL twin of re-sending a callback: `resendDelivery`."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types import Info

from levqor.resolvers import deliveries
from levqor.schema.delivery_types import DeliveryType
from levqor.schema.errors import with_user_errors
from levqor.schema.types import UserError


@strawberry.type
class ResendDeliveryPayload:
    delivery: DeliveryType | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class DeliveryMutation:
    @strawberry.mutation(
        description="Send a callback again as a new delivery of the same event (same body and "
        "webhook-id), due now (needs `admin`)."
    )
    async def resend_delivery(
        self, info: Info[Any, None], job_id: strawberry.ID, delivery_id: strawberry.ID
    ) -> ResendDeliveryPayload:
        async def call() -> ResendDeliveryPayload:
            record = await deliveries.resend_delivery(info.context.levqor, job_id, delivery_id)
            return ResendDeliveryPayload(delivery=DeliveryType.from_record(record))

        return await with_user_errors(
            call, lambda errors: ResendDeliveryPayload(delivery=None, user_errors=errors)
        )
