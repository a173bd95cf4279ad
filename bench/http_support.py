"""The parts of bench/http.py that are not about Levqor: wrk and its Lua scripts, server processes
and what they cost in CPU."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_KEY = "bench-key"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
SETTLE_S = 0.3

# wrk calls `done` once with the totals of all its threads; one marked JSON line is easy to find.
WRK_DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,'
    .. '"status_errors":%d,"timeouts":%d,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


class BenchError(RuntimeError):
    """The benchmark could not produce figures that mean something."""


def log(message: str) -> None:
    print(f"[bench/http] {message}", file=sys.stderr, flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


@dataclass(frozen=True)
class Figures:
    """One measured wrk run."""

    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "requests": self.requests,
            # wrk counts an answer of status 400 or more as a status error; the others are socket
            # errors and timeouts.
            "non_2xx": self.errors["status"],
            "errors": sum(count for name, count in self.errors.items() if name != "status"),
        }


def parse_wrk(output: str) -> Figures:
    """The figures from the `WRKJSON` line our Lua `done` writes."""
    for line in output.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line[len("WRKJSON ") :])
            return Figures(
                requests=raw["requests"],
                duration_s=raw["duration_us"] / 1e6,
                p50_ms=round(raw["p50_us"] / 1000, 2),
                p90_ms=round(raw["p90_us"] / 1000, 2),
                p99_ms=round(raw["p99_us"] / 1000, 2),
                max_ms=round(raw["max_us"] / 1000, 2),
                errors={
                    name: raw[key]
                    for name, key in (
                        ("connect", "connect_errors"),
                        ("read", "read_errors"),
                        ("write", "write_errors"),
                        ("status", "status_errors"),
                        ("timeout", "timeouts"),
                    )
                },
            )
    raise BenchError(f"wrk printed no result line:\n{output[-2000:]}")


def summarize_rounds(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One target's figures over its rounds (each as `Bench.measure` gives it): the median of each
    rate, latency and CPU figure, since one round disturbed by other load moves a median least; the
    sums of the counts; and every round's req/s and CPU per request, to show the spread."""
    summary: dict[str, Any] = {
        "rps": median(figures["rps"] for figures in rounds),
        "server_cpu_us_per_request": median(figures["server_cpu_us_per_request"] for figures in rounds),
        **{key: median(figures[key] for figures in rounds) for key in ("p50_ms", "p90_ms", "p99_ms")},
        "max_ms": max(figures["max_ms"] for figures in rounds),
        "requests": sum(figures["requests"] for figures in rounds),
        "non_2xx": sum(figures["non_2xx"] for figures in rounds),
        "errors": sum(figures["errors"] for figures in rounds),
        "cpu_cores": {
            key: median(figures["cpu_cores"][key] for figures in rounds) for key in rounds[0]["cpu_cores"]
        },
        "load_1m_before": median(figures["load_1m_before"] for figures in rounds),
        "rps_rounds": [figures["rps"] for figures in rounds],
        "server_cpu_us_per_request_rounds": [figures["server_cpu_us_per_request"] for figures in rounds],
    }
    if all("jobs_written" in figures for figures in rounds):
        summary["jobs_written"] = sum(figures["jobs_written"] for figures in rounds)
    return summary


def median(values: Iterable[float]) -> float:
    """The median, rounded as the figures it is taken from are (an even count averages two)."""
    return round(statistics.median(values), 2)


def quotients(numerators: Sequence[float], denominators: Sequence[float]) -> list[float] | None:
    """Each round's quotient, or None when a denominator is not positive (no answers, no CPU
    time counted) and a quotient would mean nothing."""
    if any(denominator <= 0 for denominator in denominators):
        return None
    return [numerator / denominator for numerator, denominator in zip(numerators, denominators, strict=True)]


def post_script(body: dict[str, Any], api_key: str = API_KEY) -> str:
    return "\n".join(
        [
            'wrk.method = "POST"',
            f"wrk.body = {_lua_string(json.dumps(body, separators=(',', ':')))}",
            'wrk.headers["Content-Type"] = "application/json"',
            f'wrk.headers["X-Api-Key"] = {_lua_string(api_key)}',
            WRK_DONE_LUA,
        ]
    )


def status_script(job_ids: Sequence[str]) -> str:
    """GET /api/v1/status/<id>, cycling through `job_ids` (each wrk thread has its own counter)."""
    ids = ",\n".join(_lua_string(job_id) for job_id in job_ids)
    return "\n".join(
        [
            f"local ids = {{\n{ids}\n}}",
            "local count = #ids",
            "local next_id = 0",
            f'wrk.headers["X-Api-Key"] = "{API_KEY}"',
            "request = function()",
            "  next_id = next_id % count + 1",
            '  return wrk.format("GET", "/api/v1/status/" .. ids[next_id])',
            "end",
            WRK_DONE_LUA,
        ]
    )


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class Run:
    """Everything this run started or made, so that it can all be undone."""

    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)  # what the JSON line reports of the setup

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            # Each server leads its own process group (start_new_session), so this reaches only it.
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process in self.processes:
            self.processes.remove(process)

    def close(self) -> None:
        for process in list(self.processes):
            self.stop(process)
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:  # cleaning up the rest matters more than this one
                log(f"cleanup failed: {exc}")
        shutil.rmtree(self.workdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(command: list[str], cpu: int, pin: bool) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if pin else command


def start_server(
    run: Run, name: str, command: list[str], env: dict[str, str], cwd: Path, base_url: str, ready_path: str
) -> subprocess.Popen[bytes]:
    import httpx

    log_path = run.workdir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    run.processes.append(process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise BenchError(f"{name} exited with {process.returncode} at start:\n{tail}")
        try:
            if httpx.get(base_url + ready_path, timeout=1.0).status_code < 500:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{name} did not answer on {base_url} within {START_TIMEOUT_S:.0f} s")


@dataclass(frozen=True)
class CpuSample:
    at: float
    busy_s: float  # all cores, all processes
    server_s: float
    children_s: float  # finished children: wrk


def cpu_sample(server_pid: int) -> CpuSample:
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as stat:
        values = [int(part) for part in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    with open(f"/proc/{server_pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    server = int(fields[11]) + int(fields[12])  # utime + stime, all threads
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSample(
        at=time.monotonic(),
        busy_s=(sum(values[:8]) - idle) / ticks,
        server_s=server / ticks,
        children_s=children.ru_utime + children.ru_stime,
    )


def cpu_use(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """Cores used during the run by the server, by wrk and by everything else on the machine."""
    elapsed = after.at - before.at
    server = (after.server_s - before.server_s) / elapsed
    load = (after.children_s - before.children_s) / elapsed
    busy = (after.busy_s - before.busy_s) / elapsed
    return {
        "server": round(server, 2),
        "wrk": round(load, 2),
        "others": round(max(busy - server - load, 0.0), 2),
    }


def find_py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


def settled(count_rows: Callable[[], int]) -> int:
    """The row count once requests still in flight when wrk stopped have committed."""
    previous = count_rows()
    while True:
        time.sleep(SETTLE_S)
        current = count_rows()
        if current == previous:
            return current
        previous = current
