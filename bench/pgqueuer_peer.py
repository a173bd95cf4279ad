"""The PgQueuer worker bench/queue.py runs: `python -m bench.pgqueuer_peer DSN`.

One process, one asyncpg connection, the no-op job as the `echo` entrypoint, and `PgQueuer.run()`
with its defaults (batches of 10, continuous). SIGTERM asks it to stop after the jobs in hand.

It stands in for `pgq run <module>:<factory>`, the way PgQueuer's documentation runs a worker:
that command fails in pgqueuer 1.6.0 before it loads the factory (`AttributeError: 'str' object has
no attribute 'name'` from its log-level option, with or without `--log-level`), so this module
builds the same `PgQueuer` from a factory and runs it through the same public API.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import asyncpg
from pgqueuer import AsyncpgDriver, Job, PgQueuer

ENTRYPOINT = "echo"


async def create_pgqueuer(dsn: str) -> PgQueuer:
    connection = await asyncpg.connect(dsn)
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint(ENTRYPOINT)
    async def echo(job: Job) -> None:
        # PgQueuer keeps no return value; its record of the outcome is the job's log row.
        return None

    return pgq


async def serve(dsn: str) -> None:
    pgq = await create_pgqueuer(dsn)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, pgq.shutdown.set)
    await pgq.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pgqueuer_peer", description=__doc__.split("\n")[0])
    parser.add_argument("dsn", help="the PostgreSQL database, as asyncpg takes it (postgresql://...)")
    asyncio.run(serve(parser.parse_args(argv).dsn))


if __name__ == "__main__":
    main()
