#!/usr/bin/env bash
# Mutation testing of the domain code with mutmut ([tool.mutmut] in pyproject.toml says which
# files and which tests). Each mutant runs, in a process of its own, only the unit, integration
# and contract tests that reach the function it changed, against the same real servers as
# scripts/test.sh. Takes about 2 hours on 2 cores; an interrupted run resumes where it stopped.
# Prints the score and every surviving mutant; `.venv/bin/mutmut show <name>` shows one.
# Extra arguments go to `mutmut run` (mutant names or globs, e.g. 'app.accounts.*').
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS=mutation source scripts/bootstrap.sh
scripts/ensure-services.sh

children=${MUTATION_CHILDREN:-2}
# A slot of prepared stores for each test session mutmut runs at once, and one to spare for a
# session still ending (tests/store_slots.py).
PYTHONPATH=. .venv/bin/python scripts/mutation_stores.py $((children + 1)) \
  .venv/bin/mutmut run --max-children "$children" "$@"
.venv/bin/python scripts/mutation_score.py
