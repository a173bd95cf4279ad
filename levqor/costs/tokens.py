"""A job's tokens as every surface shows them (REST, GraphQL, callbacks)."""

from __future__ import annotations

from typing import Any

from levqor.workflows.context import TokenUsage

TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")


def token_usage_of(job: Any) -> TokenUsage | None:
    """The job's token totals (a `Job` or a row with its token columns); None when no attempt
    reported any."""
    values = [getattr(job, name) for name in TOKEN_FIELDS]
    if all(value is None for value in values):
        return None
    return TokenUsage(*(value or 0 for value in values))


def tokens_of(job: Any) -> dict[str, int] | None:
    usage = token_usage_of(job)
    return None if usage is None else usage.as_dict()
