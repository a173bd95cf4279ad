"""The delivery loop: claim due deliveries, POST each signed through the address guard, record what
came back, in batches.

One loop per worker process (`levqor worker`, and `levqor serve` with its in-process worker). Every
database call goes through `Database.write`/`read` (a thread), never on the event loop. A delivery
holds its slot until its result is written; the results that finish together are written in one
transaction that also claims the deliveries to fill the slots they free. A
loop that is stopped lets the POSTs in flight end (each is capped at the callback timeout) and writes
their results; one that is killed leaves leases that run out, and the deliveries are sent again, as
new attempts, by whichever loop claims them next.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from datetime import datetime

import aiohttp
from sqlmodel import Session

from levqor.callbacks import attempts as outbox_attempts
from levqor.callbacks.attempts import AttemptResult, ClaimedDelivery
from levqor.callbacks.guard import AddressRefused, HostResolver, OutboundSession, guarded_request
from levqor.callbacks.outbox import CHANNEL, on_deliverable
from levqor.callbacks.secrets import signing_secrets
from levqor.callbacks.signing import signed_headers
from levqor.config import Settings
from levqor.db.engine import Database
from levqor.db.listen import listen
from levqor.db.types import utcnow

logger = logging.getLogger(__name__)

POLL_S = 1.0  # the longest wait between looks for due deliveries (SQLite, other processes' rows)
DB_RETRY_S = 1.0
EXCERPT_CHARS = 1000  # of a response body, kept on the attempt
EXCERPT_BYTES = 4 * EXCERPT_CHARS  # read at most this much of a response (UTF-8 is 1-4 bytes a char)
MAX_ERROR_CHARS = 500


class Deliverer:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        worker_id: str,
        resolver: HostResolver | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.worker_id = worker_id
        self.resolver = resolver
        self.concurrency = concurrency or settings.callback_concurrency
        # The POST is capped at the timeout; as long again covers recording what it got.
        self.lease_s = 2 * settings.callback_timeout_s
        self._outbound: OutboundSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._held = 0  # deliveries claimed whose result is not recorded yet
        self._reserved = 0  # slots a claim in flight may fill
        self._results: list[AttemptResult] = []
        self._result_ready = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._generation = 0
        self._poked = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def stop(self) -> None:
        self._stopping.set()
        self._on_poke()
        self._slot_freed.set()

    def poke(self) -> None:
        """A delivery may be due now (safe from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                loop.call_soon_threadsafe(self._on_poke)

    def _on_poke(self) -> None:
        self._generation += 1
        self._poked.set()

    async def run(self) -> None:
        """Deliver until `stop()`; then let the POSTs in flight end, record them and return."""
        self._loop = asyncio.get_running_loop()
        remove = on_deliverable(self.poke)
        allow_private = self.settings.callback_allow_private
        async with OutboundSession(
            allow_private=allow_private, resolver=self.resolver, limit=self.concurrency
        ) as outbound:
            self._outbound = outbound
            helpers = [asyncio.create_task(self._flush_loop(), name="levqor-deliveries-flush")]
            if self.settings.db_url.startswith("postgresql"):
                listener = listen(self.settings.db_url, CHANNEL, self.poke)
                helpers.append(asyncio.create_task(listener, name="levqor-deliveries-listen"))
            try:
                await self._claim_loop()
            finally:
                remove()
                if self._tasks:
                    await asyncio.wait(set(self._tasks))
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
                await self._flush()

    # --- claiming and sending ------------------------------------------------------------------

    def _free_slots(self) -> int:
        return self.concurrency - self._held - self._reserved

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            self._slot_freed.clear()  # before counting, so a slot freed meanwhile is not missed
            free = self._free_slots()
            if free <= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), POLL_S)
                continue
            token = self._generation
            try:
                _, claimed = await self._claim_into(free)
            except Exception:
                logger.exception("could not claim deliveries; retrying", extra={"worker_id": self.worker_id})
                await asyncio.sleep(DB_RETRY_S)
                continue
            if len(claimed) < free:
                await self._idle(token)

    async def _claim_into(
        self, free: int, record: list[AttemptResult] | None = None
    ) -> tuple[outbox_attempts.Applied | None, list[ClaimedDelivery]]:
        """Reserve `free` slots; record `record`'s results (if any) and claim up to `free` deliveries
        in one transaction; start what came."""
        self._reserved += free
        try:
            applied, claimed = await self.db.write(
                functools.partial(self._record_and_claim, results=record, max_deliveries=free)
            )
        finally:
            self._reserved -= free
        for delivery, secrets in claimed:
            self._start(delivery, secrets)
        return applied, [delivery for delivery, _ in claimed]

    def _record_and_claim(
        self, session: Session, *, results: list[AttemptResult] | None, max_deliveries: int
    ) -> tuple[outbox_attempts.Applied | None, list[tuple[ClaimedDelivery, list[str]]]]:
        applied = self._record(session, results) if results else None
        if self._stopping.is_set():
            return applied, []
        now = utcnow()
        claimed = outbox_attempts.claim_due(
            session, worker_id=self.worker_id, max_deliveries=max_deliveries, lease_s=self.lease_s, now=now
        )
        # Each signer's secrets once per batch, in the claim's transaction.
        secrets = {
            signer: signing_secrets(session, signer, self.settings, now)
            for signer in {delivery.signed_by for delivery in claimed}
        }
        return applied, [(delivery, secrets[delivery.signed_by]) for delivery in claimed]

    def _start(self, delivery: ClaimedDelivery, secrets: list[str]) -> None:
        assert self._outbound is not None
        self._held += 1
        task = asyncio.create_task(self._send(self._outbound, delivery, secrets))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _idle(self, token: int) -> None:
        """Wait until a delivery may be due: a poke, or the earliest pending one's time."""
        while not self._stopping.is_set() and token == self._generation:
            try:
                due_at = await self.db.read(outbox_attempts.next_due_at)
            except Exception:
                logger.exception("could not look for due deliveries", extra={"worker_id": self.worker_id})
                due_at = None
            wait_s = POLL_S if due_at is None else min(POLL_S, (due_at - utcnow()).total_seconds())
            if wait_s <= 0:
                return
            self._poked.clear()
            if token != self._generation:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), wait_s)

    async def _send(self, outbound: OutboundSession, delivery: ClaimedDelivery, secrets: list[str]) -> None:
        started = utcnow()
        try:
            result = await self._attempt(outbound, delivery, secrets, started)
        except Exception as exc:  # a bug here must still close the attempt, not leave it to the lease
            logger.exception("delivery attempt failed", extra={"delivery_id": str(delivery.id)})
            result = _result(delivery, started, error=f"internal error: {type(exc).__name__}")
        self._results.append(result)
        self._result_ready.set()

    async def _attempt(
        self, outbound: OutboundSession, delivery: ClaimedDelivery, secrets: list[str], started: datetime
    ) -> AttemptResult:
        if not secrets:
            error = "no signing secret: set LEVQOR_WEBHOOK_SECRET, or submit with a managed API key"
            return _result(delivery, started, error=error)
        body = delivery.body.encode()
        headers = signed_headers(secrets, webhook_id=delivery.webhook_id, body=body, at=started)
        headers["levqor-delivery-id"] = str(delivery.id)
        headers["levqor-delivery-attempt"] = str(delivery.attempt)
        timeout_s = self.settings.callback_timeout_s
        try:
            response = await guarded_request(
                outbound,
                "POST",
                delivery.url,
                headers=headers,
                content=body,
                timeout_s=timeout_s,
                max_response_bytes=EXCERPT_BYTES,
            )
        except AddressRefused as exc:
            return _result(delivery, started, error=f"refused: {exc}")
        except TimeoutError:
            return _result(delivery, started, error=f"no answer within {timeout_s:g} s")
        except aiohttp.ClientError as exc:
            return _result(delivery, started, error=f"{type(exc).__name__}: {exc}")
        excerpt = response.body.decode("utf-8", errors="replace")[:EXCERPT_CHARS].replace("\x00", "\ufffd")
        return _result(delivery, started, status_code=response.status_code, excerpt=excerpt)

    # --- recording results ---------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._result_ready.wait()
            self._result_ready.clear()
            await self._flush()

    async def _flush(self) -> None:
        """Record the results in hand; the slots they free are refilled in the same transaction (under
        load, one commit per batch instead of one for the results and one for the next claim)."""
        while self._results:
            batch, self._results = self._results, []
            refill = self._free_slots() + len(batch)
            try:
                applied, _ = await self._claim_into(refill, batch)
            except Exception:
                logger.exception(
                    "could not record delivery attempts; retrying", extra={"attempts": len(batch)}
                )
                self._results[:0] = batch
                if self._stopping.is_set() and not self._tasks:
                    return  # stopping: what is not recorded is sent again when its lease ends
                await asyncio.sleep(DB_RETRY_S)
                continue
            self._held -= len(batch)
            self._slot_freed.set()
            assert applied is not None
            for url in applied.marked_failing:
                logger.warning(
                    "callback endpoint marked failing",
                    extra={"url": url, "failing_after_s": self.settings.callback_failing_after_s},
                )
            if applied.given_up:
                logger.info("deliveries given up", extra={"deliveries": len(applied.given_up)})

    def _record(self, session: Session, results: list[AttemptResult]) -> outbox_attempts.Applied:
        return outbox_attempts.record_attempts(
            session,
            results,
            worker_id=self.worker_id,
            retry_s=self.settings.callback_retry_s,
            failing_after_s=self.settings.callback_failing_after_s,
            now=utcnow(),
        )


def _result(
    delivery: ClaimedDelivery,
    started: datetime,
    *,
    status_code: int | None = None,
    excerpt: str | None = None,
    error: str | None = None,
) -> AttemptResult:
    return AttemptResult(
        delivery_id=delivery.id,
        attempt=delivery.attempt,
        url=delivery.url,
        started_at=started,
        finished_at=utcnow(),
        status_code=status_code,
        response_excerpt=excerpt,
        error=None if error is None else error[:MAX_ERROR_CHARS],
    )
