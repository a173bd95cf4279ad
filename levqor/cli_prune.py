"""`levqor prune [--dry-run] [--older-than-days N]`: delete finished jobs older than the retention
setting now, as `levqor serve` and `levqor worker` do every LEVQOR_PRUNE_INTERVAL_S
(levqor/queue/retention.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from levqor.config import ConfigError, Settings
from levqor.db.engine import Database
from levqor.db.types import utcnow
from levqor.queue.retention import Pruned, prune, retention_cutoff


def summary(pruned: Pruned) -> str:
    return (
        f"jobs {pruned.jobs}, events {pruned.events}, deliveries {pruned.deliveries}, "
        f"attempts {pruned.attempts}, runs {pruned.runs}, run events {pruned.run_events}, "
        f"run edges {pruned.run_edges}"
    )


def cmd_prune(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"levqor: {exc}")
    days = settings.retention_days if args.older_than_days is None else args.older_than_days
    if days < 1:
        if args.older_than_days is not None:
            sys.exit("levqor: --older-than-days must be at least 1")
        sys.exit("levqor: LEVQOR_RETENTION_DAYS is 0 (keep every job); pass --older-than-days N to prune")
    cutoff = retention_cutoff(days, utcnow())
    assert cutoff is not None
    db = Database(settings.db_url, pool_size=1)
    try:
        pruned = asyncio.run(prune(db, cutoff, dry_run=args.dry_run))
    finally:
        db.dispose()
    when = cutoff.isoformat(timespec="seconds").replace("+00:00", "Z")
    print(f"finished before {when} ({days} days ago)")
    if args.dry_run:
        print(f"would delete: {summary(pruned)}")
    else:
        print(f"deleted: {summary(pruned)} (in {pruned.batches} batches)")
    return 0


def add_prune_command(commands: Any) -> None:
    parser = commands.add_parser(
        "prune",
        help="delete finished jobs older than the retention setting",
        description="Delete the jobs that finished (succeeded, failed, cancelled) more than "
        "LEVQOR_RETENTION_DAYS days ago, with their events and callback deliveries, in small batches. "
        "A run's steps go only with the whole run, once it has finished; a job whose callback is still "
        "pending stays until the delivery is final; the budgets' ledger is kept. Prints the counts.",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be deleted, and delete nothing"
    )
    parser.add_argument(
        "--older-than-days",
        type=int,
        metavar="N",
        help="prune what finished more than N days ago (default: LEVQOR_RETENTION_DAYS)",
    )
    parser.set_defaults(func=cmd_prune)
