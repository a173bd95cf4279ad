"""The async and the sync client: the same calls (`levqor.client.calls`), sent with httpx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from levqor.client import calls
from levqor.client.calls import Call, ClaimedJob, Heartbeat, Job
from levqor.client.errors import error_for

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
WAIT_POLL_S = 0.05


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "levqor-client"}
    if api_key:
        headers["X-Api-Key"] = api_key
    return headers


def _decode(call: Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        raise error_for(response.status_code, body, dict(response.headers), lease_fenced=call.lease_fenced)
    return call.decode(response)


def _timeout(call: Call[Any]) -> Any:
    return httpx.USE_CLIENT_DEFAULT if call.timeout_s is None else call.timeout_s


class AsyncLevqorClient:
    """The job and worker API over HTTP. Use as `async with AsyncLevqorClient(url, api_key=...)`."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout_s, transport=transport
        )

    async def _send(self, call: Call[T]) -> T:
        response = await self._http.request(
            call.method, call.path, json=call.json, headers=call.headers, timeout=_timeout(call)
        )
        return _decode(call, response)

    async def submit(self, workflow: str, payload: Mapping[str, Any], **options: Any) -> str:
        """Submit a job; returns its id. Options: priority, run_at, max_attempts, timeout_s,
        callback_url, user_id, idempotency_key."""
        return await self._send(calls.submit(workflow, payload, **options))

    async def get(self, job_id: str) -> Job:
        return await self._send(calls.get(job_id))

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or ask its worker to stop a running one."""
        return await self._send(calls.cancel(job_id))

    async def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again."""
        return await self._send(calls.retry(job_id))

    async def wait(self, job_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Job:
        """Poll until the job is terminal; TimeoutError when it is not within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = await self.get(job_id)
            if job.is_terminal:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout_s} s")
            await asyncio.sleep(WAIT_POLL_S)

    async def claim(
        self,
        worker_id: str,
        workflows: Sequence[str],
        *,
        max_jobs: int = 1,
        wait_s: float = 0,
        lease_s: int | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to `max_jobs`, waiting up to `wait_s` for one to arrive; [] when none came."""
        return await self._send(
            calls.claim(worker_id, workflows, max_jobs=max_jobs, wait_s=wait_s, lease_s=lease_s)
        )

    async def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        *,
        progress: Mapping[str, Any] | None = None,
        lease_s: int | None = None,
        cost_micros: int | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> Heartbeat:
        return await self._send(
            calls.heartbeat(
                job_id,
                worker_id,
                attempt,
                progress=progress,
                lease_s=lease_s,
                cost_micros=cost_micros,
                usage=usage,
            )
        )

    async def complete(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        result: Mapping[str, Any],
        *,
        cost_micros: int | None = None,
        usage: Mapping[str, int] | None = None,
        cost: Decimal | float | None = None,
    ) -> Job:
        return await self._send(
            calls.complete(
                job_id, worker_id, attempt, result, cost_micros=cost_micros, usage=usage, cost=cost
            )
        )

    async def fail(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        error: Mapping[str, Any] | str,
        *,
        retryable: bool = True,
        retry_after_s: float | None = None,
        cost_micros: int | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> Job:
        return await self._send(
            calls.fail(
                job_id,
                worker_id,
                attempt,
                error,
                retryable=retryable,
                retry_after_s=retry_after_s,
                cost_micros=cost_micros,
                usage=usage,
            )
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class LevqorClient:
    """The same API, blocking. Use as `with LevqorClient(url, api_key=...)`."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout_s, transport=transport
        )

    def _send(self, call: Call[T]) -> T:
        response = self._http.request(
            call.method, call.path, json=call.json, headers=call.headers, timeout=_timeout(call)
        )
        return _decode(call, response)

    def submit(self, workflow: str, payload: Mapping[str, Any], **options: Any) -> str:
        return self._send(calls.submit(workflow, payload, **options))

    def get(self, job_id: str) -> Job:
        return self._send(calls.get(job_id))

    def cancel(self, job_id: str) -> Job:
        return self._send(calls.cancel(job_id))

    def retry(self, job_id: str) -> Job:
        return self._send(calls.retry(job_id))

    def wait(self, job_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Job:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if job.is_terminal:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout_s} s")
            time.sleep(WAIT_POLL_S)

    def claim(
        self,
        worker_id: str,
        workflows: Sequence[str],
        *,
        max_jobs: int = 1,
        wait_s: float = 0,
        lease_s: int | None = None,
    ) -> list[ClaimedJob]:
        return self._send(
            calls.claim(worker_id, workflows, max_jobs=max_jobs, wait_s=wait_s, lease_s=lease_s)
        )

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        *,
        progress: Mapping[str, Any] | None = None,
        lease_s: int | None = None,
        cost_micros: int | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> Heartbeat:
        return self._send(
            calls.heartbeat(
                job_id,
                worker_id,
                attempt,
                progress=progress,
                lease_s=lease_s,
                cost_micros=cost_micros,
                usage=usage,
            )
        )

    def complete(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        result: Mapping[str, Any],
        *,
        cost_micros: int | None = None,
        usage: Mapping[str, int] | None = None,
        cost: Decimal | float | None = None,
    ) -> Job:
        return self._send(
            calls.complete(
                job_id, worker_id, attempt, result, cost_micros=cost_micros, usage=usage, cost=cost
            )
        )

    def fail(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        error: Mapping[str, Any] | str,
        *,
        retryable: bool = True,
        retry_after_s: float | None = None,
        cost_micros: int | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> Job:
        return self._send(
            calls.fail(
                job_id,
                worker_id,
                attempt,
                error,
                retryable=retryable,
                retry_after_s=retry_after_s,
                cost_micros=cost_micros,
                usage=usage,
            )
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["AsyncLevqorClient", "ClaimedJob", "Heartbeat", "Job", "LevqorClient"]
