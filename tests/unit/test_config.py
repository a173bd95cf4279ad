"""Settings (levqor/config.py): defaults, the seed's variable names, precedence, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from levqor.config import DEFAULT_CALLBACK_RETRY_S, ConfigError, Settings


def test_defaults() -> None:
    settings = Settings.from_mapping({})
    assert settings.env == "development"
    assert not settings.is_production
    # Development mode lets every request through, so outside production only loopback is served.
    assert (settings.host, settings.port) == ("127.0.0.1", 5000)
    assert Settings.from_mapping({"LEVQOR_ENV": "production", "API_KEYS": "k"}).host == "0.0.0.0"
    assert settings.sqlite_path == "levqor.db"
    assert settings.db_url == "sqlite:///levqor.db"
    assert settings.api_keys == ()
    assert (settings.rate_burst, settings.rate_global) == ("20/minute", "200/minute")
    assert settings.rate_storage == "memory://"
    assert settings.cors_origins == ("https://levqor.ai",)
    assert settings.trusted_proxies == ()
    assert settings.workers == 1
    assert settings.inprocess_worker is True
    assert settings.lease_s == 30
    assert settings.log_format == "json"
    assert settings.callback_allow_private is False
    assert settings.callback_retry_s == DEFAULT_CALLBACK_RETRY_S
    assert settings.max_body_bytes == 1024 * 1024
    assert (settings.max_header_bytes, settings.head_timeout_s) == (16 * 1024, 10)
    assert settings.rate_key == "600/minute"


def test_the_seed_variable_names() -> None:
    settings = Settings.from_mapping(
        {
            "API_KEYS": " k1, k2,,k3 ",
            "RATE_BURST": "50",
            "RATE_GLOBAL": "1000/hour",
            "SQLITE_PATH": "/srv/levqor/data.db",
            "PORT": "8080",
        }
    )
    assert settings.api_keys == ("k1", "k2", "k3")
    assert settings.rate_burst == "50/minute"  # the seed's bare number is per minute
    assert settings.rate_global == "1000/hour"
    assert settings.db_url == "sqlite:////srv/levqor/data.db"
    assert settings.port == 8080


def test_database_url_is_ignored() -> None:
    """Hosting platforms set DATABASE_URL for their own database; the seed learned to leave it alone."""
    settings = Settings.from_mapping({"DATABASE_URL": "postgresql://platform@db/theirs"})
    assert settings.database_url is None
    assert settings.db_url == "sqlite:///levqor.db"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/levqor", "postgresql+psycopg://u:p@h:5432/levqor"),
        ("postgres://u@h/levqor", "postgresql+psycopg://u@h/levqor"),
        ("postgresql+psycopg://u@h/levqor", "postgresql+psycopg://u@h/levqor"),
    ],
)
def test_levqor_database_url_wins_over_sqlite_path(url: str, expected: str) -> None:
    settings = Settings.from_mapping({"LEVQOR_DATABASE_URL": url, "SQLITE_PATH": "/tmp/other.db"})
    assert settings.db_url == expected


def test_sqlite_path_expands_the_home_directory() -> None:
    settings = Settings.from_mapping({"SQLITE_PATH": "~/levqor.db"})
    assert settings.db_url == f"sqlite:///{Path.home() / 'levqor.db'}"


def test_lists_and_booleans() -> None:
    settings = Settings.from_mapping(
        {
            "LEVQOR_CORS_ORIGINS": "https://a.example, https://b.example",
            "LEVQOR_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
            "LEVQOR_INPROCESS_WORKER": "no",
            "LEVQOR_CALLBACK_RETRY_S": "1, 2,3",
            "LEVQOR_ENV": " Production ",
            "API_KEYS": "k",
        }
    )
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")
    assert settings.inprocess_worker is False
    assert settings.callback_retry_s == (1, 2, 3)
    assert settings.is_production


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"PORT": "eighty"}, "PORT must be a whole number, not 'eighty'"),
        ({"PORT": "0"}, "PORT must be at least 1, not 0"),
        ({"LEVQOR_ENV": "staging"}, "LEVQOR_ENV must be development or production, not 'staging'"),
        ({"LEVQOR_LOG_FORMAT": "xml"}, "LEVQOR_LOG_FORMAT must be json or text, not 'xml'"),
        ({"RATE_BURST": "fast"}, "RATE_BURST must be like '20/minute' or '20', not 'fast'"),
        ({"RATE_GLOBAL": "10/fortnight"}, "RATE_GLOBAL must be like '20/minute' or '20'"),
        ({"LEVQOR_TRUSTED_PROXIES": "proxy.local"}, "LEVQOR_TRUSTED_PROXIES has 'proxy.local'"),
        ({"LEVQOR_INPROCESS_WORKER": "maybe"}, "LEVQOR_INPROCESS_WORKER must be true or false, not 'maybe'"),
        ({"LEVQOR_CALLBACK_RETRY_S": "5,soon"}, "LEVQOR_CALLBACK_RETRY_S must be a whole number, not 'soon'"),
        ({"LEVQOR_MAX_BODY_BYTES": "0"}, "LEVQOR_MAX_BODY_BYTES must be at least 1"),
        ({"LEVQOR_WORKERS": "-2"}, "LEVQOR_WORKERS must be at least 1"),
        ({"LEVQOR_LEASE_S": "1.5"}, "LEVQOR_LEASE_S must be a whole number"),
        ({"LEVQOR_MAX_HEADER_BYTES": "512"}, "LEVQOR_MAX_HEADER_BYTES must be at least 1024, not 512"),
        ({"LEVQOR_HEAD_TIMEOUT_S": "0"}, "LEVQOR_HEAD_TIMEOUT_S must be at least 1, not 0"),
        ({"LEVQOR_RATE_KEY": "lots"}, "LEVQOR_RATE_KEY must be like '20/minute' or '20', not 'lots'"),
        ({"LEVQOR_RATE_WORKER": "1/eon"}, "LEVQOR_RATE_WORKER must be like '20/minute' or '20'"),
        ({"LEVQOR_RATE_STORAGE": "memcached://h"}, "LEVQOR_RATE_STORAGE must be memory:// or a redis://"),
        ({"LEVQOR_CALLBACK_RETRY_S": "5,-1"}, "LEVQOR_CALLBACK_RETRY_S must be at least 0, not -1"),
        (
            {"LEVQOR_ENV": "production", "LEVQOR_CALLBACK_ALLOW_PRIVATE": "true"},
            "LEVQOR_CALLBACK_ALLOW_PRIVATE must not be true in production",
        ),
    ],
)
def test_bad_values_raise_a_clear_config_error(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_mapping(values)
    assert message in str(raised.value)


def test_a_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\n"
        "PORT=6001\n"
        'API_KEYS="from-file-1,from-file-2"\n'
        "export RATE_BURST=7\n"
        "SQLITE_PATH='/data/x.db'\n"
    )
    settings = Settings.from_env({}, env_file=str(env_file))
    assert settings.port == 6001
    assert settings.api_keys == ("from-file-1", "from-file-2")
    assert settings.rate_burst == "7/minute"
    assert settings.db_url == "sqlite:////data/x.db"


def test_the_environment_wins_over_the_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=6001\nLEVQOR_LOG_FORMAT=text\n")
    assert Settings.from_env({"PORT": "7002"}, env_file=str(env_file)).port == 7002

    monkeypatch.delenv("LEVQOR_LOG_FORMAT", raising=False)
    monkeypatch.setenv("PORT", "7003")
    settings = Settings.from_env(env_file=str(env_file))
    assert settings.port == 7003
    assert settings.log_format == "text"  # still from the file: the environment does not set it


def test_a_missing_dotenv_file_is_fine(tmp_path: Path) -> None:
    assert Settings.from_env({"PORT": "7004"}, env_file=str(tmp_path / "absent.env")).port == 7004


def test_a_bad_value_in_the_dotenv_file_is_refused(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LEVQOR_ENV=prod\n")
    with pytest.raises(ConfigError, match="LEVQOR_ENV must be development or production"):
        Settings.from_env({}, env_file=str(env_file))


def test_the_request_head_and_key_rate_settings() -> None:
    settings = Settings.from_mapping(
        {
            "LEVQOR_MAX_HEADER_BYTES": "1024",
            "LEVQOR_HEAD_TIMEOUT_S": "3",
            "LEVQOR_RATE_KEY": "5000",
            "LEVQOR_RATE_WORKER": "10/second",
            "LEVQOR_RATE_STORAGE": "redis://cache:6379/1",
        }
    )
    assert (settings.max_header_bytes, settings.head_timeout_s) == (1024, 3)
    assert settings.rate_key == "5000/minute"
    assert settings.rate_worker == "10/second"
    assert settings.rate_storage == "redis://cache:6379/1"


def test_the_host_default_follows_the_environment_unless_set() -> None:
    production = {"LEVQOR_ENV": "production", "API_KEYS": "k"}
    assert Settings.from_mapping({**production, "LEVQOR_HOST": "10.1.2.3"}).host == "10.1.2.3"
    assert Settings.from_mapping({"LEVQOR_HOST": "0.0.0.0"}).host == "0.0.0.0"
    assert Settings(env="production").host == "0.0.0.0"
    assert Settings().host == "127.0.0.1"


def test_lists_in_the_environment_are_comma_separated_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "k1, k2")
    monkeypatch.setenv("LEVQOR_WORKFLOWS", "pkg.one,pkg.two")
    monkeypatch.setenv("LEVQOR_CALLBACK_RETRY_S", "1,2")
    settings = Settings.from_env(env_file=None)
    assert settings.api_keys == ("k1", "k2")
    assert settings.workflow_modules == ("pkg.one", "pkg.two")
    assert settings.callback_retry_s == (1, 2)


def test_empty_values_and_other_names_are_ignored() -> None:
    settings = Settings.from_mapping(
        {"PORT": "", "LEVQOR_CORS_ORIGINS": " ", "port": "1", "LEVQOR_PORT": "2"}
    )
    assert settings.port == 5000
    assert settings.cors_origins == ("https://levqor.ai",)


def test_keyword_construction_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "7100")
    monkeypatch.setenv("LEVQOR_ENV", "production")
    monkeypatch.chdir(Path(__file__).parent)  # no `.env` here either
    settings = Settings(sqlite_path="/tmp/t.db", api_keys=("k1", "k2"))
    assert (settings.port, settings.env) == (5000, "development")
    assert settings.api_keys == ("k1", "k2")
    assert Settings.from_env(env_file=None).port == 7100


def test_settings_are_immutable_and_overrides_are_validated() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]
    changed = settings.with_overrides(port=8000, trusted_proxies=("10.0.0.0/8",), rate_burst="30")
    assert (changed.port, changed.trusted_proxies, changed.rate_burst) == (8000, ("10.0.0.0/8",), "30/minute")
    assert settings.port == 5000
    with pytest.raises(ConfigError, match="PORT must be at least 1, not 0"):
        settings.with_overrides(port=0)
    with pytest.raises(TypeError, match="no field prot"):
        settings.with_overrides(prot=1)


def test_the_example_env_file_lists_every_variable_with_its_default() -> None:
    example = Path(__file__).parents[2] / ".env.example"
    listed = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert listed == {str(field.validation_alias) for field in Settings.model_fields.values()}
    assert Settings.from_env({}, env_file=str(example)) == Settings()
