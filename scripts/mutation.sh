#!/usr/bin/env bash
# Mutation testing of the domain code with mutmut ([tool.mutmut] in pyproject.toml says which
# files and which tests). Each mutant runs, in a process of its own, only the unit, integration
# and contract tests that reach the function it changed, against the same real servers as
# scripts/test.sh. Takes about an hour on 2 cores; an interrupted run resumes where it stopped.
# Prints the score and every surviving mutant; `.venv/bin/mutmut show <name>` shows one.
# Extra arguments go to `mutmut run` (mutant names or globs, e.g. 'app.accounts.*').
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS=mutation source scripts/bootstrap.sh
scripts/ensure-services.sh

.venv/bin/mutmut run --max-children "${MUTATION_CHILDREN:-2}" "$@"
.venv/bin/python scripts/mutation_score.py
