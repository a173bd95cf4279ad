"""The workflow registry, payload validation and the outbound address guard (no services needed)."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

import pytest

from levqor.config import ConfigError, Settings
from levqor.errors import InvalidRequest
from levqor.workflows import JobRunContext, Workflow, WorkflowRegistry, load_registry, registry_for, workflow
from levqor.workflows.address_guard import AddressRefused, check_addresses, is_public, resolve_public


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata, link-local
        "100.64.0.1",  # shared address space
        "0.0.0.0",
        "224.0.0.1",  # multicast
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "2001:db8::1",  # documentation
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    ],
)
def test_non_global_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_global_unicast_addresses_are_allowed(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_one_private_record_among_public_ones_refuses_the_host() -> None:
    records = [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.1")]
    with pytest.raises(AddressRefused, match=r"10\.0\.0\.1"):
        check_addresses("mixed.example", records)
    assert check_addresses("public.example", records[:1]) == records[0]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "0x7f.1"])
async def test_names_and_literals_that_reach_this_machine_are_refused(host: str) -> None:
    with pytest.raises(AddressRefused):
        await resolve_public(host, 80)


def test_payloads_are_validated_with_the_failing_paths() -> None:
    flow = Workflow(
        "t",
        payload_schema={
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
            "required": ["items"],
        },
    )
    flow.validate({"items": [1, 2]})
    with pytest.raises(InvalidRequest) as caught:
        flow.validate({"items": [1, "two", 3.5]})
    assert [detail["field"] for detail in caught.value.details] == ["payload.items.1", "payload.items.2"]
    assert caught.value.message.startswith("payload.items.1: 'two' is not of type 'integer'")
    with pytest.raises(InvalidRequest, match="'items' is a required property"):
        flow.validate({})


def test_a_bad_schema_or_a_duplicate_name_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="invalid payload schema"):
        Workflow("broken", payload_schema={"type": "no-such-type"})
    with pytest.raises(ConfigError, match="twice"):
        WorkflowRegistry([Workflow("a"), Workflow("a")])


def test_unknown_workflows_are_named_with_the_known_ones() -> None:
    registry = registry_for(Settings())
    with pytest.raises(InvalidRequest) as caught:
        registry.get("nope")
    assert caught.value.details[0]["field"] == "workflow"
    assert "unknown workflow 'nope'" in caught.value.message
    assert "echo" in caught.value.message


def test_modules_add_workflows_and_remote_only_ones_are_not_run_here() -> None:
    registry = load_registry(["tests.support_workflows"])
    assert {"echo", "sleep", "http.request", "test.remote", "test.fail_once"} <= {
        f.name for f in registry.all()
    }
    assert registry.get("test.remote").remote_only
    assert "test.remote" not in registry.local_names()
    assert "test.fail_once" in registry.local_names()
    assert registry.get("test.fail_once").description == "Fails its first attempt, then returns the payload."


@pytest.mark.parametrize(
    ("module", "message"),
    [("no_such_module_anywhere", "cannot import"), ("levqor.errors", "defines no workflows")],
)
def test_a_bad_workflow_module_refuses_to_start(module: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_registry([module])


async def test_the_decorator_keeps_the_handler_callable() -> None:
    @workflow("double", payload_schema={"type": "object", "properties": {"n": {"type": "number"}}})
    async def double(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
        return {"n": payload["n"] * 2}

    assert double.handler is not None
    ctx = JobRunContext(job_id=uuid.uuid4(), attempt=1, workflow="double", worker_id="w", settings=Settings())
    assert await double.handler({"n": 21}, ctx) == {"n": 42}
