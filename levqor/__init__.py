"""Levqor: job orchestration backend for AI automation, with validation and cost guardrails."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("levqor")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

SERVICE_NAME = "levqor-backend"
