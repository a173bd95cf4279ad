"""A small Python client for Levqor's job and worker API (needs only httpx).

    async with AsyncLevqorClient("http://127.0.0.1:5000", api_key="...") as client:
        job_id = await client.submit("echo", {"text": "hi"})
        job = await client.wait(job_id)

`RemoteWorker` serves workflows over HTTP from any process: see `levqor.client.worker`.
"""

from levqor.client.calls import ClaimedJob, Heartbeat, Job
from levqor.client.errors import (
    ApiError,
    BadRequest,
    BudgetExceeded,
    Conflict,
    Forbidden,
    LeaseLost,
    LevqorClientError,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
)
from levqor.client.http import AsyncLevqorClient, LevqorClient
from levqor.client.worker import Handler, JobRun, PermanentFailure, RemoteWorker, RetryLater

__all__ = [
    "ApiError",
    "AsyncLevqorClient",
    "BadRequest",
    "BudgetExceeded",
    "ClaimedJob",
    "Conflict",
    "Forbidden",
    "Handler",
    "Heartbeat",
    "Job",
    "JobRun",
    "LeaseLost",
    "LevqorClient",
    "LevqorClientError",
    "NotFound",
    "PermanentFailure",
    "RateLimited",
    "RemoteWorker",
    "RetryLater",
    "ServerError",
    "Unauthorized",
]
