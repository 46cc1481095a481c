#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, format check, module boundaries, then pytest.
# Tests start their own MongoDB wire-protocol server (nx-27017); set MONGODB_URI to run them
# against a real MongoDB instead. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
