"""`levqor keys create|list|update|revoke|rotate-webhook-secret`: managed API keys from the command line.

This is how a fresh install gets its first admin key: the command line runs as the operator, with
every scope, over the same resolvers as the admin routes. Secrets go to stdout and nothing else
does (the rest goes to stderr), one a line: `create` prints the key's secret, then its webhook
secret, so `{ read -r KEY; read -r WEBHOOK_SECRET; } < <(levqor keys create ...)` works in
scripts; `rotate-webhook-secret` prints the new webhook secret alone.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from levqor.config import DEFAULT_WEBHOOK_OVERLAP_S, ConfigError, Settings
from levqor.db.engine import Database
from levqor.db.models import ApiKey
from levqor.db.types import utcnow
from levqor.errors import LevqorError
from levqor.resolvers import keys
from levqor.resolvers.context import Context, Principal, Scope

T = TypeVar("T")

# The operator at the console: may do everything, and is named as such wherever a principal shows.
CLI_PRINCIPAL = Principal(id="cli", scopes=Scope.ALL)


def run_as_operator(call: Callable[[Context], Coroutine[Any, Any, T]]) -> T:
    """Run one resolver call as the console's operator, on the configured database (migrated first)."""
    from levqor.db.migrate import upgrade

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"levqor: {exc}")
    db = Database(settings.db_url, pool_size=1)
    try:
        upgrade(db.engine)  # a fresh install makes its first key before it first serves
        return asyncio.run(call(Context(db=db, settings=settings, principal=CLI_PRINCIPAL)))
    except LevqorError as exc:
        sys.exit(f"levqor: {exc.message}")
    finally:
        db.dispose()


def _state(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if not keys.key_is_active(key, utcnow()):
        return "expired"
    return "active"


def _when(value: Any) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def _webhook_state(key: ApiKey) -> str:
    if key.webhook_secret is None:
        return "none"
    previous_until = keys.key_previous_signs_until(key)
    return "set" if previous_until is None else f"set+previous until {_when(previous_until)}"


def cmd_keys_create(args: argparse.Namespace) -> int:
    scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
    data: dict[str, Any] = {"name": args.name, "scopes": scopes}
    if args.expires_at:
        data["expires_at"] = args.expires_at
    if args.rate_limit is not None:
        data["rate_limit"] = args.rate_limit
    if args.max_running is not None:
        data["max_running"] = args.max_running
    created = run_as_operator(lambda ctx: keys.create_api_key(ctx, data))
    key = created.key
    print(
        f"created API key {key.id} ({key.name}; scopes {', '.join(key.scopes)}; "
        f"expires {_when(key.expires_at) if key.expires_at else 'never'}).\n"
        "Its secret follows, then its webhook secret (which signs its jobs' callbacks); "
        "they are shown this once and cannot be recovered:",
        file=sys.stderr,
    )
    print(created.secret)
    print(created.webhook_secret)
    return 0


def cmd_keys_list(_args: argparse.Namespace) -> int:
    rows = run_as_operator(keys.list_api_keys)
    if not rows:
        print("no managed API keys (create one with `levqor keys create`)", file=sys.stderr)
        return 0
    header = (
        "ID",
        "PREFIX",
        "STATE",
        "SCOPES",
        "RATE LIMIT",
        "MAX RUNNING",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "WEBHOOK SECRET",
        "NAME",
    )
    table = [header] + [
        (
            str(key.id),
            key.prefix,
            _state(key),
            ",".join(key.scopes),
            "-" if key.rate_limit is None else f"{key.rate_limit}/min",
            "-" if key.max_running is None else str(key.max_running),
            _when(key.created_at),
            _when(key.expires_at),
            _when(key.last_used_at),
            _webhook_state(key),
            key.name,
        )
        for key in rows
    ]
    widths = [max(len(row[column]) for row in table) for column in range(len(header) - 1)]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


LIFT = "none"  # `--max-running none`: lift the limit


def _limit(text: str) -> int | str | None:
    """A limit's value on the command line: a whole number, or `none` to lift it. Anything else is
    passed on as it is, for the resolver to refuse with the API's own message."""
    if text.strip().lower() == LIFT:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _limits_line(key: ApiKey) -> str:
    rate = "the server's per-key rate" if key.rate_limit is None else f"{key.rate_limit} requests/min"
    running = "no concurrency limit" if key.max_running is None else f"at most {key.max_running} running"
    return f"{rate}, {running}"


def cmd_keys_update(args: argparse.Namespace) -> int:
    data: dict[str, Any] = {}
    if args.rate_limit is not _UNSET:
        data["rate_limit"] = args.rate_limit
    if args.max_running is not _UNSET:
        data["max_running"] = args.max_running
    key = run_as_operator(lambda ctx: keys.update_api_key(ctx, args.id, data))
    print(f"updated API key {key.id} ({key.name}): {_limits_line(key)}", file=sys.stderr)
    return 0


_UNSET: Any = object()


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    key = run_as_operator(lambda ctx: keys.revoke_api_key(ctx, args.id))
    print(f"revoked API key {key.id} ({key.name}) at {_when(key.revoked_at)}", file=sys.stderr)
    return 0


def cmd_keys_rotate_webhook_secret(args: argparse.Namespace) -> int:
    data: dict[str, Any] = {} if args.overlap_s is None else {"overlap_s": args.overlap_s}
    rotated = run_as_operator(lambda ctx: keys.rotate_webhook_secret(ctx, args.id, data))
    key = rotated.key
    previous_until = keys.key_previous_signs_until(key)
    overlap = (
        "the previous one no longer signs"
        if previous_until is None
        else f"the previous one still signs too until {_when(previous_until)}"
    )
    print(
        f"rotated the webhook secret of API key {key.id} ({key.name}); {overlap}.\n"
        "The new webhook secret follows; it is shown this once:",
        file=sys.stderr,
    )
    print(rotated.webhook_secret)
    return 0


def add_keys_command(commands: Any) -> None:
    """Register `keys` on the `levqor` command's subparsers."""
    parser = commands.add_parser(
        "keys",
        help="create, list and revoke API keys; rotate their webhook secrets",
        description="Manage API keys in the database (the first admin key is made here).",
    )
    actions = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", help="create a key and print its secret once", description="Create an API key."
    )
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument(
        "--scopes",
        required=True,
        help=f"comma-separated, from: {', '.join(sorted(Scope.ALL))}",
    )
    create.add_argument("--expires-at", help="ISO-8601 time (UTC unless it has an offset)")
    create.add_argument(
        "--rate-limit", type=int, help="requests per minute for this key (default: LEVQOR_RATE_KEY)"
    )
    create.add_argument(
        "--max-running", type=int, help="jobs of this key that may run at once (default: no limit)"
    )
    create.set_defaults(func=cmd_keys_create)

    listing = actions.add_parser("list", help="list keys (never their secrets)", description="List API keys.")
    listing.set_defaults(func=cmd_keys_list)

    update = actions.add_parser(
        "update",
        help="set or lift a key's rate limit and concurrency limit",
        description="Set or lift an API key's limits; they hold from its next request and the next "
        f"claim. `{LIFT}` lifts one; a limit not named is kept.",
    )
    update.add_argument("id", help="the key's id (from `levqor keys list`)")
    update.add_argument(
        "--rate-limit",
        type=_limit,
        default=_UNSET,
        metavar="N|none",
        help="requests per minute for this key (none: LEVQOR_RATE_KEY)",
    )
    update.add_argument(
        "--max-running",
        type=_limit,
        default=_UNSET,
        metavar="N|none",
        help="jobs of this key that may run at once (none: no limit)",
    )
    update.set_defaults(func=cmd_keys_update)

    revoke = actions.add_parser(
        "revoke", help="revoke a key at once", description="Revoke an API key in every server process."
    )
    revoke.add_argument("id", help="the key's id (from `levqor keys list`)")
    revoke.set_defaults(func=cmd_keys_revoke)

    rotate = actions.add_parser(
        "rotate-webhook-secret",
        help="give a key a new webhook secret and print it once",
        description="Give an API key a new webhook secret; the previous one still signs its jobs' "
        "callbacks too for the overlap, so receivers can switch without missing one.",
    )
    rotate.add_argument("id", help="the key's id (from `levqor keys list`)")
    rotate.add_argument(
        "--overlap-s",
        type=int,
        help=f"seconds the previous secret still signs, 0 to {keys.MAX_WEBHOOK_OVERLAP_S} "
        f"(default {DEFAULT_WEBHOOK_OVERLAP_S}; 0 ends it at once)",
    )
    rotate.set_defaults(func=cmd_keys_rotate_webhook_secret)
