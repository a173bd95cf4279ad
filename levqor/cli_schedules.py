"""`levqor schedules create|list|get|pause|resume|run|delete`: schedules from the command line, as the
operator (every scope), over the same resolvers as /api/v1/schedules. `--json` prints what the REST
routes answer, for scripts."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from levqor.cli_keys import run_as_operator
from levqor.db.models import MissedFire
from levqor.resolvers import schedules
from levqor.resolvers.context import Context
from levqor.resolvers.jobs import MAX_LIST_LIMIT
from levqor.resolvers.schedules import ScheduleView
from levqor.rest.schedules import ScheduleBody, ScheduleFireBody


def _print(body: ScheduleBody, as_json: bool) -> None:
    if as_json:
        print(json.dumps(body.model_dump(mode="json"), indent=2))
        return
    cadence = f"cron '{body.cron}' ({body.timezone})" if body.cron else f"every {body.every_s} s"
    state = "enabled" if body.enabled else "paused"
    print(f"{body.id}  {body.name}  {cadence}  {body.job['workflow']}  {state}  on missed: {body.on_missed}")
    for tick in body.next_fire_times:
        print(f"  next: {tick.isoformat()}")
    for fire in body.fires:
        outcome = (
            f"job {fire.job_id}" if fire.job_id else f"refused: {fire.error.message if fire.error else ''}"
        )
        print(f"  fired {fire.kind} for {fire.fire_time.isoformat()}: {outcome}")


def cmd_create(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        sys.exit(f"levqor: --payload is not JSON: {exc.msg}")
    job: dict[str, Any] = {"workflow": args.workflow, "payload": payload, "priority": args.priority}
    if args.callback_url:
        job["callback_url"] = args.callback_url
    if args.budget_policy:
        job["budget_policy"] = args.budget_policy
    data: dict[str, Any] = {
        "name": args.name,
        "job": job,
        "on_missed": args.on_missed,
        "timezone": args.timezone,
    }
    if args.cron is not None:
        data["cron"] = args.cron
    else:
        data["every_s"] = args.every
    if args.paused:
        data["enabled"] = False
    view = run_as_operator(lambda ctx: schedules.create_schedule(ctx, data))
    _print(ScheduleBody.from_view(view), args.json)
    return 0


async def _every_schedule(ctx: Context) -> list[ScheduleView]:
    """Page after page, as `levqor keys list` and `budgets list` show everything."""
    views: list[ScheduleView] = []
    query: dict[str, Any] = {"limit": MAX_LIST_LIMIT}
    while True:
        page = await schedules.list_schedules(ctx, query)
        views.extend(page.schedules)
        if page.next_cursor is None:
            return views
        query["cursor"] = page.next_cursor


def cmd_list(args: argparse.Namespace) -> int:
    bodies = [ScheduleBody.from_view(view) for view in run_as_operator(_every_schedule)]
    if args.json:
        print(json.dumps({"schedules": [body.model_dump(mode="json") for body in bodies]}, indent=2))
    elif not bodies:
        print("no schedules (create one with `levqor schedules create`)", file=sys.stderr)
    for body in [] if args.json else bodies:
        _print(body, False)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    _print(
        ScheduleBody.from_view(run_as_operator(lambda ctx: schedules.get_schedule(ctx, args.id))), args.json
    )
    return 0


def _set_enabled(enabled: bool) -> Any:
    def command(args: argparse.Namespace) -> int:
        view = run_as_operator(lambda ctx: schedules.update_schedule(ctx, args.id, {"enabled": enabled}))
        _print(ScheduleBody.from_view(view), args.json)
        return 0

    return command


def cmd_run(args: argparse.Namespace) -> int:
    ran = run_as_operator(lambda ctx: schedules.run_schedule(ctx, args.id))
    fire = ScheduleFireBody.from_row(ran.fire)
    if args.json:
        print(json.dumps(fire.model_dump(mode="json"), indent=2))
    else:
        print(fire.job_id)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    view = run_as_operator(lambda ctx: schedules.delete_schedule(ctx, args.id))
    print(f"removed the schedule {view.schedule.id} ({view.schedule.name})", file=sys.stderr)
    return 0


def add_schedules_command(commands: Any) -> None:
    parser = commands.add_parser(
        "schedules",
        help="create, list, pause, resume, run and remove schedules",
        description="Jobs submitted on a cron expression (in a time zone) or every N seconds.",
    )
    actions = parser.add_subparsers(dest="schedules_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a schedule", description="Create a schedule.")
    create.add_argument("--name", required=True)
    cadence = create.add_mutually_exclusive_group(required=True)
    cadence.add_argument("--cron", metavar="EXPR", help="five fields, e.g. '0 9 * * MON-FRI'")
    cadence.add_argument("--every", metavar="SECONDS", type=int, help="seconds between fires")
    create.add_argument("--timezone", default="UTC", help="the IANA zone the cron is read in (default: UTC)")
    create.add_argument("--workflow", required=True)
    create.add_argument("--payload", default="{}", help="the job's payload, as JSON (default: {})")
    create.add_argument("--priority", default="normal", choices=["low", "normal", "high"])
    create.add_argument("--callback-url")
    create.add_argument("--budget-policy", choices=["reject", "defer"])
    create.add_argument(
        "--on-missed", default=MissedFire.SKIP.value, choices=[kind.value for kind in MissedFire]
    )
    create.add_argument("--paused", action="store_true", help="create it paused")
    create.set_defaults(func=cmd_create)

    listing = actions.add_parser("list", help="list schedules", description="List every schedule.")
    listing.set_defaults(func=cmd_list)
    for name, func, what in (
        ("get", cmd_get, "show a schedule, its next fire times and latest fires"),
        ("pause", _set_enabled(False), "pause a schedule"),
        ("resume", _set_enabled(True), "resume a schedule from its next tick"),
        ("run", cmd_run, "fire a schedule now and print its job's id"),
        ("delete", cmd_delete, "remove a schedule"),
    ):
        action = actions.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        action.add_argument("id", help="the schedule's id")
        action.set_defaults(func=func)
    for action in (create, listing, *(actions.choices[name] for name in ("get", "pause", "resume", "run"))):
        action.add_argument("--json", action="store_true", help="print as the REST routes answer")
