#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Types, lint and format before the suite, quiet when clean; any failing fails the run.
checks=0
.venv/bin/mypy --no-error-summary || checks=1
.venv/bin/ruff check -q . || checks=1
.venv/bin/ruff format --check -q . || checks=1
((checks == 0)) || exit 1
exec .venv/bin/pytest "$@"
