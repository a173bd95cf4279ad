"""A remote worker as its own process, for the end-to-end tests: it serves `remote.task` through
`levqor.client.RemoteWorker` and holds each job until it is killed.

    python -m tests.e2e.remote_worker_process URL WORKER_ID LEASE_S
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from levqor.client import AsyncLevqorClient, JobRun, RemoteWorker

HOLD_S = 3600


async def hold(_payload: dict[str, Any], run: JobRun) -> dict[str, Any]:
    print(f"running {run.job.id} {run.job.attempt}", flush=True)
    await asyncio.sleep(HOLD_S)
    return {"by": "the killed worker"}


async def main(url: str, worker_id: str, lease_s: int) -> None:
    async with AsyncLevqorClient(url) as client:
        worker = RemoteWorker(client, {"remote.task": hold}, worker_id=worker_id, wait_s=1, lease_s=lease_s)
        await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
