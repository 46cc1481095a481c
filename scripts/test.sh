#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, format check, module boundaries, runtime
# dependencies (deptry), then pytest.
# Tests start their own MongoDB wire-protocol server (nx-27017), or use MONGODB_URI; they use
# PostgreSQL (TEST_DATABASE_URL, default a database of their own on the local server),
# RabbitMQ (TEST_RABBITMQ_URL, default a virtual host of their own on the local server),
# starting local ones that are down, and Redis (TEST_REDIS_URL, default a redis-server of
# their own).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS=dev source scripts/bootstrap.sh
scripts/ensure-services.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/deptry .  # every import of the runtime code is a runtime dependency ([tool.deptry])
# One pytest worker per core (pytest-xdist), each with stores of its own (tests/conftest.py); a
# file's tests stay on one worker, so the servers a module starts are started once.
.venv/bin/python -m pytest -n auto --dist loadfile --durations=15 "$@"
