"""Run every benchmark and write bench/RESULTS.md (issue 15, item 5).

    python -m bench.report [--only http,queue,...] [--args NAME=ARGS ...] [--no-postgres]
                           [--out bench/RESULTS.md] [--allow-dirty]

Each bench runs as its own process, one after another, at the full size bench/README.md documents,
with `--json PATH` into a scratch folder; the report reads those files (bench/report_figures.py) and
writes the document (bench/report_document.py): a table per benchmark with each figure, its reference
from the same run, the ratio, the target and the verdict, and the machine, versions, date, commit and
command. `--args NAME=ARGS` appends ARGS to bench NAME's command (its options win over the full-size
ones: `--args "queue=--jobs 2000 --rounds 1"`). A tree with uncommitted changes is refused unless
`--allow-dirty`, and the document then says so. Progress goes to stderr. Exit 0 when every bench
ran and gave its figures (misses included), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report_document import Provenance, Section, render
from bench.report_figures import ROWS_OF

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "RESULTS.md"
PG_ADMIN_URL = os.environ.get("LEVQOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("LEVQOR_BENCH_REDIS", "redis://127.0.0.1:6379")
STDERR_TAIL_CHARS = 2000


@dataclass(frozen=True)
class Bench:
    name: str
    title: str
    entry: tuple[str, ...]  # how Python runs it
    full_size: tuple[str, ...]  # bench/README.md's full run
    uses_postgres: bool  # takes --pg-admin-url and --no-postgres (http: --postgres)


BENCHES = (
    Bench(
        "http",
        "HTTP (bench/http.py)",
        ("bench/http.py",),
        ("--rounds", "3", "--duration", "5"),
        True,
    ),
    Bench(
        "queue",
        "Queue (bench/queue.py)",
        ("-m", "bench.queue"),
        ("--jobs", "20000", "--rounds", "3"),
        True,
    ),
    Bench(
        "growth",
        "Growth (bench/growth.py)",
        ("-m", "bench.growth"),
        ("--finished", "1000000", "--jobs", "20000", "--rounds", "3"),
        True,
    ),
    Bench(
        "callbacks",
        "Callbacks (bench/callbacks.py)",
        ("-m", "bench.callbacks"),
        ("--deliveries", "5000", "--latency-samples", "200"),
        True,
    ),
    Bench(
        "dashboard",
        "Dashboard reads (bench/dashboard.py)",
        ("-m", "bench.dashboard"),
        ("--jobs", "100000", "--requests", "30"),
        True,
    ),
    Bench(
        "auth_limits",
        "API keys and rate limits (bench/auth_limits.py)",
        ("-m", "bench.auth_limits"),
        ("--rounds", "15", "--per-round", "200"),
        False,
    ),
    Bench(
        "inprocess",
        "In-process CPU per request (bench/inprocess.py)",
        ("-m", "bench.inprocess"),
        ("--requests", "20000"),
        False,
    ),
    Bench(
        "http_clients",
        "Outbound HTTP clients (bench/http_clients.py)",
        ("-m", "bench.http_clients"),
        ("--requests", "3000", "--concurrency", "1,8,64"),
        False,
    ),
)
BY_NAME = {bench.name: bench for bench in BENCHES}


def log(message: str) -> None:
    print(f"[bench/report] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated benches to run, of {', '.join(BY_NAME)} (all)")
    parser.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="more options for bench NAME, after the full-size ones (repeatable)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only, where a bench allows it")
    parser.add_argument(
        "--pg-admin-url", default=PG_ADMIN_URL, help="where the benches make scratch databases"
    )
    parser.add_argument(
        "--redis-url", default=REDIS_URL, help="the Redis of auth_limits' shared-storage figures"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="the document to write (bench/RESULTS.md)"
    )
    parser.add_argument("--allow-dirty", action="store_true", help="run on uncommitted changes, and say so")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one bench may take (3600)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in (args.only or ",".join(BY_NAME)).split(",") if name.strip()]
    unknown = sorted(set(names) - set(BY_NAME))
    if unknown or not names:
        parser.error(f"unknown benches {unknown}; choose from {', '.join(BY_NAME)}")
    args.names = [bench.name for bench in BENCHES if bench.name in names]
    args.extra = {}
    for item in args.args:
        name, sep, extra = item.partition("=")
        if not sep or name not in BY_NAME:
            parser.error(f"--args takes NAME=ARGS with NAME one of {', '.join(BY_NAME)}, not {item!r}")
        args.extra[name] = [*args.extra.get(name, []), *shlex.split(extra)]
    return args


def sized(full_size: Sequence[str], extra: Sequence[str]) -> list[str]:
    """The full-size options (pairs of option and value) without those `extra` sets again, then
    `extra`: the command shows each option once."""
    given = {word.split("=", 1)[0] for word in extra if word.startswith("--")}
    pairs = zip(full_size[::2], full_size[1::2], strict=True)
    return [word for option, value in pairs if option not in given for word in (option, value)] + list(extra)


def command_of(bench: Bench, args: argparse.Namespace, json_path: Path) -> list[str]:
    command = [sys.executable, *bench.entry, *sized(bench.full_size, args.extra.get(bench.name, []))]
    if bench.uses_postgres:
        if bench.name == "http":
            command += [] if args.no_postgres else ["--postgres", "--pg-admin-url", args.pg_admin_url]
        else:
            command += ["--no-postgres"] if args.no_postgres else ["--pg-admin-url", args.pg_admin_url]
    if bench.name == "auth_limits" and args.redis_url:
        command += ["--redis", args.redis_url]
    return [*command, "--json", str(json_path)]


def shown(command: Sequence[str]) -> str:
    """The command as a person types it from the checkout: `python`, not this interpreter's path,
    and no scratch path."""
    words = ["python", *command[1:]]
    if "--json" in words:
        at = words.index("--json")
        del words[at : at + 2]
    return shlex.join(words)


def run_bench(bench: Bench, args: argparse.Namespace, scratch: Path) -> Section:
    json_path = scratch / f"{bench.name}.json"
    command = command_of(bench, args, json_path)
    log(f"{bench.name}: {shown(command)}")
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=args.timeout,
        )
        exit_code, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as exc:
        partial = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        exit_code, stderr = None, f"timed out after {args.timeout:g} s\n{partial or ''}"
    section = Section(bench.name, bench.title, shown(command), time.monotonic() - started, exit_code)
    log(f"{bench.name}: exit {exit_code} after {section.seconds:.0f} s")
    if not json_path.exists():
        section.error = f"the bench wrote no results (exit {exit_code})\n{tail(stderr)}"
        return section
    try:
        ROWS_OF[bench.name](json.loads(json_path.read_text(encoding="utf-8")), section)
    except (KeyError, TypeError, ValueError) as exc:
        section.rows.clear()
        section.error = f"its results lack what the report reads ({exc!r})\n{tail(stderr)}"
        return section
    if exit_code != 0:
        # A bench that judged its own run invalid (an error answer, a job not done) says so by its
        # exit; its figures are shown, and so is that.
        section.notes.insert(0, f"**the bench exited {exit_code}: its run is not valid** (see its stderr)")
    return section


def tail(text: str) -> str:
    return text[-STDERR_TAIL_CHARS:].strip() or "(nothing on stderr)"


# --- provenance --------------------------------------------------------------------------------


def git(*words: str) -> str:
    return subprocess.run(
        ["git", *words], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def dirty_files(out: Path) -> list[str]:
    """Changed or untracked files, leaving out the document this run writes."""
    skip = {str(out.resolve().relative_to(ROOT))} if out.resolve().is_relative_to(ROOT) else set()
    lines = git("status", "--porcelain", "--untracked-files=normal").splitlines()
    return [path for line in lines if (path := line[3:].strip()) not in skip]


def cpu_model() -> str:
    for line in read_proc("/proc/cpuinfo").splitlines():
        if line.startswith(("model name", "Model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory() -> str:
    for line in read_proc("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def read_proc(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def postgres_version(url: str) -> str:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar_one())
    except Exception as exc:  # any driver error: the version line says why there is none
        return f"not reachable ({type(exc).__name__})"
    finally:
        engine.dispose()


def redis_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        server: dict[str, Any] = client.info("server")  # type: ignore[assignment]  # sync client
        return str(server["redis_version"])
    except redis.RedisError as exc:
        return f"not reachable ({type(exc).__name__})"
    finally:
        client.close()


def machine(args: argparse.Namespace, load_before: tuple[float, ...]) -> list[tuple[str, str]]:
    loads = " → ".join(", ".join(f"{value:.2f}" for value in load) for load in (load_before, os.getloadavg()))
    return [
        ("Machine", f"{os.cpu_count()} cores, {memory()} memory, {cpu_model()}"),
        ("System", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("SQLite", sqlite3.sqlite_version),
        (
            "PostgreSQL",
            "not used (--no-postgres)" if args.no_postgres else postgres_version(args.pg_admin_url),
        ),
        ("Redis", redis_version(args.redis_url)),
        ("Load average (1, 5, 15 min), start → end", loads),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    dirty = dirty_files(args.out)
    if dirty and not args.allow_dirty:
        log(f"the tree has uncommitted changes ({', '.join(dirty[:5])}): commit them, or --allow-dirty")
        return 2
    invoked = shlex.join(["python", "-m", "bench.report", *(argv if argv is not None else sys.argv[1:])])
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="levqor-bench-report-") as scratch:
        sections = [run_bench(BY_NAME[name], args, Path(scratch)) for name in args.names]
    provenance = Provenance(
        date=date,
        commit=git("rev-parse", "--short=12", "HEAD").strip(),
        dirty_files=dirty,
        command=invoked,
        machine=machine(args, load_before),
    )
    args.out.write_text(render(provenance, sections), encoding="utf-8")
    log(f"wrote {args.out}")
    return 0 if all(section.ran and section.exit_code == 0 for section in sections) else 1


if __name__ == "__main__":
    sys.exit(main())
