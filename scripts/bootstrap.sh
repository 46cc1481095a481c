#!/usr/bin/env bash
# Creates .venv and installs the pinned dependencies with the extras in EXTRAS (run-local.sh:
# `embedded`, the nx-27017 server; test.sh: `dev`, which includes it); does nothing when they
# are current. Sourced by the other scripts. Needs Python 3.11+ with venv.
# The image installs no extra at all (`pip install -c requirements.lock -e .`), and
# tests/e2e/test_production_install.py serves the app from exactly that install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-dev}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
hash=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
# `dev` includes `embedded`, so a venv installed for the tests serves run-local.sh as it is.
if [ ! -f ".venv/.installed-$EXTRAS-$hash" ] && ! { [ "$EXTRAS" = embedded ] && [ -f ".venv/.installed-dev-$hash" ]; }; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c requirements.lock -e ".[$EXTRAS]"
  find .venv -maxdepth 1 -name '.installed-*' ! -name "*-$hash" -delete  # stamps of an older lock
  touch ".venv/.installed-$EXTRAS-$hash"
fi
