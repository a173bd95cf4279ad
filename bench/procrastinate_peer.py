"""The procrastinate app bench/queue.py's procrastinate workers run:
`python -m procrastinate --app bench.procrastinate_peer.app worker`, with the worker's defaults (one
job at a time per process, LISTEN/NOTIFY). The connector takes its database from libpq's
environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE), which the bench sets per run.
"""

from __future__ import annotations

from typing import Any

import procrastinate

TASK_NAME = "echo"

app = procrastinate.App(connector=procrastinate.PsycopgConnector())


@app.task(name=TASK_NAME)
async def echo(**payload: Any) -> dict[str, Any]:
    # procrastinate keeps no return value; its record of the outcome is the job's status and events.
    return payload
