"""Listening for PostgreSQL notifications on one channel, reconnecting after errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

LISTEN_RETRY_S = 1.0


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq takes it (no driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen(url: str, channel: str, on_notify: Callable[[], None]) -> None:
    """Call `on_notify` for each notification on `channel`, and once each time listening starts (what
    was sent while nobody listened is looked for again then). Runs until cancelled."""
    while True:
        try:
            connection = await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True)
            async with connection:
                await connection.execute(f"LISTEN {channel}")
                on_notify()
                async for _notice in connection.notifies():
                    on_notify()
        except psycopg.Error as exc:
            extra = {"channel": channel, "error": str(exc)}
            logger.warning("notifications unavailable, polling", extra=extra)
        await asyncio.sleep(LISTEN_RETRY_S)
