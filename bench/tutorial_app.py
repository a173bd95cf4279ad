"""The reference bench/http.py measures Levqor's REST intake and status GET against: the same two
routes written the way a Python team would from the FastAPI and SQLModel tutorials.

FastAPI + SQLModel, one session per request through a dependency and a commit per request, an
`APIKeyHeader("X-Api-Key")` dependency, slowapi limits per client IP and for the whole application,
and the payload checked with jsonschema against the workflow's schema (Levqor's `echo`). Intake
writes the job row and its audit event in one transaction, as Levqor does. SQLite gets Levqor's
settings (WAL, synchronous=NORMAL, busy timeout, foreign keys) from a `connect` event.

    TUTORIAL_DATABASE_URL=sqlite:///tutorial.db API_KEYS=secret uvicorn bench.tutorial_app:app

Settings (environment): TUTORIAL_DATABASE_URL, API_KEYS (comma-separated), RATE_BURST (per client
IP) and RATE_GLOBAL (all clients), both in requests per minute as Levqor reads them.
bench/README.md says what is left out and why.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.security import APIKeyHeader
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.middleware import SlowAPIASGIMiddleware
from slowapi.util import get_remote_address
from sqlalchemy import JSON, event
from sqlmodel import Field, Session, SQLModel, create_engine

DATABASE_URL = os.environ.get("TUTORIAL_DATABASE_URL", "sqlite:///tutorial.db")
API_KEYS = [key for key in os.environ.get("API_KEYS", "").split(",") if key]
RATE_BURST = f"{os.environ.get('RATE_BURST', '20')}/minute"
RATE_GLOBAL = f"{os.environ.get('RATE_GLOBAL', '200')}/minute"
SQLITE_BUSY_TIMEOUT_MS = 30_000  # Levqor's

# Levqor's `echo` workflow: any JSON object.
WORKFLOW_SCHEMAS: dict[str, dict[str, Any]] = {"echo": {"type": "object"}}
VALIDATORS = {name: Draft202012Validator(schema) for name, schema in WORKFLOW_SCHEMAS.items()}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Job(SQLModel, table=True):
    __tablename__ = "jobs"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    workflow: str
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    status: str = Field(default="queued", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    result: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)


class JobEvent(SQLModel, table=True):
    __tablename__ = "job_events"

    id: int | None = Field(default=None, primary_key=True)
    job_id: uuid.UUID = Field(foreign_key="jobs.id", index=True)
    at: datetime = Field(default_factory=utcnow)
    type: str
    to_status: str


class JobSubmit(SQLModel):
    workflow: str
    payload: dict[str, Any] = Field(default_factory=dict)


class JobAccepted(SQLModel):
    job_id: uuid.UUID
    status: str


class JobStatus(SQLModel):
    job_id: uuid.UUID
    status: str
    created_at: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None


connect_args = {"check_same_thread": False} if DATABASE_URL.startswith("sqlite") else {}
engine = create_engine(DATABASE_URL, connect_args=connect_args)

if engine.dialect.name == "sqlite":

    @event.listens_for(engine, "connect")
    def set_sqlite_pragma(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def get_session() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

api_key_header = APIKeyHeader(name="X-Api-Key")


async def require_api_key(api_key: Annotated[str, Security(api_key_header)]) -> str:
    if not any(secrets.compare_digest(api_key, known) for known in API_KEYS):
        raise HTTPException(status_code=401, detail="invalid API key")
    return api_key


ApiKeyDep = Annotated[str, Depends(require_api_key)]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    SQLModel.metadata.create_all(engine)
    yield


limiter = Limiter(
    key_func=get_remote_address,
    default_limits=[RATE_BURST],
    application_limits=[RATE_GLOBAL],
    headers_enabled=True,
)
app = FastAPI(lifespan=lifespan)
app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
app.add_middleware(SlowAPIASGIMiddleware)


@app.post("/api/v1/intake", status_code=202, response_model=JobAccepted)
def intake(submit: JobSubmit, session: SessionDep, api_key: ApiKeyDep) -> JobAccepted:
    validator = VALIDATORS.get(submit.workflow)
    if validator is None:
        raise HTTPException(status_code=404, detail=f"no workflow named {submit.workflow!r}")
    try:
        validator.validate(submit.payload)
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=exc.message) from exc
    job = Job(workflow=submit.workflow, payload=submit.payload)
    session.add(job)
    session.add(JobEvent(job_id=job.id, type="enqueued", to_status=job.status))
    # The answer is built before the commit expires the row, so no re-read (bench/README.md).
    accepted = JobAccepted(job_id=job.id, status=job.status)
    session.commit()
    return accepted


@app.get("/api/v1/status/{job_id}", response_model=JobStatus)
def status(job_id: uuid.UUID, session: SessionDep, api_key: ApiKeyDep) -> JobStatus:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(status_code=404, detail="job not found")
    return JobStatus(
        job_id=job.id,
        status=job.status,
        created_at=int(job.created_at.timestamp()),
        result=job.result,
        error=job.error,
    )
