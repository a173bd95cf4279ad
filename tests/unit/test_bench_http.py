"""bench/http.py: its options, its reading of wrk's output, its Lua scripts and the one JSON line it
prints (no servers, no load)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench import http_support

BENCH = Path(__file__).resolve().parents[2] / "bench" / "http.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    # Loaded by path under another name: the file is named like the standard library's `http`.
    spec = importlib.util.spec_from_file_location("levqor_bench_http", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def figures(rps: float) -> dict[str, Any]:
    return {"rps": rps, "p99_ms": 5.0, "requests": int(rps * 10), "errors": 0}


def test_defaults_are_one_wrk_thread_32_connections_10_s(bench: ModuleType) -> None:
    args = bench.parse_args([])
    assert (args.duration, args.warmup, args.connections, args.threads) == (10, 2, 32, 1)
    assert args.pin is True
    assert args.postgres is False
    assert args.profile_dir is None


def test_options_are_read(bench: ModuleType) -> None:
    args = bench.parse_args(["--duration", "3", "--connections", "64", "--threads", "2", "--postgres"])
    assert (args.duration, args.connections, args.threads, args.postgres) == (3, 64, 2, True)
    assert bench.parse_args(["--no-pin"]).pin is False


@pytest.mark.parametrize(
    "argv",
    [
        ["--duration", "0"],
        ["--duration", "ten"],
        ["--duration", "301"],
        ["--connections", "0"],
        ["--threads", "8", "--connections", "4"],
    ],
)
def test_bad_options_are_refused(
    bench: ModuleType, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        bench.parse_args(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_wrk_result_line_is_parsed() -> None:
    output = (
        "Running 10s test @ http://127.0.0.1:5000/api/v1/intake\n"
        'WRKJSON {"requests":12000,"duration_us":10000000,"connect_errors":0,"read_errors":0,'
        '"write_errors":0,"status_errors":3,"timeouts":1,"p50_us":1500,"p90_us":2500,'
        '"p99_us":4321,"max_us":9000}\n'
    )
    parsed = http_support.parse_wrk(output)
    assert parsed.rps == 1200.0
    assert parsed.p99_ms == 4.32
    assert parsed.as_json()["errors"] == 4


def test_missing_wrk_result_is_an_error() -> None:
    with pytest.raises(http_support.BenchError, match="no result line"):
        http_support.parse_wrk("unable to connect to 127.0.0.1:5000 Connection refused\n")


def test_json_line_has_ratios_with_goals_and_pass_flags(bench: ModuleType) -> None:
    bare = {"bare_post": figures(20_000), "bare_get": figures(30_000)}
    levqor = {
        "sqlite": {"intake": figures(6_000), "status": figures(9_000), "graphql_submit": figures(3_000)}
    }
    result = bench.assemble({"duration_s": 10}, bare, levqor)
    line = json.dumps(result, separators=(",", ":"))
    assert "\n" not in line
    ratios = json.loads(line)["levqor"]["sqlite"]["ratios"]
    assert ratios["intake/bare_post"] == {"value": 0.3, "goal": 0.25, "pass": True}
    assert ratios["graphql_submit/intake"] == {"value": 0.5, "goal": 0.6, "pass": False}
    assert ratios["status/bare_get"] == {"value": 0.3, "goal": 0.4, "pass": False}
    assert result["valid"] is True
    assert result["pass"] is False


def test_all_ratios_met_on_every_database_passes(bench: ModuleType) -> None:
    bare = {"bare_post": figures(10_000), "bare_get": figures(10_000)}
    good = {"intake": figures(3_000), "status": figures(5_000), "graphql_submit": figures(2_000)}
    result = bench.assemble({}, bare, {"sqlite": good, "postgres": good})
    assert set(result["levqor"]) == {"sqlite", "postgres"}
    assert result["pass"] is True


def test_a_run_with_problems_is_invalid_and_never_passes(bench: ModuleType) -> None:
    bare = {"bare_post": figures(10_000), "bare_get": figures(10_000)}
    good = {"intake": figures(3_000), "status": figures(5_000), "graphql_submit": figures(2_000)}
    result = bench.assemble({}, bare, {"sqlite": good}, ["intake_sqlite: wrk saw errors"])
    assert result["valid"] is False
    assert result["pass"] is False
    assert result["problems"] == ["intake_sqlite: wrk saw errors"]


def test_lua_scripts_carry_the_key_and_escape_the_body() -> None:
    post = http_support.post_script({"workflow": "echo", "payload": {"quote": "it's"}})
    assert 'wrk.method = "POST"' in post
    assert "it\\'s" in post
    assert f'wrk.headers["X-Api-Key"] = "{http_support.API_KEY}"' in post
    status = http_support.status_script(["a", "b"])
    assert "'a',\n'b'" in status
    assert '"/api/v1/status/" .. ids[next_id]' in status
