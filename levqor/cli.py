"""The `levqor` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from levqor import __version__
from levqor.config import DEFAULT_PORT, DEFAULT_WORKER_CONCURRENCY, ConfigError, Settings

logger = logging.getLogger("levqor.cli")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"levqor: {exc}")


def cmd_migrate(args: argparse.Namespace) -> int:
    from levqor.db.engine import create_db_engine
    from levqor.db.migrate import upgrade

    settings = _settings()
    engine = create_db_engine(settings.db_url)
    try:
        upgrade(engine, args.revision)
    finally:
        engine.dispose()
    print(f"migrated {engine.url.render_as_string(hide_password=True)} to {args.revision}")
    return 0


def http_protocol() -> str:
    """uvicorn's httptools protocol with Levqor's head limits (levqor.http.server_protocol), by name,
    so that each server process (--workers) imports it with the environment's settings."""
    return "levqor.http.asgi:ServerProtocol"


def raise_open_files_limit() -> None:
    """Every connection holds a file descriptor: serve with the soft limit raised to the hard one, as
    servers do, so a burst of slow clients does not run the process out of them early."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        logger.warning("could not raise the open-files limit", extra={"soft": soft, "hard": hard})


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from levqor.http.app import check_startup
    from levqor.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_format)
    if not args.no_migrate:
        cmd_migrate(argparse.Namespace(revision="head"))
    if settings.is_production:
        # Production needs a key (without API_KEYS, an active managed key) and a session secret.
        # Refuse before serving.
        from levqor.db.engine import Database

        db = Database(settings.db_url, pool_size=1)
        try:
            check_startup(settings, db)
        except ConfigError as exc:
            sys.exit(f"levqor: {exc}")
        finally:
            db.dispose()
    if args.no_worker:
        # Each server process builds its settings from the environment (uvicorn's app factory).
        os.environ["LEVQOR_INPROCESS_WORKER"] = "false"
    if settings.session_secret is None:
        # One secret for every server process of this start (they inherit the environment), so a
        # sign-in holds whichever process answers; a new start signs everyone out.
        import secrets

        os.environ["LEVQOR_SESSION_SECRET"] = secrets.token_urlsafe(32)
        logger.warning("LEVQOR_SESSION_SECRET is not set: dashboard sign-ins last until this server stops")
    from levqor.http.metrics import multiprocess_metrics

    workers = args.workers or settings.workers
    raise_open_files_limit()
    with multiprocess_metrics(settings, workers):
        uvicorn.run(
            "levqor.http.asgi:app_from_env",
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=workers,
            log_config=None,
            access_log=False,  # Levqor writes its own (levqor.http.request_context)
            proxy_headers=False,  # X-Forwarded-For is trusted only from LEVQOR_TRUSTED_PROXIES
            server_header=False,
            timeout_graceful_shutdown=30,
            http=http_protocol(),
        )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio

    from levqor.logs import configure_logging
    from levqor.worker import run_standalone

    settings = _settings()
    configure_logging(settings.log_format)
    if args.concurrency is not None and args.concurrency < 1:
        sys.exit("levqor: --concurrency must be at least 1")
    names = [name.strip() for name in (args.workflows or "").split(",") if name.strip()]
    try:
        asyncio.run(run_standalone(settings, concurrency=args.concurrency, workflows=names or None))
    except ConfigError as exc:
        sys.exit(f"levqor: {exc}")
    return 0


def cmd_export_schema(args: argparse.Namespace) -> int:
    from levqor.schema import sdl

    text = sdl()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from levqor.db.backup import BackupError, backup_database

    try:
        path = backup_database(_settings().db_url, Path(args.dir))
    except BackupError as exc:
        sys.exit(f"levqor: {exc}")
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="levqor", description="Levqor job orchestration backend.")
    parser.add_argument("--version", action="version", version=f"levqor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the API server", description="Migrate, then serve the API."
    )
    serve.add_argument(
        "--host", help="address to bind (default: LEVQOR_HOST, else 127.0.0.1; 0.0.0.0 in production)"
    )
    serve.add_argument("--port", type=int, help=f"port (default: PORT or {DEFAULT_PORT})")
    serve.add_argument("--workers", type=int, help="server processes (default: LEVQOR_WORKERS or 1)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")
    serve.add_argument(
        "--no-worker", action="store_true", help="run no in-process worker (as LEVQOR_INPROCESS_WORKER=false)"
    )
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser(
        "worker",
        help="run a worker process",
        description="Run jobs until SIGTERM or SIGINT, then stop gracefully: running jobs get "
        "LEVQOR_SHUTDOWN_GRACE_S seconds to finish and the rest go back to the queue.",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        help=f"jobs run at once (default: LEVQOR_WORKER_CONCURRENCY or {DEFAULT_WORKER_CONCURRENCY})",
    )
    worker.add_argument(
        "--workflows", help="comma-separated workflows to run (default: every one with a handler here)"
    )
    worker.set_defaults(func=cmd_worker)

    migrate = commands.add_parser(
        "migrate", help="apply database migrations", description="Apply migrations."
    )
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.set_defaults(func=cmd_migrate)

    export = commands.add_parser(
        "export-schema", help="write the GraphQL SDL", description="Write the GraphQL schema (SDL)."
    )
    export.add_argument(
        "-o", "--output", default="schema.graphql", help="file to write, or - (default: schema.graphql)"
    )
    export.set_defaults(func=cmd_export_schema)

    backup = commands.add_parser(
        "backup",
        help="back up the database while it serves",
        description="Take a consistent online backup: SQLite's backup API to backups/levqor-"
        "YYYY-MM-DD-HHMMSS.db, or pg_dump (custom format) to backups/levqor-YYYY-MM-DD-HHMMSS.dump "
        "for PostgreSQL. The time is UTC. Prints the backup's path.",
    )
    backup.add_argument("--dir", default="backups", help="directory for the backup (default: backups)")
    backup.set_defaults(func=cmd_backup)

    from levqor.cli_keys import add_keys_command

    add_keys_command(commands)
    from levqor.cli_budgets import add_budgets_commands

    add_budgets_commands(commands)
    from levqor.cli_schedules import add_schedules_command

    add_schedules_command(commands)
    from levqor.cli_prune import add_prune_command

    add_prune_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
