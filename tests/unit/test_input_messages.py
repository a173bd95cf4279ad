"""What a refused input says: the validator's own words, with the field named once."""

from __future__ import annotations

import pytest

from levqor.errors import InvalidRequest
from levqor.resolvers.budgets import BudgetInput
from levqor.resolvers.jobs import JobSubmitInput
from levqor.resolvers.validation import parse_input


def refusal(model: type, data: dict[str, object]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_input(model, data)
    return caught.value


def test_a_validator_s_message_reads_as_it_was_written() -> None:
    exc = refusal(BudgetInput, {"period": "day", "limit_micros": 10, "soft_limit_micros": 20})
    assert exc.message == "soft_limit_micros must not be more than limit_micros"
    assert exc.details is not None
    assert exc.details[0]["message"] == "soft_limit_micros must not be more than limit_micros"


def test_a_field_validator_s_message_keeps_its_field_and_loses_the_library_prefix() -> None:
    exc = refusal(JobSubmitInput, {"workflow": "echo", "payload": {}, "run_at": "9999-12-31T23:00:00-05:00"})
    assert exc.message == "run_at: run_at must fall between the years 1 and 9999 in UTC"
    assert "Value error" not in str(exc.details)


def test_a_type_error_keeps_the_library_s_message() -> None:
    exc = refusal(JobSubmitInput, {"workflow": "echo", "payload": {}, "max_attempts": "three"})
    assert exc.message.startswith("max_attempts: ")
    assert "must fall" not in exc.message
