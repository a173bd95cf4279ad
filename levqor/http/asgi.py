"""What uvicorn imports in each server process of `levqor serve`: the app and the HTTP protocol, with
settings from the environment."""

from __future__ import annotations

from starlette.applications import Starlette

from levqor.config import Settings
from levqor.http.app import create_app
from levqor.http.server_protocol import HeadLimitedProtocol
from levqor.logs import configure_logging


def app_from_env() -> Starlette:
    settings = Settings.from_env()
    configure_logging(settings.log_format)
    return create_app(settings)


# uvicorn takes the protocol by name (`--http levqor.http.asgi:ServerProtocol`), imported in each
# process, so its limits are read here.
ServerProtocol = HeadLimitedProtocol.with_limits(Settings.from_env())
