# Two commands do everything on a fresh machine: `make run` and `make test`.
# The newest supported Python on PATH (3.13, 3.12 or 3.11); `PYTHON=/path/to/python make ...` to choose.
PYTHON ?= $(shell for v in 3.13 3.12 3.11; do python$$v -c "" >/dev/null 2>&1 && { echo python$$v; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-cluster lint typecheck schema bench-http bench-queue bench-growth bench-callbacks bench-dashboard bench-report clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Levqor needs Python 3.11, 3.12 or 3.13 (none found on PATH; set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"  # the suite runs each bench once, tiny
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/levqor serve

# The cluster test is a stage of its own (make test-cluster), so `make test` leaves it out.
test: $(STAMP)
	$(BIN)/ruff check levqor tests bench scripts
	$(BIN)/mypy levqor
	$(BIN)/python -m pytest -m "not cluster" $(PYTEST_ARGS)

# nginx in front of two servers and two workers on PostgreSQL and Redis, killed under load
# (tests/cluster; needs nginx: apt-get install nginx). Prints its counts.
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -m cluster -s tests/cluster $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check levqor tests bench scripts
	$(BIN)/ruff format --check levqor tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy levqor

schema: $(STAMP)
	$(BIN)/levqor export-schema -o schema.graphql

# Levqor's HTTP routes against the tutorial stack's (needs wrk: apt-get install wrk).
bench-http: $(STAMP)
	$(BIN)/python bench/http.py

# Levqor's queue against PgQueuer, Celery and RQ, procrastinate as context (needs PostgreSQL and Redis on
# loopback); JOBS=20000 ROUNDS=3.
bench-queue: $(STAMP)
	$(BIN)/python -m bench.queue --jobs $(or $(JOBS),20000) --rounds $(or $(ROUNDS),3)

# The queue and HTTP figures with a million finished jobs in the tables against empty tables (needs
# PostgreSQL on loopback and wrk); FINISHED=1000000 JOBS=20000 ROUNDS=3.
bench-growth: $(STAMP)
	$(BIN)/python -m bench.growth --finished $(or $(FINISHED),1000000) --jobs $(or $(JOBS),20000) --rounds $(or $(ROUNDS),3)

# Signed callbacks from the outbox to a local receiver, and completion-to-arrival latency, on SQLite
# and PostgreSQL (needs PostgreSQL on loopback); DELIVERIES=5000 SAMPLES=200.
bench-callbacks: $(STAMP)
	$(BIN)/python -m bench.callbacks --deliveries $(or $(DELIVERIES),5000) --latency-samples $(or $(SAMPLES),200)

# The job list with each filter and the overview over REST, and the dashboard's pages beside the REST
# reads they go through, with 100,000 jobs in the table, on SQLite and PostgreSQL (needs PostgreSQL on
# loopback); JOBS=100000 REQUESTS=30.
bench-dashboard: $(STAMP)
	$(BIN)/python -m bench.dashboard --jobs $(or $(JOBS),100000) --requests $(or $(REQUESTS),30)

# Every bench at full size, one after another (about 25 minutes on 2 cores), into bench/RESULTS.md;
# needs PostgreSQL, Redis and wrk. Refuses a tree with uncommitted changes. REPORT_ARGS= adds options
# (e.g. REPORT_ARGS='--only http,queue').
bench-report: $(STAMP)
	$(BIN)/python -m bench.report $(REPORT_ARGS)

clean:
	rm -rf $(VENV) .venv-newest .pytest_cache .mypy_cache .ruff_cache
