"""nginx with the deploy/ site, as the tests run it: the site file as shipped, its upstream and listen
lines pointed at the test's ports, inside a small main config of the test's own (a temp prefix for
the pid, logs and buffers), run in the foreground as a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port, service_unavailable

DEPLOY = ROOT / "deploy"
NGINX_SITE = DEPLOY / "nginx" / "levqor.conf"
SYSTEMD_UNITS = DEPLOY / "systemd"
INSTALLED_LEVQOR = "/opt/levqor/venv/bin/levqor"  # where the units expect the command

UPSTREAM_SERVER = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+( [^;]*)?;\n", re.MULTILINE)
LISTEN = re.compile(r"^(\s*)listen (80|\[::\]:80);\n", re.MULTILINE)
# The commented lines of the site's TLS part, inside its server.
TLS_LINES = ("# listen 443 ", "# listen [::]:443 ", "# ssl_", "# add_header Strict-Transport-Security")


def tool(name: str, *candidates: str) -> str:
    """The path of a system tool; a missing one skips, or fails under LEVQOR_REQUIRE_SERVICES=1."""
    found = shutil.which(name) or next((path for path in candidates if os.access(path, os.X_OK)), None)
    if found is None:
        service_unavailable(name, "not installed (apt-get install nginx; systemd-analyze is in systemd)")
        raise AssertionError("unreachable")
    return found


def nginx_binary() -> str:
    return tool("nginx", "/usr/sbin/nginx")


def site_for(upstream_ports: list[int], listen_port: int) -> str:
    """The shipped site with its upstream servers on `upstream_ports` and listening on loopback at
    `listen_port`; everything else (limits, timeouts, headers, locations) as it ships."""
    site = NGINX_SITE.read_text()
    servers = UPSTREAM_SERVER.findall(site)
    assert servers, "the site's upstream has no `server 127.0.0.1:PORT` line"
    indent, options = servers[0]
    lines = "".join(f"{indent}server 127.0.0.1:{port}{options};\n" for port in upstream_ports)
    site = UPSTREAM_SERVER.sub("", site, count=len(servers) - 1)
    site = UPSTREAM_SERVER.sub(lines, site, count=1)
    listens = LISTEN.findall(site)
    assert [port for _, port in listens] == ["80", "[::]:80"], listens
    site = LISTEN.sub(lambda match: f"{match.group(1)}listen 127.0.0.1:{listen_port};\n", site, count=1)
    return LISTEN.sub("", site)


def main_config(prefix: Path, site: Path) -> str:
    """What Debian's nginx.conf gives a site, with every path the process writes under `prefix`."""
    # As root (CI), the worker processes would run as `nobody` and could not enter the temp prefix.
    user = "user root;\n" if os.geteuid() == 0 else ""
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "\n".join(f"    {kind}_temp_path {prefix}/{kind}_temp;" for kind in kinds)
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log {prefix}/access.log;
{temp}
    include {site};
}}
"""


@dataclass
class Nginx:
    url: str
    process: subprocess.Popen[bytes]
    prefix: Path

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def enable_tls(site: str, certificate: Path, key: Path, port: int) -> str:
    """The site with its TLS lines uncommented, as its comment says to, on loopback at `port`."""
    lines = []
    for line in site.splitlines(keepends=True):
        if line.lstrip().startswith(TLS_LINES):
            line = line.replace("# ", "", 1)
        lines.append(line)
    enabled = "".join(lines)
    assert "    listen 443 ssl http2;\n" in enabled, "the site has no TLS lines to uncomment"
    enabled = enabled.replace("    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{port} ssl http2;\n")
    enabled = enabled.replace("    listen [::]:443 ssl http2;\n", "")
    enabled = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {certificate};", enabled)
    return re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", enabled)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl."""
    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            tool("openssl", "/usr/bin/openssl"),
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(certificate)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return certificate, key


def write_config(
    prefix: Path, upstream_ports: list[int], listen_port: int, edit: Callable[[str], str] | None = None
) -> Path:
    """The test's main config and the site it includes (changed by `edit` when given)."""
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / "levqor.conf"
    text = site_for(upstream_ports, listen_port)
    site.write_text(edit(text) if edit else text)
    config = prefix / "nginx.conf"
    config.write_text(main_config(prefix, site))
    return config


def nginx_command(prefix: Path, config: Path, *args: str) -> list[str]:
    return [nginx_binary(), "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(config), *args]


def check_config(prefix: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the test's config."""
    return subprocess.run(
        nginx_command(prefix, config, "-t"), capture_output=True, text=True, check=False, timeout=30
    )


def start_nginx(prefix: Path, upstream_ports: list[int], edit: Callable[[str], str] | None = None) -> Nginx:
    """nginx with the site in front of `upstream_ports`, in the foreground, on a free loopback port;
    returns once it answers."""
    port = free_port()
    config = write_config(prefix, upstream_ports, port, edit)
    with (prefix / "nginx.out").open("wb") as out:
        process = subprocess.Popen(
            nginx_command(prefix, config, "-g", "daemon off;"), stdout=out, stderr=subprocess.STDOUT
        )
    proxy = Nginx(url=f"http://127.0.0.1:{port}", process=process, prefix=prefix)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{proxy.error_log()}")
        try:
            httpx.get(f"{proxy.url}/health", timeout=1)
            return proxy
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proxy.stop()
                raise RuntimeError(f"nginx did not answer:\n{proxy.error_log()}") from None
            time.sleep(0.05)
