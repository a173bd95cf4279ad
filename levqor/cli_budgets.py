"""`levqor budgets set|list|delete` and `levqor usage`: budgets and usage from the command line, as
the operator (every scope), over the same resolvers as /api/v1/budgets and /api/v1/usage.

Amounts are given in USD (`--limit-usd 12.5`) or in micro-dollars (`--limit-micros 12500000`), and
shown in both; `--json` prints what the REST routes answer, for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from levqor.cli_keys import run_as_operator
from levqor.db.models import BudgetPeriod, BudgetSubject
from levqor.resolvers import budgets, usage
from levqor.resolvers.usage import UsageGroup
from levqor.rest.budgets import BudgetBody, UsageBody

MICROS_PER_USD = Decimal(1_000_000)
# (the option's name, the budget field it sets, what it is)
AMOUNTS = (
    ("limit", "limit_micros", "the limit per period"),
    ("soft-limit", "soft_limit_micros", "the soft limit, which only alerts (once per period)"),
    ("max-job", "max_job_micros", "the most one job may be estimated at"),
)


def micros_of_usd(text: str) -> int:
    """USD as typed (`12.5`) in micro-dollars; a fraction of a micro-dollar is refused, not rounded."""
    try:
        amount = Decimal(text) * MICROS_PER_USD
    except InvalidOperation:
        sys.exit(f"levqor: {text!r} is not an amount of USD")
    if not amount.is_finite() or amount != amount.to_integral_value():
        sys.exit(f"levqor: {text!r} USD is not a whole number of micro-dollars")
    return int(amount)


def usd(micros: int | None) -> str:
    return "-" if micros is None else f"{Decimal(micros) / MICROS_PER_USD:f} USD"


def _subject(args: argparse.Namespace) -> tuple[str, str]:
    if args.key is not None:
        return BudgetSubject.KEY.value, args.key
    return BudgetSubject.USER.value, args.user


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def cmd_budgets_set(args: argparse.Namespace) -> int:
    data: dict[str, Any] = {"period": args.period}
    for option, field, _what in AMOUNTS:
        name = option.replace("-", "_")
        in_usd, in_micros = getattr(args, f"{name}_usd"), getattr(args, f"{name}_micros")
        if in_usd is not None:
            data[field] = micros_of_usd(in_usd)
        elif in_micros is not None:
            data[field] = in_micros
    kind, subject_id = _subject(args)
    view = run_as_operator(lambda ctx: budgets.set_budget(ctx, kind, subject_id, data))
    body = BudgetBody.from_view(view)
    if args.json:
        _print_json(body.model_dump(mode="json"))
    else:
        print(
            f"set the {body.period} budget of the {_whose(body)} {body.subject_id}: "
            f"{usd(body.limit_micros)} ({usd(body.remaining_micros)} left this period)",
            file=sys.stderr,
        )
    return 0


def _whose(body: BudgetBody) -> str:
    return "API key" if body.subject == BudgetSubject.KEY else "user"


def cmd_budgets_list(args: argparse.Namespace) -> int:
    rows = [BudgetBody.from_view(view) for view in run_as_operator(budgets.list_budgets)]
    if args.json:
        _print_json({"budgets": [row.model_dump(mode="json") for row in rows]})
        return 0
    if not rows:
        print("no budgets (set one with `levqor budgets set`)", file=sys.stderr)
        return 0
    header = ("SUBJECT", "ID", "PERIOD", "LIMIT", "SPENT", "RESERVED", "REMAINING", "SOFT LIMIT", "RESETS")
    table = [
        header,
        *[
            (
                row.subject,
                row.subject_id,
                row.period,
                usd(row.limit_micros),
                usd(row.spent_micros),
                usd(row.reserved_micros),
                usd(row.remaining_micros),
                usd(row.soft_limit_micros) + (" (crossed)" if row.soft_limit_crossed else ""),
                "never" if row.resets_at is None else row.resets_at.isoformat(timespec="seconds"),
            )
            for row in rows
        ],
    ]
    _print_table(table)
    return 0


def _print_table(table: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_budgets_delete(args: argparse.Namespace) -> int:
    kind, subject_id = _subject(args)
    view = run_as_operator(lambda ctx: budgets.delete_budget(ctx, kind, subject_id))
    body = BudgetBody.from_view(view)
    print(f"removed the {body.period} budget of the {_whose(body)} {body.subject_id}", file=sys.stderr)
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    query: dict[str, Any] = {"group_by": args.group_by}
    for name, value in (("from", args.from_), ("to", args.to), ("key_id", args.key), ("user_id", args.user)):
        if value is not None:
            query[name] = value
    body = UsageBody.from_report(run_as_operator(lambda ctx: usage.get_usage(ctx, query)))
    if args.json:
        _print_json(body.model_dump(mode="json", by_alias=True))
        return 0
    print(f"usage from {body.from_} to {body.to}, by {body.group_by}", file=sys.stderr)
    header = (
        body.group_by.upper(),
        "JOBS",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "SPENT",
        "RESERVED",
        "TOKENS",
    )
    table = [
        header,
        *[
            (
                row.group or "-",
                str(row.jobs),
                str(row.succeeded),
                str(row.failed),
                str(row.cancelled),
                usd(row.spent_micros),
                usd(row.reserved_micros),
                str(row.tokens),
            )
            for row in body.usage
        ],
    ]
    _print_table(table)
    return 0


def _add_subject(parser: argparse.ArgumentParser) -> None:
    whose = parser.add_mutually_exclusive_group(required=True)
    whose.add_argument("--key", metavar="ID", help="an API key's id (from `levqor keys list`)")
    whose.add_argument("--user", metavar="ID", help="a user's id")


def add_budgets_commands(commands: Any) -> None:
    """Register `budgets` and `usage` on the `levqor` command's subparsers."""
    parser = commands.add_parser(
        "budgets",
        help="set, list and remove the budgets of API keys and users",
        description="Spending limits per API key and per user (USD, kept as micro-dollars).",
    )
    actions = parser.add_subparsers(dest="budgets_command", required=True, metavar="ACTION")

    setting = actions.add_parser(
        "set",
        help="set a key's or a user's budget",
        description="Set the budget of an API key or a user, replacing the one it had; what was already "
        "spent in the period counts against the new limit. Give each amount in USD or micro-dollars.",
    )
    _add_subject(setting)
    setting.add_argument("--period", required=True, choices=[period.value for period in BudgetPeriod])
    for option, _field, what in AMOUNTS:
        amount = setting.add_mutually_exclusive_group(required=option == "limit")
        amount.add_argument(f"--{option}-usd", metavar="USD", help=f"{what}, in USD (e.g. 12.50)")
        amount.add_argument(f"--{option}-micros", metavar="N", type=int, help=f"{what}, in micro-dollars")
    setting.add_argument("--json", action="store_true", help="print the budget as JSON")
    setting.set_defaults(func=cmd_budgets_set)

    listing = actions.add_parser(
        "list",
        help="list budgets with this period's spending",
        description="List every budget with what it has spent, holds and has left this period.",
    )
    listing.add_argument("--json", action="store_true", help="print as GET /api/v1/budgets answers")
    listing.set_defaults(func=cmd_budgets_list)

    delete = actions.add_parser(
        "delete", help="remove a budget", description="Remove a key's or a user's budget."
    )
    _add_subject(delete)
    delete.set_defaults(func=cmd_budgets_delete)

    report = commands.add_parser(
        "usage",
        help="jobs, spend and tokens by day, workflow, key or user",
        description="Usage from --from to --to (UTC days, both included; the last 30 days by default), "
        "each job counted on the day it was submitted.",
    )
    report.add_argument("--from", dest="from_", metavar="YYYY-MM-DD", help="the first day")
    report.add_argument("--to", metavar="YYYY-MM-DD", help="the last day (default: today)")
    report.add_argument(
        "--group-by", default=UsageGroup.DAY.value, choices=[group.value for group in UsageGroup]
    )
    report.add_argument("--key", metavar="ID", help="only the jobs of this API key")
    report.add_argument("--user", metavar="ID", help="only the jobs of this user")
    report.add_argument("--json", action="store_true", help="print as GET /api/v1/usage answers")
    report.set_defaults(func=cmd_usage)
