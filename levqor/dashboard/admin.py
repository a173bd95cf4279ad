"""The dashboard's pages for admins: API keys (create shows the secret once, revoke asks first),
budgets (set, remove), the audit log of both, and spend against the budgets."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from levqor.dashboard.pages import PREFIX, dashboard_page, field, page_context, read_form, render
from levqor.db.models import BudgetPeriod
from levqor.db.types import utcnow
from levqor.errors import InvalidRequest, NotFound
from levqor.resolvers import audit, budgets, keys, usage
from levqor.resolvers.context import Scope

MICROS_PER_DOLLAR = 1_000_000
SPEND_GROUPS = ("day", "workflow", "key", "user")


def _micros(fields: dict[str, list[str]], name: str, *, required: bool) -> int | None:
    """Dollars as typed (`12.50`) in micro-dollars, as the budget resolver takes them."""
    text = field(fields, name).removeprefix("$").replace(",", "")
    if not text:
        if required:
            raise InvalidRequest.for_field(name, "enter an amount in dollars, e.g. 25 or 12.50")
        return None
    try:
        dollars = Decimal(text)
    except InvalidOperation:
        raise InvalidRequest.for_field(name, "must be an amount in dollars, e.g. 25 or 12.50") from None
    if not dollars.is_finite() or dollars.as_tuple().exponent < -6:  # type: ignore[operator]
        raise InvalidRequest.for_field(name, "must be an amount in dollars with at most 6 decimals")
    micros = dollars * MICROS_PER_DOLLAR
    if abs(micros) > budgets.MAX_MICROS:
        raise InvalidRequest.for_field(name, "is larger than any budget may be")
    return int(micros)


@dashboard_page
async def keys_page(request: Request) -> Response:
    ctx = page_context(request)
    return render(
        request,
        "keys.html",
        section="keys",
        keys=await keys.list_api_keys(ctx),
        budgets=await budgets.list_budgets(ctx),
        audit=await audit.list_audit(ctx),
        scopes=sorted(Scope.ALL),
        periods=[period.value for period in BudgetPeriod],
        now=utcnow(),
    )


@dashboard_page
async def create_key(request: Request) -> Response:
    fields = await read_form(request)
    data: dict[str, Any] = {"name": field(fields, "name"), "scopes": fields.get("scope", [])}
    created = await keys.create_api_key(page_context(request), data)
    return render(request, "key_created.html", section="keys", created=created)


@dashboard_page
async def revoke_key(request: Request) -> Response:
    fields = await read_form(request)
    ctx = page_context(request)
    key_id = request.path_params["key_id"]
    if field(fields, "confirmed") != "yes":
        found = [key for key in await keys.list_api_keys(ctx) if str(key.id) == key_id]
        if not found:
            raise NotFound(f"no API key with id '{key_id[:64]}'")
        return render(request, "key_revoke.html", section="keys", key=found[0])
    await keys.revoke_api_key(ctx, key_id)
    return RedirectResponse(f"{PREFIX}/keys", status_code=303)


@dashboard_page
async def set_budget(request: Request) -> Response:
    fields = await read_form(request)
    data: dict[str, Any] = {
        "period": field(fields, "period"),
        "limit_micros": _micros(fields, "limit", required=True),
    }
    soft = _micros(fields, "soft_limit", required=False)
    if soft is not None:
        data["soft_limit_micros"] = soft
    await budgets.set_budget(page_context(request), field(fields, "kind"), field(fields, "subject_id"), data)
    return RedirectResponse(f"{PREFIX}/keys#budgets", status_code=303)


@dashboard_page
async def delete_budget(request: Request) -> Response:
    await read_form(request)
    params = request.path_params
    await budgets.delete_budget(page_context(request), params["kind"], params["subject_id"])
    return RedirectResponse(f"{PREFIX}/keys#budgets", status_code=303)


@dashboard_page
async def spend_page(request: Request) -> Response:
    """Usage grouped by day, workflow, key and user over the chosen days, beside every budget."""
    ctx = page_context(request)
    window = {name: value for name in ("from", "to") if (value := request.query_params.get(name, "").strip())}
    reports = {group: await usage.get_usage(ctx, {**window, "group_by": group}) for group in SPEND_GROUPS}
    return render(
        request,
        "spend.html",
        section="spend",
        reports=reports,
        budgets=await budgets.list_budgets(ctx),
        window=window,
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/keys", keys_page, methods=["GET"]),
        Route("/keys", create_key, methods=["POST"]),
        Route("/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
        Route("/budgets", set_budget, methods=["POST"]),
        Route("/budgets/{kind}/{subject_id}/delete", delete_budget, methods=["POST"]),
        Route("/spend", spend_page, methods=["GET"]),
    ]
