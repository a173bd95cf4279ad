"""The entry point uvicorn imports in each server process: settings from the environment."""

from __future__ import annotations

from starlette.applications import Starlette

from levqor.config import Settings
from levqor.http.app import create_app
from levqor.logs import configure_logging


def app_from_env() -> Starlette:
    settings = Settings.from_env()
    configure_logging(settings.log_format)
    return create_app(settings)
