"""Mutation fields: each returns a payload with the object and `userErrors`."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from levqor.resolvers import jobs, users
from levqor.schema.budgets import BudgetMutation
from levqor.schema.deliveries import DeliveryMutation
from levqor.schema.errors import with_user_errors
from levqor.schema.inputs import SubmitJobInput, UpdateUserInput, UpsertUserInput, as_data
from levqor.schema.job_control import JobControlMutation
from levqor.schema.keys import KeyMutation
from levqor.schema.runs import RunMutation
from levqor.schema.schedules import ScheduleMutation
from levqor.schema.types import JobType, UserError, UserType
from levqor.schema.workers import WorkerMutation


@strawberry.type
class SubmitJobPayload:
    job: JobType | None
    replayed: bool = strawberry.field(
        default=False, description="True when the idempotency key returned the job of an earlier request."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CompleteJobPayload:
    job: JobType | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UpsertUserPayload:
    user: UserType | None
    created: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UpdateUserPayload:
    user: UserType | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class Mutation(
    WorkerMutation,
    KeyMutation,
    JobControlMutation,
    DeliveryMutation,
    BudgetMutation,
    ScheduleMutation,
    RunMutation,
):
    @strawberry.mutation(description="Submit a job (needs `jobs:write`), as POST /api/v1/intake.")
    async def submit_job(
        self, info: Info[Any, None], input: SubmitJobInput, idempotency_key: str | None = None
    ) -> SubmitJobPayload:
        async def call() -> SubmitJobPayload:
            submitted = await jobs.submit_job(
                info.context.levqor, as_data(input), idempotency_key=idempotency_key
            )
            return SubmitJobPayload(job=JobType.from_row(submitted.job), replayed=not submitted.created)

        return await with_user_errors(call, lambda errors: SubmitJobPayload(job=None, user_errors=errors))

    @strawberry.mutation(description="Complete a queued or running job by hand (development only).")
    async def complete_job(
        self, info: Info[Any, None], id: strawberry.ID, result: JSON | None = None
    ) -> CompleteJobPayload:
        async def call() -> CompleteJobPayload:
            body = {} if result is None else {"result": result}
            job = await jobs.dev_complete_job(info.context.levqor, id, body)
            return CompleteJobPayload(job=JobType.from_row(job))

        return await with_user_errors(call, lambda errors: CompleteJobPayload(job=None, user_errors=errors))

    @strawberry.mutation(description="Create or update a user by email (needs `users:write`).")
    async def upsert_user(self, info: Info[Any, None], input: UpsertUserInput) -> UpsertUserPayload:
        async def call() -> UpsertUserPayload:
            upserted = await users.upsert_user(info.context.levqor, as_data(input))
            return UpsertUserPayload(user=UserType.from_row(upserted.user), created=upserted.created)

        return await with_user_errors(call, lambda errors: UpsertUserPayload(user=None, user_errors=errors))

    @strawberry.mutation(description="Update a user's fields (needs `users:write`).")
    async def update_user(
        self, info: Info[Any, None], id: strawberry.ID, input: UpdateUserInput
    ) -> UpdateUserPayload:
        async def call() -> UpdateUserPayload:
            user = await users.update_user(info.context.levqor, id, as_data(input))
            return UpdateUserPayload(user=UserType.from_row(user))

        return await with_user_errors(call, lambda errors: UpdateUserPayload(user=None, user_errors=errors))
