"""Settings, read once from the environment (and a `.env` file), typed, with safe defaults.

This is the only module that reads `os.environ`. `DATABASE_URL` is deliberately ignored: hosting
platforms set it for their own PostgreSQL, and the seed backend learned to keep its data apart
(`SQLITE_PATH`, or `LEVQOR_DATABASE_URL` for PostgreSQL).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

DEFAULT_PORT = 5000
DEFAULT_LEASE_S = 30
DEFAULT_POLL_INTERVAL_MS = 50  # how often idle workers look for jobs without a wake-up
# Jobs one worker process runs at once. Workflows are async and mostly wait on the network (model
# APIs, HTTP), so a process runs many; bench/queue.py shows throughput tripling from 10 to 50.
DEFAULT_WORKER_CONCURRENCY = 50
DEFAULT_SHUTDOWN_GRACE_S = 10  # how long a stopping worker lets running jobs finish before handing them back
DEFAULT_RETRY_BASE_MS = 1000  # backoff before the first retry (doubles per attempt, with jitter)
DEFAULT_RETRY_MAX_S = 3600  # the longest backoff between attempts
DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # 1 MiB
DEFAULT_MAX_HEADER_BYTES = 16 * 1024  # a request's whole head (request line and headers), as h11's default
DEFAULT_HEAD_TIMEOUT_S = 10  # how long a connection may take to send a request's head
DEFAULT_RATE_KEY = "600/minute"  # per API key, for callers with a valid key (CONTRACT.md §6)
DEFAULT_CALLBACK_RETRY_S = (5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_CORS_ORIGINS = ("https://levqor.ai",)


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _int(name: str, raw: str, *, minimum: int = 0) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _rate(name: str, raw: str) -> str:
    """Accept the seed's bare numbers (`20` = 20 per minute) and `limits` strings (`20/minute`)."""
    value = raw.strip()
    if value.isdigit():
        return f"{value}/minute"
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must be like '20/minute' or '20', not {raw!r}") from None
    return value


# The `limits` storages whose client libraries Levqor depends on.
RATE_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+cluster", "redis+sentinel")


def _rate_storage(raw: str) -> str:
    """A `limits` storage URI: `memory://`, `redis://host:6379/0`, `rediss://...` and the like."""
    value = raw.strip()
    scheme = value.split("://", 1)[0].removeprefix("async+") if "://" in value else ""
    if scheme not in RATE_STORAGE_SCHEMES:
        raise ConfigError(f"LEVQOR_RATE_STORAGE must be memory:// or a redis://host:port/db URI, not {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    sqlite_path: str = "levqor.db"
    database_url: str | None = None
    api_keys: tuple[str, ...] = ()
    rate_burst: str = "20/minute"
    rate_key: str = DEFAULT_RATE_KEY
    rate_worker: str = "6000/minute"
    rate_global: str = "200/minute"
    rate_storage: str = "memory://"
    # Prefix of the rate-limit keys in a shared storage, so deployments can share one Redis.
    rate_key_prefix: str = "levqor"
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    trusted_proxies: tuple[str, ...] = ()
    workers: int = 1
    inprocess_worker: bool = True
    lease_s: int = DEFAULT_LEASE_S
    poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS
    worker_concurrency: int = DEFAULT_WORKER_CONCURRENCY
    shutdown_grace_s: int = DEFAULT_SHUTDOWN_GRACE_S
    retry_base_ms: int = DEFAULT_RETRY_BASE_MS
    retry_max_s: int = DEFAULT_RETRY_MAX_S
    webhook_secret: str | None = None
    callback_allow_private: bool = False
    log_format: str = "json"
    callback_retry_s: tuple[int, ...] = DEFAULT_CALLBACK_RETRY_S
    workflow_modules: tuple[str, ...] = ()
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    head_timeout_s: int = DEFAULT_HEAD_TIMEOUT_S
    # prometheus-client's own variable: where server processes share their metrics (several workers).
    metrics_multiproc_dir: str | None = None

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL: PostgreSQL when configured, else the SQLite file."""
        if self.database_url:
            return _normalise_pg_url(self.database_url)
        return f"sqlite:///{Path(self.sqlite_path).expanduser()}"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, env_file: str | None = ".env") -> Settings:
        """Build settings from `environ` (default: the process environment over a `.env` file)."""
        values: dict[str, str] = {}
        if env_file and Path(env_file).is_file():
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> Settings:
        get = values.get
        env = (get("LEVQOR_ENV") or "development").strip().lower()
        if env not in {"development", "production"}:
            raise ConfigError(f"LEVQOR_ENV must be development or production, not {env!r}")
        log_format = (get("LEVQOR_LOG_FORMAT") or "json").strip().lower()
        if log_format not in {"json", "text"}:
            raise ConfigError(f"LEVQOR_LOG_FORMAT must be json or text, not {log_format!r}")
        proxies = _list(get("LEVQOR_TRUSTED_PROXIES", ""))
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(
                    f"LEVQOR_TRUSTED_PROXIES has {proxy!r}, not an address or network"
                ) from None
        retry = get("LEVQOR_CALLBACK_RETRY_S")
        settings = cls(
            env=env,
            # Development mode lets every request through: outside production, loopback only.
            host=get("LEVQOR_HOST") or ("0.0.0.0" if env == "production" else "127.0.0.1"),
            port=_int("PORT", get("PORT") or str(DEFAULT_PORT), minimum=1),
            sqlite_path=get("SQLITE_PATH") or "levqor.db",
            database_url=get("LEVQOR_DATABASE_URL") or None,
            api_keys=_list(get("API_KEYS", "")),
            rate_burst=_rate("RATE_BURST", get("RATE_BURST") or "20"),
            rate_key=_rate("LEVQOR_RATE_KEY", get("LEVQOR_RATE_KEY") or DEFAULT_RATE_KEY),
            rate_worker=_rate("LEVQOR_RATE_WORKER", get("LEVQOR_RATE_WORKER") or "6000"),
            rate_global=_rate("RATE_GLOBAL", get("RATE_GLOBAL") or "200"),
            rate_storage=_rate_storage(get("LEVQOR_RATE_STORAGE") or "memory://"),
            rate_key_prefix=get("LEVQOR_RATE_KEY_PREFIX") or "levqor",
            cors_origins=_list(get("LEVQOR_CORS_ORIGINS") or ",".join(DEFAULT_CORS_ORIGINS)),
            trusted_proxies=proxies,
            workers=_int("LEVQOR_WORKERS", get("LEVQOR_WORKERS") or "1", minimum=1),
            inprocess_worker=_bool("LEVQOR_INPROCESS_WORKER", get("LEVQOR_INPROCESS_WORKER") or "true"),
            lease_s=_int("LEVQOR_LEASE_S", get("LEVQOR_LEASE_S") or str(DEFAULT_LEASE_S), minimum=1),
            poll_interval_ms=_int(
                "LEVQOR_POLL_INTERVAL_MS",
                get("LEVQOR_POLL_INTERVAL_MS") or str(DEFAULT_POLL_INTERVAL_MS),
                minimum=1,
            ),
            worker_concurrency=_int(
                "LEVQOR_WORKER_CONCURRENCY",
                get("LEVQOR_WORKER_CONCURRENCY") or str(DEFAULT_WORKER_CONCURRENCY),
                minimum=1,
            ),
            shutdown_grace_s=_int(
                "LEVQOR_SHUTDOWN_GRACE_S", get("LEVQOR_SHUTDOWN_GRACE_S") or str(DEFAULT_SHUTDOWN_GRACE_S)
            ),
            retry_base_ms=_int(
                "LEVQOR_RETRY_BASE_MS", get("LEVQOR_RETRY_BASE_MS") or str(DEFAULT_RETRY_BASE_MS), minimum=1
            ),
            retry_max_s=_int(
                "LEVQOR_RETRY_MAX_S", get("LEVQOR_RETRY_MAX_S") or str(DEFAULT_RETRY_MAX_S), minimum=1
            ),
            webhook_secret=get("LEVQOR_WEBHOOK_SECRET") or None,
            callback_allow_private=_bool(
                "LEVQOR_CALLBACK_ALLOW_PRIVATE", get("LEVQOR_CALLBACK_ALLOW_PRIVATE") or "false"
            ),
            log_format=log_format,
            callback_retry_s=(
                tuple(_int("LEVQOR_CALLBACK_RETRY_S", part) for part in _list(retry))
                if retry
                else DEFAULT_CALLBACK_RETRY_S
            ),
            workflow_modules=_list(get("LEVQOR_WORKFLOWS", "")),
            llm_base_url=get("LEVQOR_LLM_BASE_URL") or None,
            llm_api_key=get("LEVQOR_LLM_API_KEY") or None,
            max_body_bytes=_int(
                "LEVQOR_MAX_BODY_BYTES",
                get("LEVQOR_MAX_BODY_BYTES") or str(DEFAULT_MAX_BODY_BYTES),
                minimum=1,
            ),
            max_header_bytes=_int(
                "LEVQOR_MAX_HEADER_BYTES",
                get("LEVQOR_MAX_HEADER_BYTES") or str(DEFAULT_MAX_HEADER_BYTES),
                minimum=1024,
            ),
            head_timeout_s=_int(
                "LEVQOR_HEAD_TIMEOUT_S",
                get("LEVQOR_HEAD_TIMEOUT_S") or str(DEFAULT_HEAD_TIMEOUT_S),
                minimum=1,
            ),
            metrics_multiproc_dir=get("PROMETHEUS_MULTIPROC_DIR") or None,
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that are unsafe in production."""
        # Production without any key is refused at server start (`levqor.http.app`), where the
        # database can be asked for managed keys too.
        if self.is_production and self.callback_allow_private:
            raise ConfigError("LEVQOR_CALLBACK_ALLOW_PRIVATE must not be true in production")


def _normalise_pg_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgres://` and `postgresql://` URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
