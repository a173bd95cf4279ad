"""Settings, read once from the environment (and a `.env` file), typed, with safe defaults.

This is the only module that reads `os.environ`. `DATABASE_URL` is deliberately ignored: hosting
platforms set it for their own PostgreSQL, and the seed backend learned to keep its data apart
(`SQLITE_PATH`, or `LEVQOR_DATABASE_URL` for PostgreSQL).

Each field's `validation_alias` is the variable it is read from; code and tests build `Settings(...)`
by field name. `Settings(...)` reads only its arguments: the environment is read by `from_env`.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from levqor.costs.prices import ModelPrice, parse_prices, price_table

DEFAULT_PORT = 5000
DEFAULT_LEASE_S = 30
DEFAULT_POLL_INTERVAL_MS = 50  # how often idle workers look for jobs without a wake-up
# Jobs one worker process runs at once. Workflows are async and mostly wait on the network (model
# APIs, HTTP), so a process runs many. A worker claims and reports in batches of up to its free
# slots, so this is its batch size too: no-op jobs, 2 workers, 20,000 jobs drained 5,300/s at 50 and
# 9,700/s at 200 on PostgreSQL, 8,000/s and 10,000/s on SQLite (bench/README.md, bench/queue.py).
DEFAULT_WORKER_CONCURRENCY = 200
DEFAULT_SHUTDOWN_GRACE_S = 10  # how long a stopping worker lets running jobs finish before handing them back
DEFAULT_RETRY_BASE_MS = 1000  # backoff before the first retry (doubles per attempt, with jitter)
DEFAULT_RETRY_MAX_S = 3600  # the longest backoff between attempts
DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # 1 MiB
DEFAULT_MAX_HEADER_BYTES = 16 * 1024  # a request's whole head (request line and headers), as h11's default
DEFAULT_HEAD_TIMEOUT_S = 10  # how long a connection may take to send a request's head
DEFAULT_RATE_KEY = "600/minute"  # per API key, for callers with a valid key (CONTRACT.md §6)
DEFAULT_CALLBACK_RETRY_S = (5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_CALLBACK_TIMEOUT_S = 15.0  # CONTRACT.md §8: 2xx within 15 s is delivered
DEFAULT_CALLBACK_FAILING_AFTER_S = 5 * 24 * 3600  # an endpoint failing this long is marked failing
DEFAULT_CALLBACK_CONCURRENCY = 64  # deliveries in flight per worker process
DEFAULT_WEBHOOK_OVERLAP_S = 24 * 3600  # both secrets sign for this long after a rotation
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
DEFAULT_JOB_UPDATES_POLL_MS = 100  # how often a live job stream looks for new events without NOTIFY
DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION = 20
DEFAULT_MAX_SUBSCRIPTIONS_PER_KEY = 100  # live streams (GraphQL and SSE) of one caller, per process
DEFAULT_SCHEDULER_INTERVAL_MS = 1000  # how often a process's scheduler looks for due schedules
DEFAULT_SCHEDULER_GRACE_S = 60  # a tick fired up to this late is on time; older ones are missed
DEFAULT_RETENTION_DAYS = 0  # keep finished jobs forever: pruning deletes history, so the operator opts in
DEFAULT_PRUNE_INTERVAL_S = 600  # how often a process prunes when retention is on
DEFAULT_CORS_ORIGINS = ("https://levqor.ai",)
MIN_SESSION_SECRET_CHARS = 32  # e.g. `python -c "import secrets; print(secrets.token_urlsafe(32))"`
DEFAULT_LLM_BASE_URL = "https://api.openai.com/v1"
DEFAULT_LLM_TIMEOUT_S = 120.0  # one chat completion, streamed or not, from connecting to the last byte
MAX_LLM_TIMEOUT_S = 600
MAX_RUNNING_LIMIT = 100_000  # the most jobs a concurrency limit may allow at once (key or workflow)

# The `limits` storages whose client libraries Levqor depends on.
RATE_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+cluster", "redis+sentinel")


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


# A comma-separated variable (`API_KEYS=k1,k2`): NoDecode keeps pydantic-settings from reading it as JSON.
CommaList = Annotated[tuple[str, ...], NoDecode]
Seconds = Annotated[int, Field(ge=0)]


def _default_host(data: dict[str, Any]) -> str:
    # Development mode lets every request through: outside production, loopback only.
    return "0.0.0.0" if data.get("env") == "production" else "127.0.0.1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,  # `PORT`, not `port`: the variables are read by their exact names
        env_ignore_empty=True,  # `PORT=` means the default, as in the seed
        extra="ignore",  # a `.env` file may hold variables for other programs
        validate_by_name=True,
        validate_by_alias=True,
    )

    env: Literal["development", "production"] = Field("development", validation_alias="LEVQOR_ENV")
    host: str = Field(default_factory=_default_host, validation_alias="LEVQOR_HOST")
    port: int = Field(DEFAULT_PORT, ge=1, validation_alias="PORT")
    sqlite_path: str = Field("levqor.db", validation_alias="SQLITE_PATH")
    database_url: str | None = Field(None, validation_alias="LEVQOR_DATABASE_URL")
    api_keys: CommaList = Field((), validation_alias="API_KEYS")
    rate_burst: str = Field("20/minute", validation_alias="RATE_BURST")
    rate_key: str = Field(DEFAULT_RATE_KEY, validation_alias="LEVQOR_RATE_KEY")
    rate_worker: str = Field("6000/minute", validation_alias="LEVQOR_RATE_WORKER")
    rate_global: str = Field("200/minute", validation_alias="RATE_GLOBAL")
    rate_storage: str = Field("memory://", validation_alias="LEVQOR_RATE_STORAGE")
    # Prefix of the rate-limit keys in a shared storage, so deployments can share one Redis.
    rate_key_prefix: str = Field("levqor", validation_alias="LEVQOR_RATE_KEY_PREFIX")
    cors_origins: CommaList = Field(DEFAULT_CORS_ORIGINS, validation_alias="LEVQOR_CORS_ORIGINS")
    trusted_proxies: CommaList = Field((), validation_alias="LEVQOR_TRUSTED_PROXIES")
    workers: int = Field(1, ge=1, validation_alias="LEVQOR_WORKERS")
    inprocess_worker: bool = Field(True, validation_alias="LEVQOR_INPROCESS_WORKER")
    lease_s: int = Field(DEFAULT_LEASE_S, ge=1, validation_alias="LEVQOR_LEASE_S")
    poll_interval_ms: int = Field(DEFAULT_POLL_INTERVAL_MS, ge=1, validation_alias="LEVQOR_POLL_INTERVAL_MS")
    worker_concurrency: int = Field(
        DEFAULT_WORKER_CONCURRENCY, ge=1, validation_alias="LEVQOR_WORKER_CONCURRENCY"
    )
    shutdown_grace_s: int = Field(DEFAULT_SHUTDOWN_GRACE_S, ge=0, validation_alias="LEVQOR_SHUTDOWN_GRACE_S")
    retry_base_ms: int = Field(DEFAULT_RETRY_BASE_MS, ge=1, validation_alias="LEVQOR_RETRY_BASE_MS")
    retry_max_s: int = Field(DEFAULT_RETRY_MAX_S, ge=1, validation_alias="LEVQOR_RETRY_MAX_S")
    # Signs the callbacks of jobs submitted without a managed key (`whsec_` and base64 of 24-64 bytes).
    webhook_secret: str | None = Field(None, validation_alias="LEVQOR_WEBHOOK_SECRET")
    callback_allow_private: bool = Field(False, validation_alias="LEVQOR_CALLBACK_ALLOW_PRIVATE")
    # Signs the dashboard's session cookies (levqor/dashboard/session.py); required in production.
    session_secret: SecretStr | None = Field(None, validation_alias="LEVQOR_SESSION_SECRET")
    # The waits before each retry of a delivery; once they are used up, it has failed.
    callback_retry_s: Annotated[tuple[Seconds, ...], NoDecode] = Field(
        DEFAULT_CALLBACK_RETRY_S, validation_alias="LEVQOR_CALLBACK_RETRY_S"
    )
    callback_timeout_s: float = Field(
        DEFAULT_CALLBACK_TIMEOUT_S, gt=0, le=60, validation_alias="LEVQOR_CALLBACK_TIMEOUT_S"
    )
    callback_failing_after_s: int = Field(
        DEFAULT_CALLBACK_FAILING_AFTER_S, ge=1, validation_alias="LEVQOR_CALLBACK_FAILING_AFTER_S"
    )
    callback_concurrency: int = Field(
        DEFAULT_CALLBACK_CONCURRENCY, ge=1, le=1000, validation_alias="LEVQOR_CALLBACK_CONCURRENCY"
    )
    job_updates_poll_ms: int = Field(
        DEFAULT_JOB_UPDATES_POLL_MS, ge=10, validation_alias="LEVQOR_JOB_UPDATES_POLL_MS"
    )
    max_subscriptions_per_connection: int = Field(
        DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
        ge=1,
        validation_alias="LEVQOR_MAX_SUBSCRIPTIONS_PER_CONNECTION",
    )
    max_subscriptions_per_key: int = Field(
        DEFAULT_MAX_SUBSCRIPTIONS_PER_KEY, ge=1, validation_alias="LEVQOR_MAX_SUBSCRIPTIONS_PER_KEY"
    )
    # Every `levqor serve` and `levqor worker` process runs the scheduler loop unless this is false;
    # any number of them fire each tick once (levqor/resolvers/schedule_fires.py).
    scheduler: bool = Field(True, validation_alias="LEVQOR_SCHEDULER")
    scheduler_interval_ms: int = Field(
        DEFAULT_SCHEDULER_INTERVAL_MS, ge=10, le=60_000, validation_alias="LEVQOR_SCHEDULER_INTERVAL_MS"
    )
    scheduler_grace_s: int = Field(
        DEFAULT_SCHEDULER_GRACE_S, ge=0, le=86_400, validation_alias="LEVQOR_SCHEDULER_GRACE_S"
    )
    # Finished jobs (and whole finished runs) older than this many days are deleted with their events
    # and callback deliveries (levqor/queue/retention.py); 0 keeps them forever.
    retention_days: int = Field(DEFAULT_RETENTION_DAYS, ge=0, validation_alias="LEVQOR_RETENTION_DAYS")
    prune_interval_s: int = Field(
        DEFAULT_PRUNE_INTERVAL_S, ge=1, le=86_400, validation_alias="LEVQOR_PRUNE_INTERVAL_S"
    )
    log_format: Literal["json", "text"] = Field("json", validation_alias="LEVQOR_LOG_FORMAT")
    workflow_modules: CommaList = Field((), validation_alias="LEVQOR_WORKFLOWS")
    # Jobs of a workflow that may run at once, over the workflows' own `max_running`
    # (`llm.chat=4,other=2`); (workflow, limit) pairs in name order, so settings stay hashable.
    workflow_max_running: Annotated[tuple[tuple[str, int], ...], NoDecode] = Field(
        (), validation_alias="LEVQOR_WORKFLOW_MAX_RUNNING"
    )
    # The `llm.chat` workflow's chat-completions API: None is DEFAULT_LLM_BASE_URL, reached through
    # the outbound guard; a base URL the operator sets is trusted, private addresses included.
    llm_base_url: str | None = Field(None, validation_alias="LEVQOR_LLM_BASE_URL")
    llm_api_key: SecretStr | None = Field(None, validation_alias="LEVQOR_LLM_API_KEY")
    # Prices per model over the built-in defaults (levqor/costs/prices.py), USD per 1M tokens.
    # (model, price) pairs in model order, so settings stay hashable; `llm_price_table` is the lookup.
    llm_prices: Annotated[tuple[tuple[str, ModelPrice], ...], NoDecode] = Field(
        (), validation_alias="LEVQOR_LLM_PRICES"
    )
    llm_timeout_s: float = Field(
        DEFAULT_LLM_TIMEOUT_S, gt=0, le=MAX_LLM_TIMEOUT_S, validation_alias="LEVQOR_LLM_TIMEOUT_S"
    )
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1, validation_alias="LEVQOR_MAX_BODY_BYTES")
    max_header_bytes: int = Field(
        DEFAULT_MAX_HEADER_BYTES, ge=1024, validation_alias="LEVQOR_MAX_HEADER_BYTES"
    )
    head_timeout_s: int = Field(DEFAULT_HEAD_TIMEOUT_S, ge=1, validation_alias="LEVQOR_HEAD_TIMEOUT_S")
    # prometheus-client's own variable: where server processes share their metrics (several workers).
    metrics_multiproc_dir: str | None = Field(None, validation_alias="PROMETHEUS_MULTIPROC_DIR")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `Settings(...)` is the defaults and its arguments; `from_env` reads the environment.
        return (init_settings,)

    @field_validator("env", "log_format", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "api_keys", "cors_origins", "trusted_proxies", "workflow_modules", "callback_retry_s", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("rate_burst", "rate_key", "rate_worker", "rate_global", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        """Accept the seed's bare numbers (`20` = 20 per minute) and `limits` strings (`20/minute`)."""
        if not isinstance(value, str):
            return value
        rate = value.strip()
        if rate.isdigit():
            return f"{rate}/minute"
        from limits import parse_many

        try:
            parse_many(rate)
        except ValueError:
            raise ValueError(f"must be like '20/minute' or '20', not {value!r}") from None
        return rate

    @field_validator("rate_storage")
    @classmethod
    def _rate_storage(cls, value: str) -> str:
        """A `limits` storage URI: `memory://`, `redis://host:6379/0`, `rediss://...` and the like."""
        uri = value.strip()
        scheme = uri.split("://", 1)[0].removeprefix("async+") if "://" in uri else ""
        if scheme not in RATE_STORAGE_SCHEMES:
            raise ValueError(f"must be memory:// or a redis://host:port/db URI, not {value!r}")
        return uri

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: str | None) -> str | None:
        """A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 random bytes."""
        if value is None:
            return None
        secret = value.strip()
        try:
            key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
        except ValueError:
            key = b""
        if not secret.startswith(WEBHOOK_SECRET_PREFIX) or not 24 <= len(key) <= 64:
            # The value is not echoed: it is a secret.
            raise ValueError("must be 'whsec_' and the base64 of 24 to 64 random bytes")
        return secret

    @field_validator("session_secret")
    @classmethod
    def _session_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_SESSION_SECRET_CHARS:
            # The value is not echoed: it is a secret.
            raise ValueError(f"must be at least {MIN_SESSION_SECRET_CHARS} characters")
        return value

    @field_validator("llm_base_url")
    @classmethod
    def _llm_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip().rstrip("/")
        scheme, _, rest = url.partition("://")
        if scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
            raise ValueError(f"must be an http(s) URL like {DEFAULT_LLM_BASE_URL}, not {value!r}")
        return url

    @field_validator("llm_prices", mode="before")
    @classmethod
    def _llm_prices(cls, value: Any) -> Any:
        return tuple(sorted(parse_prices(value).items()))

    @field_validator("workflow_max_running", mode="before")
    @classmethod
    def _workflow_max_running(cls, value: Any) -> Any:
        """`name=N,...` with N a whole number from 1 to MAX_RUNNING_LIMIT."""
        if not isinstance(value, str):
            return value
        limits: dict[str, int] = {}
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            name, sep, number = (piece.strip() for piece in item.partition("="))
            if not sep or not name or not number.isdigit() or not 1 <= int(number) <= MAX_RUNNING_LIMIT:
                raise ValueError(
                    f"must be like 'llm.chat=4,other=2' (limits 1 to {MAX_RUNNING_LIMIT}), not {item!r}"
                )
            if name in limits:
                raise ValueError(f"names workflow {name!r} twice")
            limits[name] = int(number)
        return tuple(sorted(limits.items()))

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: tuple[str, ...]) -> tuple[str, ...]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"has {proxy!r}, not an address or network") from None
        return proxies

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def llm_price_table(self) -> dict[str, ModelPrice]:
        """The `llm.chat` prices: the built-in defaults, overridden and extended by LEVQOR_LLM_PRICES."""
        return price_table(dict(self.llm_prices))

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL: PostgreSQL when configured, else the SQLite file."""
        if self.database_url:
            return _normalise_pg_url(self.database_url)
        return f"sqlite:///{Path(self.sqlite_path).expanduser()}"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with `changes` (by field name), validated like the original."""
        unknown = sorted(changes.keys() - type(self).model_fields.keys())
        if unknown:
            raise TypeError(f"Settings has no field {', '.join(unknown)}")
        return _validated(type(self), {**self.model_dump(), **changes})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, env_file: str | None = ".env") -> Settings:
        """Build settings from `environ` (default: the process environment) over a `.env` file."""
        values: dict[str, Any] = {}
        if env_file:
            values.update(DotEnvSettingsSource(cls, env_file=env_file)())
        values.update(EnvSettingsSource(cls)() if environ is None else environ)
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build settings from variables (`PORT`, `LEVQOR_ENV`, ...); unset or empty ones are defaults."""
        variables = {
            name: value
            for name in _VARIABLES.values()
            if (value := values.get(name)) is not None and not (isinstance(value, str) and not value.strip())
        }
        settings = _validated(cls, variables)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that are unsafe in production."""
        # Production without any key is refused at server start (`levqor.http.app`), where the
        # database can be asked for managed keys too.
        if self.is_production and self.callback_allow_private:
            raise ConfigError("LEVQOR_CALLBACK_ALLOW_PRIVATE must not be true in production")


# Field name -> the variable it is read from.
_VARIABLES: dict[str, str] = {
    name: str(field.validation_alias) for name, field in Settings.model_fields.items()
}


def _validated(cls: type[Settings], values: Mapping[str, Any]) -> Settings:
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        # `host`'s default depends on `env`: a bad LEVQOR_ENV also reports the default it could not make.
        problems = [
            _describe(error) for error in exc.errors() if error["type"] != "default_factory_not_called"
        ]
        raise ConfigError("; ".join(problems)) from None


def _describe(error: ErrorDetails) -> str:
    """One validation error as a sentence naming the variable and the value it had."""
    field = str(error["loc"][0]) if error["loc"] else ""
    name = _VARIABLES.get(field, field)
    value = error.get("input")
    ctx = error.get("ctx", {})
    kind = error["type"]
    if kind in {"int_parsing", "int_from_float", "int_type"}:
        return f"{name} must be a whole number, not {value!r}"
    if kind == "greater_than_equal":
        return f"{name} must be at least {ctx['ge']}, not {value}"
    if kind in {"bool_parsing", "bool_type"}:
        return f"{name} must be true or false, not {value!r}"
    if kind == "literal_error":
        return f"{name} must be {str(ctx['expected']).replace(chr(39), '')}, not {value!r}"
    if kind == "value_error":
        return f"{name} {ctx['error']}"
    return f"{name}: {error['msg']}, not {value!r}"


def _normalise_pg_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgres://` and `postgresql://` URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
