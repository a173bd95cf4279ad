"""What Levqor's own layers cost per request, with no server and no sockets. Prints one JSON line.

Run it as a module (bench/http.py would hide the standard library's `http` from a script here):

    python -m bench.inprocess [--requests 20000] [--targets status,intake,graphql_submit]
                              [--postgres URL] [--callgrind]

The app is built as `levqor serve` builds it (`create_app`, its lifespan, JSON access log to a file,
an API key sent, rate limits far above the load, no in-process worker) and called as an ASGI app by
32 concurrent callers on one uvloop event loop, with the requests bench/http.py sends. What is left
out is exactly what the bare route of bench/http.py also pays: uvicorn's parsing and the sockets. So
these figures show where Levqor's own time goes, and whether a change moves it.

- By default each target reports the process CPU time per request (all threads: the event loop and
  the batchers' database threads).
- `--callgrind` runs the same under valgrind's callgrind, which counts the instructions executed in
  the measured requests only (collection is switched on after the warm-up and off after). An
  instruction count does not move with other load on the machine, so two versions of the code can
  be compared to a fraction of a percent in one run each, where CPU time drifts by a third within a
  minute on a shared machine. It leaves out the kernel and memory stalls, and is some 50 times
  slower: use a few thousand requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench.result_file import add_json_option, write_json

CONCURRENT = 32
API_KEY = "bench-inprocess-key"
FAR_ABOVE_LOAD = "1000000000"
TARGETS = ("status", "intake", "graphql_submit")
INTAKE_BODY = json.dumps({"workflow": "echo", "payload": {"message": "bench"}}).encode()
SUBMIT_BODY = json.dumps(
    {
        "query": "mutation Submit($input: SubmitJobInput!) { submitJob(input: $input) "
        "{ job { id status } userErrors { field message code } } }",
        "variables": {"input": {"workflow": "echo", "payload": {"message": "bench"}}},
    }
).encode()
JOB_POOL = 256

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
Call = tuple[str, str, bytes]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="measured requests per target (20000)")
    parser.add_argument("--warmup", type=int, default=2_000, help="requests per target before measuring")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {TARGETS}")
    parser.add_argument("--postgres", metavar="URL", help="a scratch PostgreSQL database instead of SQLite")
    parser.add_argument("--callgrind", action="store_true", help="count instructions under valgrind")
    add_json_option(parser)
    args = parser.parse_args(argv)
    args.targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown or not args.targets:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS}")
    if args.requests < 1 or args.warmup < 0:
        parser.error("--requests must be at least 1 and --warmup at least 0")
    return args


def scope_for(method: str, path: str, body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"bench"), (b"x-api-key", API_KEY.encode())]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 5000),
    }


async def request(app: Asgi, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never goes away
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope_for(method, path, body), receive, send)
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


class Lifespan:
    """An ASGI app's lifespan, driven as a server drives it."""

    def __init__(self, app: Asgi) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _step(self, message: str) -> None:
        await self.inbox.put({"type": f"lifespan.{message}"})
        answer = await self.outbox.get()
        if answer["type"] != f"lifespan.{message}.complete":
            raise RuntimeError(f"lifespan {message}: {answer}")

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

        async def serve() -> None:
            await self.app(scope, self.inbox.get, self.outbox.put)

        self.task = asyncio.create_task(serve())
        await self._step("startup")

    async def stop(self) -> None:
        await self._step("shutdown")
        if self.task is not None:
            await self.task


async def run_calls(app: Asgi, calls: Sequence[Call], statuses: set[int]) -> None:
    async def caller(part: Sequence[Call]) -> None:
        for method, path, body in part:
            status, answer = await request(app, method, path, body)
            if status not in statuses:
                raise RuntimeError(f"{method} {path} answered {status}: {answer[:300]!r}")

    await asyncio.gather(*(caller(calls[i::CONCURRENT]) for i in range(CONCURRENT)))


def callgrind_control(switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], check=True, capture_output=True)


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from levqor.cli import cmd_migrate
    from levqor.config import Settings
    from levqor.http.app import create_app
    from levqor.logs import configure_logging

    environ = {
        "LEVQOR_ENV": "development",
        "API_KEYS": API_KEY,
        "RATE_BURST": FAR_ABOVE_LOAD,
        "RATE_GLOBAL": FAR_ABOVE_LOAD,
        "LEVQOR_RATE_KEY": FAR_ABOVE_LOAD,  # the per-key allowance
        "LEVQOR_INPROCESS_WORKER": "false",
        "LEVQOR_LOG_FORMAT": "json",
        "SQLITE_PATH": str(workdir / "levqor.db"),
    }
    if args.postgres:
        environ["LEVQOR_DATABASE_URL"] = args.postgres
    os.environ.update(environ)
    settings = Settings.from_env(env_file=None)
    cmd_migrate(argparse.Namespace(revision="head"))
    configure_logging("json")
    log_file = (workdir / "access.log").open("w")
    import logging

    logging.getLogger().handlers[0].setStream(log_file)  # type: ignore[attr-defined]
    app = create_app(settings)
    levqor_life = Lifespan(app)
    await levqor_life.start()
    try:
        ids = []
        for _ in range(JOB_POOL):
            status, body = await request(app, "POST", "/api/v1/intake", INTAKE_BODY)
            if status != 202:
                raise RuntimeError(f"intake answered {status}: {body[:300]!r}")
            ids.append(json.loads(body)["job_id"])
        figures: dict[str, Any] = {}
        for target in args.targets:
            if target == "status":
                make: Callable[[int], Call] = lambda n: ("GET", f"/api/v1/status/{ids[n % len(ids)]}", b"")  # noqa: E731
            elif target == "intake":
                make = lambda _n: ("POST", "/api/v1/intake", INTAKE_BODY)  # noqa: E731
            else:
                make = lambda _n: ("POST", "/graphql", SUBMIT_BODY)  # noqa: E731
            statuses = {202} if target == "intake" else {200}
            await run_calls(app, [make(n) for n in range(args.warmup)], statuses)
            calls = [make(n) for n in range(args.requests)]
            if args.callgrind:
                callgrind_control("on")
            started_cpu, started = time.process_time(), time.perf_counter()
            await run_calls(app, calls, statuses)
            cpu_s, wall_s = time.process_time() - started_cpu, time.perf_counter() - started
            if args.callgrind:
                callgrind_control("off")
            figures[target] = {
                "cpu_us_per_request": round(cpu_s / args.requests * 1e6, 1),
                "wall_us_per_request": round(wall_s / args.requests * 1e6, 1),
            }
            if args.callgrind:
                # Dumped per target, so each count is that target's alone.
                subprocess.run(
                    ["callgrind_control", "-d", target, str(os.getpid())], check=True, capture_output=True
                )
        return figures
    finally:
        await levqor_life.stop()
        log_file.close()


def instructions(out_dir: Path) -> dict[str, int]:
    """The instruction count of each target's dump (`callgrind.out.<n>`, `desc: Trigger: dump
    <target>`; its `totals:` line counts what ran while collection was on)."""
    counts: dict[str, int] = {}
    for path in sorted(out_dir.glob("callgrind.out.*")):
        trigger = events = None
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("desc: Trigger: dump "):
                trigger = line.split()[-1]
            elif line.startswith("totals:"):
                events = int(line.split()[1])
        if trigger is not None and events is not None and trigger in TARGETS:
            counts[trigger] = events
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    inner = os.environ.get("LEVQOR_BENCH_UNDER_VALGRIND") == "1"  # the run valgrind started
    workdir = Path(os.environ["LEVQOR_BENCH_WORKDIR"] if inner else tempfile.mkdtemp(prefix="levqor-bench-"))
    try:
        if args.callgrind and not inner:
            if shutil.which("valgrind") is None:
                print("--callgrind needs valgrind: `apt-get install -y valgrind`", file=sys.stderr)
                return 2
            command = [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={workdir}/callgrind.out",
                sys.executable,
                "-m",
                "bench.inprocess",
                *(argv if argv is not None else sys.argv[1:]),
            ]
            env = {**os.environ, "LEVQOR_BENCH_UNDER_VALGRIND": "1", "LEVQOR_BENCH_WORKDIR": str(workdir)}
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return done.returncode
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            for target, count in instructions(workdir).items():
                figures["targets"][target]["instructions_per_request"] = round(count / args.requests)
            write_json(args.json, figures)
            print(json.dumps(figures, separators=(",", ":")))
            return 0
        import uvloop

        targets = uvloop.run(measure(args, workdir))
        result = {
            "bench": "inprocess",
            "database": "postgresql" if args.postgres else "sqlite",
            "requests": args.requests,
            "concurrent": CONCURRENT,
            "callgrind": args.callgrind,
            "targets": targets,
        }
        write_json(args.json, result)
        print(json.dumps(result, separators=(",", ":")))
        return 0
    finally:
        if not inner:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
