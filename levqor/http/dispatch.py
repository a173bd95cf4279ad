"""Direct dispatch: the routes the gateway calls without Starlette's router, from a table built once.

Starlette's router tries each route's regex in turn on every request, then wraps the endpoint in two
more layers that catch exceptions and wrap `send`. The table answers the same for the requests it
takes: exact paths by a dict look-up, parametrised ones by one regex of all their templates. A route
goes in the table for a method only when no route before it could match the same path and method, so
the route found is always the one Starlette's first-match rule picks. Whatever the table does not
take (unknown paths, wrong methods, HEAD, trailing slashes, mounts, sync endpoints) goes to Starlette.
A function endpoint is called itself, not its route's `app`: routes here carry no route middleware.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
ExceptionHandlers = Mapping[Any, Callable[[Request, Exception], Any]]
# A route's path as segments: a literal, or None for a parameter; True when a tail may follow
# (a mount, a `{name:path}` parameter), False when the path ends there.
Shape = tuple[tuple[str | None, ...], bool]

_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>")


class Progress(Protocol):
    """What dispatch needs to know of the exchange: whether the answer has begun."""

    response_started: bool


@dataclass(frozen=True, slots=True)
class Target:
    route: Route
    endpoint: Endpoint | None  # a `request -> response` function; None for an ASGI endpoint


class RouteTable:
    """Which route serves a path and method, when the table can tell without Starlette's router."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.exact: dict[str, dict[str, Target]] = {}
        templates: dict[str, dict[str, Target]] = {}
        for index, route in enumerate(routes):
            if not isinstance(route, Route) or not route.methods:
                continue
            target = Target(route, _request_endpoint(route))
            if target.endpoint is None and not _is_asgi_endpoint(route):
                continue  # a sync endpoint: Starlette runs it in a thread
            for method in route.methods - {"HEAD"}:  # HEAD answers stay Starlette's
                if any(_may_match(earlier, route, method) for earlier in routes[:index]):
                    continue
                table = self.exact if not route.param_convertors else templates
                table.setdefault(route.path, {})[method] = target
        self._templates = list(templates.values())
        # One regex for every template, in route order: `lastgroup` names the one that matched, and
        # its parameters are captured as `t<number>_<name>`.
        alternatives = (
            f"(?P<t{number}>{_alternative(next(iter(methods.values())).route, number)})"
            for number, methods in enumerate(self._templates)
        )
        self._template_regex = re.compile("^(?:" + "|".join(alternatives) + ")$") if templates else None

    def find(self, scope: Scope) -> tuple[Target, dict[str, Any]] | None:
        """The route for the request and its path parameters; None when Starlette must decide."""
        path = get_route_path(scope)
        method = scope["method"]
        methods = self.exact.get(path)
        if methods is not None:
            target = methods.get(method)
            if target is not None:
                return target, {}
        if self._template_regex is None:
            return None
        match = self._template_regex.match(path)
        if match is None or match.lastgroup is None:
            return None
        number = match.lastgroup[1:]
        target = self._templates[int(number)].get(method)
        if target is None:
            return None
        # The alternative is the route's own regex, so its captures are the ones Starlette's match
        # of that regex makes; converted by the route's own convertors.
        prefix = f"t{number}_"
        path_params = {
            name: convertor.convert(match.group(prefix + name))
            for name, convertor in target.route.param_convertors.items()
        }
        return target, path_params


async def dispatch(
    target: Target,
    path_params: dict[str, Any],
    router: Router,
    handlers: ExceptionHandlers,
    progress: Progress,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Call the route as Starlette's router would, with its exceptions mapped by the same handlers
    as Starlette's `ExceptionMiddleware`."""
    route = target.route
    scope["router"] = router
    scope["route"] = route
    scope["endpoint"] = route.endpoint
    scope["path_params"] = path_params
    request: Request | None = None
    try:
        if target.endpoint is None:
            await route.app(scope, receive, send)
        else:
            request = Request(scope, receive, send)
            response = await target.endpoint(request)
            await response(scope, receive, send)
    except Exception as exc:
        handler = _handler_for(handlers, exc)
        if handler is None:
            raise
        if progress.response_started:
            raise RuntimeError("Caught handled exception, but response already started.") from exc
        # The handlers are cheap and never block: called here, not in a thread as Starlette would.
        answer = handler(request or Request(scope, receive, send), exc)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is not None:
            await answer(scope, receive, send)
        exc.__traceback__ = None  # reused exception instances would gather tracebacks


def _handler_for(handlers: ExceptionHandlers, exc: Exception) -> Callable[..., Any] | None:
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None


def _unwrapped(endpoint: Any) -> Any:
    while isinstance(endpoint, functools.partial):
        endpoint = endpoint.func
    return endpoint


def _request_endpoint(route: Route) -> Endpoint | None:
    """The endpoint when Starlette calls it as `request -> response` (an async function)."""
    handler = _unwrapped(route.endpoint)
    if (inspect.isfunction(handler) or inspect.ismethod(handler)) and inspect.iscoroutinefunction(handler):
        endpoint: Endpoint = route.endpoint
        return endpoint
    return None


def _is_asgi_endpoint(route: Route) -> bool:
    handler = _unwrapped(route.endpoint)
    return not (inspect.isfunction(handler) or inspect.ismethod(handler))


def _alternative(route: Route, number: int) -> str:
    """The route's regex without anchors, its groups renamed `t<number>_<name>`, for one alternative
    of the table's regex."""
    pattern = route.path_regex.pattern.removeprefix("^").removesuffix("$")
    return _NAMED_GROUP.sub(lambda group: f"(?P<t{number}_{group[1]}>", pattern)


def _may_match(earlier: BaseRoute, route: Route, method: str) -> bool:
    """Whether `earlier` could match a request for `route` with `method` (erring towards yes)."""
    if isinstance(earlier, WebSocketRoute):
        return False
    if isinstance(earlier, Route) and earlier.methods and method not in earlier.methods:
        return False
    shape = _shape(earlier)
    return shape is None or _overlap(shape, _shape(route) or ((), True))


def _shape(route: BaseRoute) -> Shape | None:
    if isinstance(route, Mount):
        path = route.path + "/{path:path}"
    elif isinstance(route, Route | WebSocketRoute):
        path = route.path
    else:
        return None  # a host route or another kind: assume it may match anything
    segments: list[str | None] = []
    for segment in path.split("/")[1:]:
        if ":path}" in segment:
            return (*segments, None), True
        segments.append(None if "{" in segment else segment)
    return tuple(segments), False


def _overlap(a: Shape, b: Shape) -> bool:
    (segments_a, tail_a), (segments_b, tail_b) = a, b
    for x, y in zip(segments_a, segments_b, strict=False):
        if x is not None and y is not None and x != y:
            return False
    if len(segments_a) == len(segments_b):
        return True
    return tail_a if len(segments_a) < len(segments_b) else tail_b
