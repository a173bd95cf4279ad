"""The files of deploy/ are what their tools accept: the systemd units pass `systemd-analyze verify`
(pointed at this environment's `levqor`, which must exist for it), and the nginx site passes
`nginx -t` inside a main config that includes it as Debian's nginx.conf does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.deploy_support import (
    INSTALLED_LEVQOR,
    NGINX_SITE,
    SYSTEMD_UNITS,
    check_config,
    enable_tls,
    self_signed_certificate,
    site_for,
    tool,
    write_config,
)

LEVQOR = Path(sys.executable).parent / "levqor"
UNITS = ("levqor-serve@.service", "levqor-worker@.service", "levqor.target")
INSTANCES = {
    "levqor-serve@5001.service": "levqor-serve@.service",
    "levqor-worker@1.service": "levqor-worker@.service",
}


def units_in(directory: Path, levqor: Path) -> list[Path]:
    """Copies of the units with their command at `levqor`, and an instance of each template."""
    for name in UNITS:
        text = (SYSTEMD_UNITS / name).read_text()
        assert INSTALLED_LEVQOR in text or name.endswith(".target"), name
        (directory / name).write_text(text.replace(INSTALLED_LEVQOR, str(levqor)))
    for instance, template in INSTANCES.items():
        (directory / instance).symlink_to(directory / template)
    return [directory / name for name in (*INSTANCES, "levqor.target")]


def verify(units: list[Path]) -> subprocess.CompletedProcess[str]:
    command = [tool("systemd-analyze", "/usr/bin/systemd-analyze"), "verify", "--man=no", *map(str, units)]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def test_the_systemd_units_verify_without_a_warning(tmp_path: Path) -> None:
    result = verify(units_in(tmp_path, LEVQOR))
    # verify exits 0 on an unknown key or a bad value, with a warning: none may be printed.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a command that is not there, and a misspelt option, are reported."""
    units = units_in(tmp_path, tmp_path / "missing" / "levqor")
    worker = tmp_path / "levqor-worker@.service"
    worker.write_text(worker.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    result = verify(units)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "is not executable" in output
    assert "Unknown key 'NoNewPrivilege'" in output


def test_the_units_stop_gracefully_and_run_hardened() -> None:
    serve = (SYSTEMD_UNITS / "levqor-serve@.service").read_text()
    worker = (SYSTEMD_UNITS / "levqor-worker@.service").read_text()
    for unit in (serve, worker):
        for line in (
            "User=levqor",
            "EnvironmentFile=/etc/levqor/levqor.env",
            "KillSignal=SIGTERM",
            "Restart=always",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=",
        ):
            assert f"\n{line}\n" in unit, line
    assert "levqor serve --no-worker --no-migrate --host 127.0.0.1 --port %i\n" in serve
    # Longer than what each process takes to stop by itself: uvicorn's 30 s for open requests, the
    # worker's LEVQOR_SHUTDOWN_GRACE_S (10 s) and the hand-back.
    assert "\nTimeoutStopSec=45\n" in serve
    assert "\nTimeoutStopSec=30\n" in worker


def test_the_nginx_site_passes_nginx_t(tmp_path: Path) -> None:
    config = write_config(tmp_path / "nginx", [5001, 5002, 5003], 8080)
    result = check_config(tmp_path / "nginx", config)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_catches_a_broken_site(tmp_path: Path) -> None:
    prefix = tmp_path / "nginx"
    config = write_config(prefix, [5001], 8080)
    site = prefix / "levqor.conf"
    site.write_text(site.read_text().replace("proxy_buffering off;", "proxy_buffering sometimes;"))
    result = check_config(prefix, config)
    assert result.returncode != 0
    assert "proxy_buffering" in result.stderr


def test_the_site_is_pointed_at_the_test_ports_and_nothing_else_changes() -> None:
    shipped = NGINX_SITE.read_text()
    site = site_for([6001, 6002, 6003], 7000)
    assert "server 127.0.0.1:6001 max_fails=1 fail_timeout=5s;\n" in site
    assert site.count("server 127.0.0.1:600") == 3
    assert "listen 127.0.0.1:7000;" in site
    assert "\n    listen 80;\n" not in site
    assert "\n    listen [::]:80;\n" not in site

    def unchanged(text: str) -> list[str]:
        return [line for line in text.splitlines() if not ("server 127.0.0.1:" in line or "listen " in line)]

    assert unchanged(site) == unchanged(shipped)


@pytest.mark.parametrize("name", UNITS)
def test_the_units_are_installable_as_shipped(name: str) -> None:
    text = (SYSTEMD_UNITS / name).read_text()
    assert "\n[Install]\nWantedBy=" in text


@pytest.mark.parametrize(("required", "outcome"), [("1", "Failed"), ("", "Skipped")])
def test_a_missing_tool_fails_when_services_are_required(required: str, outcome: str) -> None:
    """As a missing PostgreSQL or Redis: under LEVQOR_REQUIRE_SERVICES=1 (.ci/run) the deploy and
    cluster tests fail without nginx or systemd-analyze, and skip without them otherwise."""
    probe = "from tests.deploy_support import tool; tool('levqor-no-such-tool')"
    env = {**os.environ, "LEVQOR_REQUIRE_SERVICES": required}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert f"{outcome}: levqor-no-such-tool is not reachable: not installed" in result.stderr


def test_the_site_with_tls_and_its_redirect_enabled_passes_nginx_t(tmp_path: Path) -> None:
    """The TLS part is ready to enable: uncommented as its comment says (the TLS lines, the redirect
    server, the plain `listen` lines of the main server gone), nginx accepts it without a warning."""
    certificate, key = self_signed_certificate(tmp_path)

    def enable(site: str) -> str:
        with_tls = enable_tls(site, certificate, key, 8443).replace("    listen 127.0.0.1:8080;\n", "")
        redirect = with_tls.index("# Plain HTTP to HTTPS")
        tail = "\n".join(line.removeprefix("# ") for line in with_tls[redirect:].splitlines()[1:])
        assert "return 301 https://$host$request_uri;" in tail
        return with_tls[:redirect] + tail.replace("listen 80;", "listen 127.0.0.1:8080;").replace(
            "listen [::]:80;", ""
        )

    prefix = tmp_path / "nginx"
    result = check_config(prefix, write_config(prefix, [5001, 5002], 8080, enable))
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr
    site = (prefix / "levqor.conf").read_text()
    assert "listen 127.0.0.1:8443 ssl http2;" in site
    assert "\n    listen 127.0.0.1:8080;\n" in site  # the redirect server's, alone on port 80
