"""`/metrics` of `levqor serve --workers 2`: every scrape sums both server processes."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_server_process, stop_server_process
from tests.ops_support import server_env

MAX_REQUESTS = 400  # enough for the kernel to hand connections to both processes
SCRAPES = 8
ROUTE = "/api/v1/status/{job_id}"


def status_404_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "levqor_http_requests_total" and sample.labels == {
                "method": "GET",
                "route": ROUTE,
                "status": "404",
            }:
                return sample.value
    return 0.0


def pids_with_samples(directory: Path) -> set[str]:
    return {path.stem.rsplit("_", 1)[1] for path in directory.glob("*.db")}


@pytest.mark.parametrize("db_kind", ["sqlite"], indirect=True)  # the metrics do not touch the database
def test_every_scrape_counts_the_requests_of_every_server_process(db_url: str, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    (metrics_dir).mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"a stale file of an earlier run")
    env = server_env(db_url, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    proc = start_server_process(env, tmp_path / "server.log", "--workers", "2")
    try:
        assert "1" not in pids_with_samples(metrics_dir)  # emptied at start
        sent = 0
        # A new connection each time, so that either process may take it.
        while sent < MAX_REQUESTS and (sent < 20 or len(pids_with_samples(metrics_dir)) < 2):
            assert httpx.get(f"{proc.url}/api/v1/status/{uuid.uuid4()}").status_code == 404
            sent += 1
        assert len(pids_with_samples(metrics_dir)) == 2, "one process took every connection"

        counts = {status_404_count(httpx.get(f"{proc.url}/metrics").text) for _ in range(SCRAPES)}
        assert counts == {sent}
        families = {f.name for f in text_string_to_metric_families(httpx.get(f"{proc.url}/metrics").text)}
        assert "levqor_jobs" in families  # the database collector runs in the answering process
    finally:
        stop_server_process(proc)
