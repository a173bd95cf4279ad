"""Each bench's JSON (what its `--json PATH` writes) as the rows of bench/RESULTS.md.

One function per bench, reading the keys its README's "The JSON line" documents; the judging stays
in the bench (its `result`, `pass` or `met`), so the report shows the verdict the bench reached and
never judges a figure a second way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.report_document import Row, Section

KIND = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
HTTP_FIGURE = {
    "intake": "REST intake",
    "status": "status GET",
    "graphql_submit": "GraphQL submitJob",
    "budget_intake": "intake with a budget on the key",
    "key_intake": "intake with a managed key",
}
HTTP_REFERENCE = {
    "tutorial_intake": "tutorial stack's intake",
    "tutorial_status": "tutorial stack's status",
    "intake": "REST intake",
    "key_intake": "intake with a managed key, no budget",
}
QUEUE_REFERENCE = {"pgqueuer": "PgQueuer, PostgreSQL", "celery": "Celery, Redis", "rq": "RQ, Redis"}
BARE_ROUTE = {"bare_post": "POST", "bare_get": "GET"}
GROWTH_FIGURE = {
    "drain_jobs_per_s": ("drain", "jobs/s"),
    "claim_p50_ms": ("claim p50", "ms"),
    "claim_p99_ms": ("claim p99", "ms"),
    "intake_rps": ("intake", "req/s"),
    "status_rps": ("status GET", "req/s"),
}


def kind_of(key: str) -> tuple[str, str]:
    """`intake_sqlite` -> ("intake", "SQLite")."""
    name, _, kind = key.rpartition("_")
    return name, KIND.get(kind, kind)


def ratio_goal(goal: float, *, at_most: bool = False) -> str:
    return f"{'≤' if at_most else '≥'} {goal:g}x"


def http_rows(data: dict[str, Any], section: Section) -> None:
    for key, entry in data["targets"].items():
        name, kind = kind_of(key)
        goal = entry.get("goal")
        section.rows.append(
            Row(
                figure=f"{HTTP_FIGURE.get(name, name)}, {kind}",
                value=entry["rps"],
                unit="req/s",
                reference=f"{HTTP_REFERENCE.get(entry['reference'], entry['reference'])}, {kind}",
                reference_value=entry["reference_rps"],
                ratio=entry["ratio"],
                target=None if goal is None else ratio_goal(goal),
                met=entry["result"] == "pass",
            )
        )
    for key, entry in data.get("context", {}).items():
        pair, kind = kind_of(key)
        target, _, bare = pair.partition("/")
        section.rows.append(
            Row(
                figure=f"{target.replace('_', ' ')}, {kind}",
                value=entry["rps"],
                unit="req/s",
                reference=f"bare Starlette route ({BARE_ROUTE.get(bare, bare)}), {kind}",
                reference_value=entry["reference_rps"],
                ratio=entry["ratio"],
            )
        )
    non_2xx = data["non_2xx"]
    section.rows.append(
        Row(
            figure="answers of 400 or more, every server",
            value=sum(non_2xx["counts"].values()),
            unit="answers",
            target=f"= {non_2xx['goal']}",
            met=non_2xx["result"] == "pass",
        )
    )
    section.notes.append(
        f"CPU ratios and every round's figures are in the bench's JSON; rounds: {data['settings']['rounds']}"
    )
    for problem in data.get("problems", []):
        section.notes.append(f"problem: {problem}")


def queue_rows(data: dict[str, Any], section: Section) -> None:
    for target in data["targets"].values():
        if target is None:  # no PostgreSQL: no PgQueuer to measure against
            continue
        reference = target["reference"]
        label = QUEUE_REFERENCE.get(reference, reference)
        if reference in ("celery", "rq"):
            label += ", the faster of Celery and RQ"
        for kind, ratio in target["ratio"].items():
            section.rows.append(
                Row(
                    figure=f"Levqor drain, {KIND[kind]}",
                    value=data["levqor"][kind]["jobs_per_s"],
                    unit="jobs/s",
                    reference=label,
                    reference_value=data["peers"][reference]["jobs_per_s"],
                    ratio=ratio,
                    target=ratio_goal(target["goal"]),
                    met=target["pass"][kind],
                )
            )
    if "procrastinate" in data["peers"] and "postgres" in data["levqor"]:
        mine, theirs = data["levqor"]["postgres"]["jobs_per_s"], data["peers"]["procrastinate"]["jobs_per_s"]
        section.rows.append(
            Row(
                figure="Levqor drain, PostgreSQL",
                value=mine,
                unit="jobs/s",
                reference="procrastinate, PostgreSQL",
                reference_value=theirs,
                ratio=round(mine / theirs, 2) if theirs else None,
            )
        )
    runs = data.get("runs")
    if runs:
        for kind, ratio in runs["ratio"].items():
            section.rows.append(
                Row(
                    figure=f"a run of {runs['steps']} steps ({runs['shape']}), drain time, {KIND[kind]}",
                    value=runs["run"][kind]["drain_s"],
                    unit="s",
                    reference=f"{runs['steps']} plain jobs",
                    reference_value=runs["plain"][kind]["drain_s"],
                    ratio=ratio,
                    target=ratio_goal(runs["goal_at_most"], at_most=True),
                    met=runs["pass"][kind],
                )
            )
    for mode, cases in data["pickup_latency"].items():
        for kind, case in cases.items():
            section.rows.append(
                Row(
                    figure=f"pickup latency p50, {mode.replace('_', ' ')}, {KIND[kind]}",
                    value=case["p50_ms"],
                    unit="ms",
                    target=f"≤ {case['goal_p50_ms']:g} ms",
                    met=case["pass"],
                )
            )
    section.notes.append(
        f"{data['jobs']:,} jobs per drain, {data['worker_processes']} worker processes per system, "
        f"{data['rounds']} round(s); every job of every system succeeded once: "
        f"{'yes' if data['all_jobs_succeeded'] else '**no**'}"
    )


def growth_rows(data: dict[str, Any], section: Section) -> None:
    for kind, figures in data["figures"].items():
        for name, entry in figures.items():
            label, unit = GROWTH_FIGURE.get(name, (name, ""))
            section.rows.append(
                Row(
                    figure=f"{label} with {data['finished']:,} finished jobs, {KIND[kind]}",
                    value=entry["seeded"],
                    unit=unit,
                    reference="the same on empty tables",
                    reference_value=entry["empty"],
                    ratio=entry["ratio"],
                    target=ratio_goal(entry["goal"]),
                    met=entry["result"] == "pass",
                )
            )
    seeding = ", ".join(f"{KIND[kind]} {seeded['seconds']:g} s" for kind, seeded in data["seeding"].items())
    section.notes.append(
        f"ratios are seeded over empty for rates and empty over seeded for latencies (1.0 is flat); "
        f"{data['jobs']:,} jobs per drain, {data['rounds']} round(s); seeding took {seeding}"
    )
    if not data["all_drained_jobs_succeeded"]:
        section.notes.append("**not every drained job succeeded**")
    for problem in data.get("problems", []):
        section.notes.append(f"problem: {problem}")


def callbacks_rows(data: dict[str, Any], section: Section) -> None:
    for kind, targets in data["targets"].items():
        rate, latency = targets["deliveries_per_s"], targets["completion_to_arrival_p50_ms"]
        section.rows.append(
            Row(
                figure=f"signed callbacks delivered, {KIND[kind]}",
                value=rate["value"],
                unit="/s",
                target=f"≥ {rate['goal']:,.0f} /s",
                met=rate["met"],
            )
        )
        section.rows.append(
            Row(
                figure=f"completion to arrival p50, {KIND[kind]}",
                value=latency["value"],
                unit="ms",
                target=f"≤ {latency['goal']:g} ms",
                met=latency["met"],
            )
        )
    once = all(result["throughput"]["all_delivered_once"] for result in data["results"].values())
    section.notes.append(
        f"{data['processes']} sending process(es); every delivery arrived once: {'yes' if once else '**no**'}"
    )


def dashboard_rows(data: dict[str, Any], section: Section) -> None:
    """Each case's median against issue 14's target, a time of its own (so no reference and no
    ratio); a dashboard page's row comes right before its REST read's, as the bench prints them."""
    for kind, result in data["results"].items():
        for name, figure in result["figures"].items():
            target, met = f"< {figure['target_ms']:g} ms", figure["result"] == "pass"
            row = Row(f"{name} (median), {KIND[kind]}", figure["median_ms"], "ms", target=target, met=met)
            section.rows.append(row)
    seeding = ", ".join(f"{KIND[kind]} {result['seed_s']:g} s" for kind, result in data["results"].items())
    section.notes.append(
        f"{data['jobs']:,} jobs; {data['requests']} timed requests a case after {data['warmup']} "
        f"untimed, one at a time; each page is followed by the REST read it goes through; every "
        f"p95 is in the bench's JSON; seeding took {seeding}"
    )


def auth_limits_rows(data: dict[str, Any], section: Section) -> None:
    """Costs in microseconds per request; each ratio is the figure over its reference (what it
    costs on top, lower is cheaper). No goal: DESIGN.md judges these through the HTTP figures."""
    unit = "µs/request"

    def cost(figure: str, value: float, reference: str, reference_value: float) -> Row:
        ratio = round(value / reference_value, 2) if reference_value else None
        return Row(figure, value, unit, reference, reference_value, ratio)

    for key, auth in data.items():
        if key.startswith("authenticate_"):
            kind = KIND.get(key.removeprefix("authenticate_"), key)
            static = auth["static_key"]
            section.rows.append(
                cost(f"managed key look-up, {kind}", auth["managed_key"], "static key", static)
            )
            section.rows.append(
                cost(
                    f"managed key, 32 requests at once, {kind}",
                    auth["managed_key_32_at_once"],
                    "static key",
                    static,
                )
            )
    memory = data.get("rate_limit_memory")
    if memory:
        section.rows.append(
            cost(
                "rate limits, memory://",
                memory["hit"],
                "limits' own MemoryStorage",
                memory["limits_memory_storage"],
            )
        )
        redis = data.get("rate_limit_redis")
        if redis:
            section.rows.append(
                cost("rate limits, redis://", redis["hit"], "the same on memory://", memory["hit"])
            )
    section.notes.append(f"unit: {data['unit']}")


def inprocess_rows(data: dict[str, Any], section: Section) -> None:
    """CPU per request inside the app, no sockets: a figure to compare versions by, with no goal;
    GraphQL's submit is shown against REST intake, the pair DESIGN.md's HTTP target compares."""
    targets = data["targets"]
    for name, figures in targets.items():
        reference = targets.get("intake") if name == "graphql_submit" else None
        section.rows.append(
            Row(
                figure=f"{HTTP_FIGURE.get(name, name)}, CPU per request",
                value=figures["cpu_us_per_request"],
                unit="µs",
                reference=None if reference is None else "REST intake",
                reference_value=None if reference is None else reference["cpu_us_per_request"],
                # The reference's CPU over the figure's, as bench/http.py's `cpu_ratio`.
                ratio=None
                if reference is None
                else round(reference["cpu_us_per_request"] / figures["cpu_us_per_request"], 2),
            )
        )
    section.notes.append(
        f"{data['requests']:,} requests per target on {data['database']}, {data['concurrent']} at once"
    )


def http_clients_rows(data: dict[str, Any], section: Section) -> None:
    httpx, aiohttp = data["posts_per_s"]["httpx"], data["posts_per_s"]["aiohttp"]
    for level, rate in aiohttp.items():
        theirs = httpx.get(level)
        section.rows.append(
            Row(
                figure=f"aiohttp POSTs, {level} in flight",
                value=rate,
                unit="/s",
                reference="httpx, the same",
                reference_value=theirs,
                ratio=round(rate / theirs, 2) if theirs else None,
            )
        )
    section.notes.append("why callbacks go out on aiohttp (bench/README.md, bench/callbacks.py)")


ROWS_OF: dict[str, Callable[[dict[str, Any], Section], None]] = {
    "http": http_rows,
    "queue": queue_rows,
    "growth": growth_rows,
    "callbacks": callbacks_rows,
    "dashboard": dashboard_rows,
    "auth_limits": auth_limits_rows,
    "inprocess": inprocess_rows,
    "http_clients": http_clients_rows,
}
