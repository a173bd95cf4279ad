"""bench/RESULTS.md from data: the rows each bench's JSON gives, and the document they make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.report import BY_NAME, command_of, parse_args, sized
from bench.report_document import Provenance, Row, Section, render
from bench.report_figures import callbacks_rows, dashboard_rows, growth_rows, http_rows, queue_rows

PROVENANCE = Provenance(
    date="2026-12-08 00:00 UTC",
    commit="a94d76b6644c",
    dirty_files=[],
    command="python -m bench.report",
    machine=[("Machine", "2 cores, 23.5 GiB memory, Some CPU"), ("PostgreSQL", "16.4")],
)


def section(name: str = "queue", *rows: Row) -> Section:
    return Section(name, f"The {name} bench", f"python -m bench.{name}", 12.4, 0, list(rows))


def table(document: str, title: str) -> list[list[str]]:
    """The cells of the rows of the table under `## title`, header and rule left out."""
    lines = document.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| ---")][1:]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def test_a_row_shows_its_figure_reference_ratio_target_and_verdict() -> None:
    document = render(
        PROVENANCE,
        [
            section(
                "queue",
                Row("drain, SQLite", 10342.4, "jobs/s", "pgqueuer", 6100.0, 1.695, "≥ 1.5x", True),
                Row("drain, PostgreSQL", 8000.0, "jobs/s", "pgqueuer", 6100.0, 1.31, "≥ 1.5x", False),
                Row("pickup p50", 4.21, "ms", target="≤ 10 ms", met=True),
                Row("against procrastinate", 8000.0, "jobs/s", "procrastinate", 900.0, 8.89),
            )
        ],
    )
    assert table(document, "The queue bench") == [
        ["drain, SQLite", "10,342 jobs/s", "pgqueuer", "6,100 jobs/s", "1.7x", "≥ 1.5x", "pass"],
        ["drain, PostgreSQL", "8,000 jobs/s", "pgqueuer", "6,100 jobs/s", "1.31x", "≥ 1.5x", "**miss**"],
        ["pickup p50", "4.21 ms", "none", "—", "—", "≤ 10 ms", "pass"],
        [
            "against procrastinate",
            "8,000 jobs/s",
            "procrastinate",
            "900 jobs/s",
            "8.89x",
            "none (context)",
            "context",
        ],
    ]
    assert table(document, "Summary") == [["The queue bench", "yes", "2", "1", "1", "12"]]
    assert "Misses:\n- The queue bench: drain, PostgreSQL (1.31x against ≥ 1.5x)" in document
    assert "`python -m bench.queue` (12 s)" in document


def test_the_document_names_its_commit_machine_date_and_command() -> None:
    document = render(PROVENANCE, [section()])
    assert "- Date: 2026-12-08 00:00 UTC\n" in document
    assert "- Commit: a94d76b6644c (clean)\n" in document
    assert "- Command: `python -m bench.report`\n" in document
    assert "- Machine: 2 cores, 23.5 GiB memory, Some CPU\n" in document
    assert "- PostgreSQL: 16.4\n" in document
    assert "never edit it by hand" in document
    assert "Misses: none." in document

    dirty = Provenance(**{**PROVENANCE.__dict__, "dirty_files": [f"bench/f{n}.py" for n in range(7)]})
    assert "- Commit: a94d76b6644c **dirty**: uncommitted changes to bench/f0.py, bench/f1.py, " in render(
        dirty, []
    )
    assert "and 2 more\n" in render(dirty, [])


def test_a_bench_that_gave_no_figures_is_shown_failed_with_its_error() -> None:
    failed = Section("growth", "Growth", "python -m bench.growth", 3.0, 1, error="it broke\nTraceback: ...")
    document = render(PROVENANCE, [failed])
    assert table(document, "Summary") == [["Growth", "**failed** (exit 1)", "0", "0", "0", "3"]]
    assert "No figures: it broke\n\n```\nit broke\nTraceback: ...\n```" in document


def test_a_pipe_in_a_cell_does_not_split_the_table() -> None:
    document = render(PROVENANCE, [section("queue", Row("a | b", 1.0, "s"))])
    assert table(document, "The queue bench")[0][0] == "a \\| b"


def test_http_targets_context_and_error_answers_become_rows() -> None:
    data: dict[str, Any] = {
        "settings": {"rounds": 3},
        "targets": {
            "intake_sqlite": {
                "rps": 2000.0,
                "reference": "tutorial_intake",
                "reference_rps": 400.0,
                "ratio": 5.0,
                "goal": 4.0,
                "result": "pass",
            },
            "key_intake_postgres": {
                "rps": 900.0,
                "reference": "intake",
                "reference_rps": 1000.0,
                "ratio": 0.9,
                "goal": None,
                "result": "context",
            },
        },
        "context": {"intake/bare_post_sqlite": {"rps": 2000.0, "reference_rps": 8000.0, "ratio": 0.25}},
        "non_2xx": {"counts": {"levqor-sqlite": 2, "bare": 0}, "goal": 0, "result": "miss"},
        "problems": [],
    }
    target = section("http")
    http_rows(data, target)
    rows = target.rows
    assert rows[0] == Row(
        "REST intake, SQLite", 2000.0, "req/s", "tutorial stack's intake, SQLite", 400.0, 5.0, "≥ 4x", True
    )
    assert (rows[1].figure, rows[1].verdict) == ("intake with a managed key, PostgreSQL", "context")
    assert (rows[2].reference, rows[2].ratio, rows[2].verdict) == (
        "bare Starlette route (POST), SQLite",
        0.25,
        "context",
    )
    assert (rows[3].value, rows[3].target, rows[3].verdict) == (2, "= 0", "miss")


def test_queue_rows_take_each_ratio_with_its_reference_and_the_bench_s_verdict() -> None:
    drain = {"jobs_per_s": 9000.0, "drain_s": 2.2}
    data: dict[str, Any] = {
        "jobs": 20000,
        "worker_processes": 2,
        "rounds": 3,
        "levqor": {"sqlite": drain, "postgres": {"jobs_per_s": 8000.0}},
        "peers": {
            "pgqueuer": {"jobs_per_s": 6000.0},
            "celery": {"jobs_per_s": 1500.0},
            "rq": {"jobs_per_s": 900.0},
        },
        "targets": {
            "vs_pgqueuer": {
                "reference": "pgqueuer",
                "goal": 1.5,
                "ratio": {"sqlite": 1.5, "postgres": 1.33},
                "pass": {"sqlite": True, "postgres": False},
            },
            "vs_faster_of_celery_rq": None,
        },
        "runs": None,
        "pickup_latency": {"in_process": {"sqlite": {"p50_ms": 11.0, "goal_p50_ms": 10.0, "pass": False}}},
        "all_jobs_succeeded": True,
    }
    target = section("queue")
    queue_rows(data, target)
    assert [
        (row.figure, row.reference, row.reference_value, row.ratio, row.verdict) for row in target.rows
    ] == [
        ("Levqor drain, SQLite", "PgQueuer, PostgreSQL", 6000.0, 1.5, "pass"),
        ("Levqor drain, PostgreSQL", "PgQueuer, PostgreSQL", 6000.0, 1.33, "miss"),
        ("pickup latency p50, in process, SQLite", None, None, None, "miss"),
    ]
    assert target.rows[2].target == "≤ 10 ms"
    assert "every job of every system succeeded once: yes" in target.notes[0]


def test_growth_and_callback_rows() -> None:
    figure = {"empty": 10.0, "seeded": 9.0, "ratio": 0.9, "goal": 0.9, "result": "pass"}
    growth: dict[str, Any] = {
        "finished": 1_000_000,
        "jobs": 20000,
        "rounds": 3,
        "figures": {"postgres": {"claim_p99_ms": {**figure, "result": "miss", "ratio": 0.85}}},
        "seeding": {"postgres": {"seconds": 45.0}},
        "all_drained_jobs_succeeded": True,
    }
    target = section("growth")
    growth_rows(growth, target)
    (row,) = target.rows
    assert row.figure == "claim p99 with 1,000,000 finished jobs, PostgreSQL"
    assert (row.value, row.unit, row.reference_value, row.ratio, row.verdict) == (
        9.0,
        "ms",
        10.0,
        0.85,
        "miss",
    )

    callbacks: dict[str, Any] = {
        "processes": 1,
        "results": {"sqlite": {"throughput": {"all_delivered_once": True}}},
        "targets": {
            "sqlite": {
                "deliveries_per_s": {"value": 3815.0, "goal": 1000.0, "met": True},
                "completion_to_arrival_p50_ms": {"value": 60.0, "goal": 50.0, "met": False},
            }
        },
    }
    target = section("callbacks")
    callbacks_rows(callbacks, target)
    assert [(row.target, row.verdict) for row in target.rows] == [("≥ 1,000 /s", "pass"), ("≤ 50 ms", "miss")]
    # A miss of an absolute goal is named with its value, having no ratio.
    document = render(PROVENANCE, [target])
    assert "- The callbacks bench: completion to arrival p50, SQLite (60.0 ms against ≤ 50 ms)" in document


def test_dashboard_rows_judge_each_median_against_the_target_pages_beside_their_rest_reads() -> None:
    def figure(median_ms: float, result: str) -> dict[str, Any]:
        return {
            "median_ms": median_ms,
            "p95_ms": median_ms * 2,
            "rows": 20,
            "target_ms": 200.0,
            "result": result,
        }

    data: dict[str, Any] = {
        "jobs": 100_000,
        "requests": 30,
        "warmup": 3,
        "results": {
            "sqlite": {
                "seed_s": 4.5,
                "figures": {
                    "overview 7 d / 120": figure(545.0, "miss"),
                    "page jobs": {**figure(3.3, "pass"), "reads_through": "page jobs, REST"},
                    "page jobs, REST": figure(2.6, "pass"),
                },
            },
            "postgres": {"seed_s": 6.0, "figures": {"jobs no filter": figure(15.2, "pass")}},
        },
    }
    target = section("dashboard")
    dashboard_rows(data, target)
    assert [
        (row.figure, row.value, row.reference, row.ratio, row.target, row.verdict) for row in target.rows
    ] == [
        ("overview 7 d / 120 (median), SQLite", 545.0, None, None, "< 200 ms", "miss"),
        ("page jobs (median), SQLite", 3.3, None, None, "< 200 ms", "pass"),
        ("page jobs, REST (median), SQLite", 2.6, None, None, "< 200 ms", "pass"),
        ("jobs no filter (median), PostgreSQL", 15.2, None, None, "< 200 ms", "pass"),
    ]
    assert "100,000 jobs; 30 timed requests a case after 3 untimed" in target.notes[0]
    assert target.notes[0].endswith("seeding took SQLite 4.5 s, PostgreSQL 6 s")
    # A miss of the absolute target is named with its value.
    document = render(PROVENANCE, [target])
    assert "- The dashboard bench: overview 7 d / 120 (median), SQLite (545 ms against < 200 ms)" in document
    # It takes the scratch databases' options as the others do.
    sqlite_only = command_of(BY_NAME["dashboard"], parse_args(["--no-postgres"]), Path("d.json"))
    assert sqlite_only[1:3] == ["-m", "bench.dashboard"]
    assert sqlite_only[-3:] == ["--no-postgres", "--json", "d.json"]
    both = command_of(
        BY_NAME["dashboard"], parse_args(["--pg-admin-url", "postgresql://pg/x"]), Path("d.json")
    )
    assert both[-4:] == ["--pg-admin-url", "postgresql://pg/x", "--json", "d.json"]


def test_sizes_passed_through_replace_the_full_size_ones() -> None:
    assert sized(["--jobs", "20000", "--rounds", "3"], ["--jobs", "200"]) == [
        "--rounds",
        "3",
        "--jobs",
        "200",
    ]
    assert sized(["--jobs", "20000"], ["--jobs=200"]) == ["--jobs=200"]
    args = parse_args(["--no-postgres", "--args", "queue=--jobs 200 --timeout 60"])
    command = command_of(BY_NAME["queue"], args, Path("/tmp/q.json"))
    assert command[1:] == [
        "-m",
        "bench.queue",
        "--rounds",
        "3",
        "--jobs",
        "200",
        "--timeout",
        "60",
        "--no-postgres",
        "--json",
        "/tmp/q.json",
    ]
    http = command_of(BY_NAME["http"], parse_args([]), Path("h.json"))
    assert "--postgres" in http


@pytest.mark.parametrize("bad", [["--only", "nope"], ["--args", "queue"], ["--args", "nope=--x 1"]])
def test_only_and_args_are_checked(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        parse_args(bad)
    assert refused.value.code == 2


def test_only_runs_in_the_report_s_order() -> None:
    assert parse_args(["--only", "growth,http"]).names == ["http", "growth"]
