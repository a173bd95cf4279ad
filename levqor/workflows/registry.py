"""Named workflows: each a payload JSON Schema, limits, a cost model, (usually) a handler and, when it
declares one, a result JSON Schema that every attempt's result must fit, whoever ran it.

The registry holds the built-ins plus the workflows of the modules in `LEVQOR_WORKFLOWS`. A module
offers workflows as a `WORKFLOWS` sequence, or as module attributes made with the `@workflow`
decorator. A workflow without a handler is served only by remote workers (in any language, over
the worker API); intake still validates its payloads.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from levqor.config import ConfigError, Settings
from levqor.costs.prices import DEFAULT_PRICES, ModelPrice, price_table
from levqor.errors import InvalidRequest

if TYPE_CHECKING:
    from levqor.workflows.context import JobRunContext

Handler = Callable[[dict[str, Any], "JobRunContext"], Awaitable[dict[str, Any]]]

DEFAULT_TIMEOUT_S = 300
DEFAULT_MAX_ATTEMPTS = 3
MAX_REPORTED_ERRORS = 10
# A message quotes the failing value, which may be a whole large string; a result's errors are stored.
MAX_REPORTED_MESSAGE_CHARS = 500


class CostModel(Protocol):
    """Estimates a run's cost in USD micro-dollars from its payload, before it runs (None: unknown)."""

    def estimate(self, payload: Mapping[str, Any]) -> int | None: ...


@dataclass(frozen=True)
class Workflow:
    name: str
    description: str = ""
    payload_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    timeout_s: int = DEFAULT_TIMEOUT_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    cost_model: CostModel | None = None
    handler: Handler | None = None
    # None: any JSON object is a result. A result that does not fit fails its attempt, retried only
    # when `result_invalid_retryable` (a model's answer may fit next time; a bug's will not).
    result_schema: dict[str, Any] | None = None
    result_invalid_retryable: bool = False
    # How many of its jobs may run at once, across every worker (None: no limit);
    # LEVQOR_WORKFLOW_MAX_RUNNING overrides it.
    max_running: int | None = None
    _validator: Draft202012Validator = field(init=False, repr=False, compare=False)
    _result_validator: Draft202012Validator | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once; validating a payload or a result is then only the walk over it.
        object.__setattr__(self, "_validator", self._compiled("payload", self.payload_schema))
        result_validator = (
            None if self.result_schema is None else self._compiled("result", self.result_schema)
        )
        object.__setattr__(self, "_result_validator", result_validator)

    def _compiled(self, what: str, schema: dict[str, Any]) -> Draft202012Validator:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ConfigError(f"workflow {self.name!r} has an invalid {what} schema: {exc.message}") from None
        return Draft202012Validator(schema)

    @property
    def remote_only(self) -> bool:
        return self.handler is None

    def _summary(self, details: list[dict[str, Any]]) -> str:
        first = details[0]
        return f"{first['field']}: {first['message']} (workflow '{self.name}')"

    def validate(self, payload: Any) -> None:
        """Raise `InvalidRequest` naming each failing path (`payload.a.0`) of `payload`."""
        details = _schema_errors(self._validator, payload, "payload")
        if details:
            raise InvalidRequest(self._summary(details), details=details)

    def result_errors(self, result: Any) -> list[dict[str, Any]]:
        """Each way `result` misfits the result schema, as `validate` reports a payload's
        (`result.a.0`, message, `schema.<keyword>`); empty when it fits or there is no schema."""
        if self._result_validator is None:
            return []
        return _schema_errors(self._result_validator, result, "result")

    def invalid_result(self, result: Any) -> dict[str, Any] | None:
        """The attempt's error when `result` does not fit the result schema, None when it does; the
        one check for results run here and results remote workers report."""
        details = self.result_errors(result)
        if not details:
            return None
        return {"type": "invalid_result", "message": self._summary(details), "errors": details}

    @property
    def cost_model_name(self) -> str | None:
        return None if self.cost_model is None else type(self.cost_model).__name__

    def estimate_cost(self, payload: Mapping[str, Any]) -> int | None:
        return None if self.cost_model is None else self.cost_model.estimate(payload)


def _shortened(message: str) -> str:
    if len(message) <= MAX_REPORTED_MESSAGE_CHARS:
        return message
    return message[: MAX_REPORTED_MESSAGE_CHARS - 1] + "…"


def _schema_errors(validator: Draft202012Validator, value: Any, root: str) -> list[dict[str, Any]]:
    errors = sorted(validator.iter_errors(value), key=lambda error: list(error.absolute_path))
    return [
        {
            "field": ".".join([root, *(str(part) for part in error.absolute_path)]),
            "message": _shortened(error.message),
            "code": f"schema.{error.validator}",
        }
        for error in errors[:MAX_REPORTED_ERRORS]
    ]


def workflow(
    name: str,
    *,
    description: str = "",
    payload_schema: dict[str, Any] | None = None,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    cost_model: CostModel | None = None,
    result_schema: dict[str, Any] | None = None,
    result_invalid_retryable: bool = False,
    max_running: int | None = None,
) -> Callable[[Handler], Workflow]:
    """Make a handler into a `Workflow` (a module of workflows then only needs the decorated names)."""

    def wrap(handler: Handler) -> Workflow:
        return Workflow(
            name=name,
            description=description or (handler.__doc__ or "").strip(),
            payload_schema=payload_schema if payload_schema is not None else {"type": "object"},
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            cost_model=cost_model,
            handler=handler,
            result_schema=result_schema,
            result_invalid_retryable=result_invalid_retryable,
            max_running=max_running,
        )

    return wrap


class WorkflowRegistry:
    def __init__(self, workflows: Iterable[Workflow]) -> None:
        self._by_name: dict[str, Workflow] = {}
        for item in workflows:
            if item.name in self._by_name:
                raise ConfigError(f"workflow {item.name!r} is registered twice")
            self._by_name[item.name] = item

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def all(self) -> list[Workflow]:
        return sorted(self._by_name.values(), key=lambda item: item.name)

    def local_names(self) -> list[str]:
        """The workflows this process can run itself."""
        return [item.name for item in self.all() if not item.remote_only]

    def concurrency_limits(self, overrides: Iterable[tuple[str, int]] = ()) -> dict[str, int]:
        """Each limited workflow's `max_running`, with `overrides` (LEVQOR_WORKFLOW_MAX_RUNNING) over
        the workflows' own; a name the registry does not hold may be limited too (remote workers')."""
        limits = {item.name: item.max_running for item in self.all() if item.max_running is not None}
        limits.update(overrides)
        return limits

    def get(self, name: str) -> Workflow:
        found = self._by_name.get(name)
        if found is None:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise InvalidRequest.for_field(
                "workflow", f"unknown workflow '{name}' (registered: {known})", "unknown_workflow"
            )
        return found


def _module_workflows(module: ModuleType) -> list[Workflow]:
    listed = getattr(module, "WORKFLOWS", None)
    if listed is not None:
        found = list(listed)
        if not all(isinstance(item, Workflow) for item in found):
            raise ConfigError(f"{module.__name__}.WORKFLOWS must hold only Workflow objects")
        return found
    return [value for value in vars(module).values() if isinstance(value, Workflow)]


def load_registry(
    modules: Iterable[str], *, llm_prices: Mapping[str, ModelPrice] = DEFAULT_PRICES
) -> WorkflowRegistry:
    from levqor.workflows.builtins import builtin_workflows

    workflows = list(builtin_workflows(llm_prices))
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"LEVQOR_WORKFLOWS: cannot import {name!r}: {exc}") from None
        found = _module_workflows(module)
        if not found:
            raise ConfigError(f"LEVQOR_WORKFLOWS: {name!r} defines no workflows")
        workflows.extend(found)
    return WorkflowRegistry(workflows)


@functools.lru_cache(maxsize=8)
def _cached_registry(
    modules: tuple[str, ...], llm_prices: tuple[tuple[str, ModelPrice], ...]
) -> WorkflowRegistry:
    return load_registry(modules, llm_prices=price_table(dict(llm_prices)))


def workflow_limits(settings: Settings) -> dict[str, int]:
    """How many jobs of each limited workflow may run at once, for these settings."""
    return _cached_limits(settings.workflow_modules, settings.llm_prices, settings.workflow_max_running)


@functools.lru_cache(maxsize=8)
def _cached_limits(
    modules: tuple[str, ...],
    llm_prices: tuple[tuple[str, ModelPrice], ...],
    overrides: tuple[tuple[str, int], ...],
) -> dict[str, int]:
    return _cached_registry(modules, llm_prices).concurrency_limits(overrides)


def registry_for(settings: Settings) -> WorkflowRegistry:
    """The process's registry for these settings (loaded once per module list and price table)."""
    return _cached_registry(settings.workflow_modules, settings.llm_prices)
