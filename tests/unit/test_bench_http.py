"""bench/http.py: its options, its reading of wrk's output, its Lua scripts and the one JSON line it
prints (no load); and its floor (bench/floor_app.py) under uvicorn, answering as Levqor does."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from bench import http_support
from levqor.resolvers.auth import static_principal
from tests.conftest import free_port, settings_for, start_live_server

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


def figures(rps: float, cpu_us: int = 100, p99_ms: float = 5.0) -> dict[str, Any]:
    """One round's figures of one target, as `Bench.measure` gives them."""
    return {
        "rps": rps,
        "p50_ms": 1.0,
        "p90_ms": 3.0,
        "p99_ms": p99_ms,
        "max_ms": p99_ms * 2,
        "requests": int(rps * 10),
        "errors": 0,
        "server_cpu_us_per_request": cpu_us,
        "cpu_cores": {"server": 0.9, "wrk": 0.3, "others": 0.1},
        "load_1m_before": 1.0,
    }


def same(rounds: int, rps: float, cpu_us: int = 100) -> list[dict[str, Any]]:
    return [figures(rps, cpu_us) for _ in range(rounds)]


def test_defaults_are_three_rounds_of_5_s_one_wrk_thread_32_connections(bench: ModuleType) -> None:
    args = bench.parse_args([])
    assert (args.duration, args.rounds, args.warmup, args.connections, args.threads) == (5, 3, 2, 32, 1)
    assert args.pin is True
    assert args.postgres is False
    assert args.floor is True
    assert args.profile_dir is None


def test_options_are_read(bench: ModuleType) -> None:
    argv = ["--duration", "3", "--rounds", "5", "--connections", "64", "--threads", "2", "--postgres"]
    args = bench.parse_args(argv)
    assert (args.duration, args.rounds, args.connections, args.threads, args.postgres) == (3, 5, 64, 2, True)
    assert bench.parse_args(["--no-pin"]).pin is False
    assert bench.parse_args(["--no-floor"]).floor is False


@pytest.mark.parametrize(
    "argv",
    [
        ["--duration", "0"],
        ["--duration", "ten"],
        ["--duration", "301"],
        ["--connections", "0"],
        ["--rounds", "0"],
        ["--rounds", "51"],
        ["--rounds", "two"],
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


def test_a_round_measures_each_target_right_next_to_its_reference(bench: ModuleType) -> None:
    assert bench.round_order(["sqlite"], 0) == [
        ("bare", "bare_post"),
        ("sqlite", "intake"),
        ("sqlite", "graphql_submit"),
        ("bare", "bare_get"),
        ("sqlite", "status"),
    ]
    assert bench.round_order(["sqlite", "postgres"], 0) == [
        ("postgres", "graphql_submit"),
        ("postgres", "intake"),
        ("bare", "bare_post"),
        ("sqlite", "intake"),
        ("sqlite", "graphql_submit"),
        ("postgres", "status"),
        ("bare", "bare_get"),
        ("sqlite", "status"),
    ]


def test_the_floor_follows_the_first_databases_status(bench: ModuleType) -> None:
    assert bench.round_order(["sqlite"], 0, floor=True)[-3:] == [
        ("bare", "bare_get"),
        ("sqlite", "status"),
        ("floor", "floor_get"),
    ]
    assert bench.round_order(["sqlite", "postgres"], 0, floor=True)[-4:] == [
        ("postgres", "status"),
        ("bare", "bare_get"),
        ("sqlite", "status"),
        ("floor", "floor_get"),
    ]
    assert bench.round_order(["sqlite"], 1, floor=True)[:3] == [
        ("floor", "floor_get"),
        ("sqlite", "status"),
        ("bare", "bare_get"),
    ]


@pytest.mark.parametrize("floor", [False, True])
@pytest.mark.parametrize("kinds", [["sqlite"], ["sqlite", "postgres"]])
def test_every_goal_ratio_is_adjacent_in_every_round_and_odd_rounds_run_backwards(
    bench: ModuleType, kinds: list[str], floor: bool
) -> None:
    for index in range(4):
        order = bench.round_order(kinds, index, floor)
        first = bench.round_order(kinds, 0, floor)
        assert order == (first[::-1] if index % 2 else first)
        assert len(order) == len(set(order)) == 2 + 3 * len(kinds) + int(floor)
        for kind in kinds:
            for numerator, denominator, goal in bench.RATIOS.values():
                if goal is None:
                    continue
                server = "bare" if denominator.startswith("bare") else kind
                gap = order.index((kind, numerator)) - order.index((server, denominator))
                assert abs(gap) == 1, (kind, numerator, denominator, order)
        if floor:
            # Next to the status it is the floor of; one run (that status) from bare_get.
            at = order.index(("floor", "floor_get"))
            assert abs(at - order.index(("sqlite", "status"))) == 1
            assert abs(at - order.index(("bare", "bare_get"))) == 2


def test_three_databases_cannot_all_sit_next_to_the_reference(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match="one or two databases"):
        bench.round_order(["sqlite", "postgres", "mysql"], 0)


def test_a_target_reports_medians_sums_and_every_round() -> None:
    rounds = [figures(9_000, 120, 7.0), figures(12_000, 100, 5.0), figures(10_000, 110, 6.0)]
    for index, jobs in enumerate((900, 1_200, 1_000)):
        rounds[index]["jobs_written"] = jobs
    rounds[1]["errors"] = 2
    summary = http_support.summarize_rounds(rounds)
    assert summary["rps"] == 10_000
    assert summary["server_cpu_us_per_request"] == 110
    assert summary["p99_ms"] == 6.0
    assert summary["max_ms"] == 14.0
    assert summary["requests"] == 310_000
    assert summary["errors"] == 2
    assert summary["jobs_written"] == 3_100
    assert summary["cpu_cores"] == {"server": 0.9, "wrk": 0.3, "others": 0.1}
    assert summary["rps_rounds"] == [9_000, 12_000, 10_000]
    assert summary["server_cpu_us_per_request_rounds"] == [120, 100, 110]


def test_an_even_number_of_rounds_averages_the_middle_two() -> None:
    summary = http_support.summarize_rounds([figures(1_000.0, 101), figures(2_000.5, 100)])
    assert summary["rps"] == 1_500.25
    assert summary["server_cpu_us_per_request"] == 100.5
    assert "jobs_written" not in summary


def test_a_ratio_is_the_median_of_the_rounds_ratios_not_the_ratio_of_medians(bench: ModuleType) -> None:
    # The machine drifts: the reference is fast in round 2 and slow in round 3, and the target moves
    # with it. The ratio of the medians (5,000 / 20,000 = 0.25) would pair figures of different rounds.
    bare = {
        "bare_post": [figures(20_000, 50), figures(30_000, 40), figures(12_000, 80)],
        "bare_get": same(3, 20_000, 50),
    }
    sqlite = {
        "intake": [figures(5_000, 200), figures(9_000, 160), figures(4_200, 250)],
        "status": same(3, 9_000, 100),
        "graphql_submit": [figures(2_500, 300), figures(6_300, 200), figures(2_100, 500)],
    }
    result = bench.assemble({"duration_s": 5, "rounds": 3}, bare, {"sqlite": sqlite})
    line = json.dumps(result, separators=(",", ":"))
    assert "\n" not in line
    ratios = json.loads(line)["levqor"]["sqlite"]["ratios"]
    assert ratios["intake/bare_post"] == {
        "value": 0.3,
        "goal": 0.25,
        "pass": True,
        "rounds": [0.25, 0.3, 0.35],
        "cpu_per_request": {"value": 0.25, "rounds": [0.25, 0.25, 0.32]},
    }
    assert ratios["graphql_submit/intake"]["value"] == 0.5
    assert ratios["graphql_submit/intake"]["rounds"] == [0.5, 0.7, 0.5]
    assert ratios["graphql_submit/intake"]["pass"] is False
    assert ratios["graphql_submit/intake"]["cpu_per_request"] == {"value": 0.667, "rounds": [0.667, 0.8, 0.5]}
    assert ratios["status/bare_get"]["value"] == 0.45
    assert ratios["status/bare_get"]["pass"] is True
    assert result["bare"]["bare_post"]["rps"] == 20_000
    assert result["bare"]["bare_post"]["rps_rounds"] == [20_000, 30_000, 12_000]
    assert result["levqor"]["sqlite"]["intake"]["rps"] == 5_000
    assert result["valid"] is True
    assert result["pass"] is False


def test_the_pass_flag_is_on_the_median_and_not_on_one_lucky_round(bench: ModuleType) -> None:
    bare = {"bare_post": same(3, 10_000), "bare_get": same(3, 10_000)}
    targets = {
        "intake": [figures(2_000), figures(2_400), figures(3_000)],  # 0.2, 0.24, 0.3 of the ceiling
        "status": same(3, 5_000),
        "graphql_submit": same(3, 2_000),
    }
    ratio = bench.assemble({}, bare, {"sqlite": targets})["levqor"]["sqlite"]["ratios"]["intake/bare_post"]
    assert (ratio["value"], ratio["pass"]) == (0.24, False)


def test_a_reference_without_answers_gives_no_ratio(bench: ModuleType) -> None:
    bare = {"bare_post": [figures(10_000), figures(0)], "bare_get": same(2, 10_000)}
    targets = {"intake": same(2, 3_000), "status": same(2, 5_000), "graphql_submit": same(2, 2_000)}
    ratios = bench.assemble({}, bare, {"sqlite": targets})["levqor"]["sqlite"]["ratios"]
    assert set(ratios) == {"graphql_submit/intake", "status/bare_get"}


def test_a_target_without_cpu_time_gives_no_cpu_ratio(bench: ModuleType) -> None:
    bare = {"bare_post": same(2, 10_000), "bare_get": same(2, 10_000)}
    targets = {"intake": same(2, 3_000, cpu_us=0), "status": same(2, 5_000), "graphql_submit": same(2, 2_000)}
    ratios = bench.assemble({}, bare, {"sqlite": targets})["levqor"]["sqlite"]["ratios"]
    assert ratios["intake/bare_post"]["value"] == 0.3
    assert "cpu_per_request" not in ratios["intake/bare_post"]
    assert ratios["status/bare_get"]["cpu_per_request"]["value"] == 1.0


def test_all_ratios_met_on_every_database_passes(bench: ModuleType) -> None:
    bare = {"bare_post": same(3, 10_000), "bare_get": same(3, 10_000)}
    good = {"intake": same(3, 3_000), "status": same(3, 5_000), "graphql_submit": same(3, 2_000)}
    result = bench.assemble({}, bare, {"sqlite": good, "postgres": good})
    assert set(result["levqor"]) == {"sqlite", "postgres"}
    assert result["pass"] is True


def test_a_run_with_problems_is_invalid_and_never_passes(bench: ModuleType) -> None:
    bare = {"bare_post": same(3, 10_000), "bare_get": same(3, 10_000)}
    good = {"intake": same(3, 3_000), "status": same(3, 5_000), "graphql_submit": same(3, 2_000)}
    problem = "intake_sqlite round 2: 3000 answers but only 2990 new jobs"
    result = bench.assemble({}, bare, {"sqlite": good}, [problem])
    assert result["valid"] is False
    assert result["pass"] is False
    assert result["problems"] == [problem]


def test_floor_ratios_are_reported_for_the_sqlite_status_and_never_judged(bench: ModuleType) -> None:
    bare = {"bare_post": same(2, 10_000), "bare_get": [figures(12_000, 50), figures(10_000, 100)]}
    floor = {"floor_get": [figures(9_600, 80), figures(9_000, 110)]}
    good = {"intake": same(2, 3_000), "status": same(2, 5_000, 200), "graphql_submit": same(2, 2_000)}
    result = bench.assemble({}, bare, {"sqlite": good, "postgres": good}, floor=floor)
    ratios = result["levqor"]["sqlite"]["ratios"]
    assert ratios["floor_get/bare_get"] == {
        "value": 0.85,
        "goal": None,
        "rounds": [0.8, 0.9],
        "cpu_per_request": {"value": 0.767, "rounds": [0.625, 0.909]},
    }
    assert ratios["status/floor_get"]["rounds"] == [0.521, 0.556]
    assert "pass" not in ratios["status/floor_get"]
    # The floor reads the SQLite file: PostgreSQL's status has no floor.
    floor_ratios = {"floor_get/bare_get", "status/floor_get"}
    assert set(result["levqor"]["postgres"]["ratios"]) == set(ratios) - floor_ratios
    assert result["floor"]["floor_get"]["rps_rounds"] == [9_600, 9_000]
    # Floor ratios fail nothing, whatever their value; the goals alone decide.
    assert ratios["status/bare_get"]["pass"] is True
    assert result["pass"] is True
    slow = {**good, "status": same(2, 3_000)}
    assert bench.assemble({}, bare, {"sqlite": slow}, floor=floor)["pass"] is False


def test_without_the_floor_there_are_no_floor_figures(bench: ModuleType) -> None:
    bare = {"bare_post": same(2, 10_000), "bare_get": same(2, 10_000)}
    good = {"intake": same(2, 3_000), "status": same(2, 5_000), "graphql_submit": same(2, 2_000)}
    result = bench.assemble({}, bare, {"sqlite": good})
    assert result["floor"] == {}
    assert set(result["levqor"]["sqlite"]["ratios"]) == {
        "intake/bare_post",
        "graphql_submit/intake",
        "status/bare_get",
    }


def test_lua_scripts_carry_the_key_and_escape_the_body() -> None:
    post = http_support.post_script({"workflow": "echo", "payload": {"quote": "it's"}})
    assert 'wrk.method = "POST"' in post
    assert "it\\'s" in post
    assert f'wrk.headers["X-Api-Key"] = "{http_support.API_KEY}"' in post
    status = http_support.status_script(["a", "b"])
    assert "'a',\n'b'" in status
    assert '"/api/v1/status/" .. ids[next_id]' in status


# --- the floor under uvicorn, next to an in-thread Levqor on the same SQLite file ---------------------

FLOOR_HEADERS = {
    "content-length",
    "content-type",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "vary",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "permissions-policy",
    "x-request-id",
}


def test_the_floor_answers_the_status_get_as_levqor_does(
    bench: ModuleType, sqlite_template: Path, tmp_path: Path
) -> None:
    path = tmp_path / "levqor.db"
    shutil.copyfile(sqlite_template, path)
    levqor = start_live_server(settings_for(f"sqlite:///{path}", API_KEYS=http_support.API_KEY))
    run = http_support.Run(workdir=tmp_path / "floor")
    run.workdir.mkdir()
    log_path = run.workdir / "access.log"
    key = {"X-Api-Key": http_support.API_KEY}
    try:
        port = free_port()
        process = http_support.start_server(
            run,
            "floor",
            bench.uvicorn_command("bench.floor_app:app", port),
            bench.floor_env(str(path), log_path),
            bench.ROOT,
            f"http://127.0.0.1:{port}",
            "/api/v1/status/ready",
        )
        with (
            levqor.client(headers=key) as reference,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=key, timeout=30) as floor,
        ):
            queued = reference.post(bench.INTAKE_PATH, json=bench.INTAKE_BODY).json()["job_id"]
            finished = reference.post(bench.INTAKE_PATH, json=bench.INTAKE_BODY).json()["job_id"]
            done = reference.post(f"/api/v1/_dev/complete/{finished}", json={"result": {"n": 1.5, "é": [1]}})
            assert done.status_code == 200
            for job_id in (queued, finished):
                expected = reference.get(f"/api/v1/status/{job_id}")
                answer = floor.get(f"/api/v1/status/{job_id}")
                assert (answer.status_code, expected.status_code) == (200, 200)
                assert answer.json() == expected.json()
                assert answer.content == expected.content  # the same compact encoding, too
                assert set(answer.headers) == FLOOR_HEADERS | {"date"}
                assert set(answer.headers) == set(expected.headers) - {"server"}  # in-thread: not turned off
                assert answer.headers["content-type"] == "application/json"
                assert answer.headers["vary"] == "Origin"
            assert expected.json()["finished_at"] is not None
            assert expected.json()["result"] == {"n": 1.5, "é": [1]}

            no_key = httpx.get(f"http://127.0.0.1:{port}/api/v1/status/{queued}")
            assert no_key.status_code == 200  # the status route is public: only a wrong key is refused
            refusals = {
                f"/api/v1/status/{queued}": ({"X-Api-Key": "wrong"}, 401, "unauthorized"),
                f"/api/v1/status/{uuid.uuid4()}": ({}, 404, "not_found"),
                "/api/v1/status/not-a-uuid": ({}, 404, "not_found"),
            }
            for target, (headers, status, code) in refusals.items():
                expected = reference.get(target, headers=headers)
                answer = floor.get(target, headers=headers)
                assert (answer.status_code, expected.status_code) == (status, status), target
                body = answer.json()
                assert body["error"] == code
                assert body["request_id"] == answer.headers["x-request-id"]
                assert {**body, "request_id": None} == {**expected.json(), "request_id": None}
        run.stop(process)  # the lifespan's shutdown writes what is left of the access log
        lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    finally:
        run.close()
        levqor.stop()
    served = [line for line in lines if line["path"] == f"/api/v1/status/{queued}" and line["status"] == 200]
    assert served[0]["key_id"] == static_principal(http_support.API_KEY).key_id
    assert served[-1]["key_id"] is None  # the request without a key
    assert list(served[0]) == [
        "ts",
        "level",
        "logger",
        "msg",
        "method",
        "path",
        "status",
        "duration_ms",
        "client_ip",
        "user_agent",
        "request_id",
        "key_id",
    ]
    assert [line["status"] for line in lines[-3:]] == [401, 404, 404]
