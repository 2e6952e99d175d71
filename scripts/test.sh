#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the test suite; extra arguments go to pytest.
#   scripts/test.sh          everything: what CI runs (.ci/run)
#   scripts/test.sh --fast   the fast lane: without the tests marked browser (Chromium), turn
#                            (coturn), speech (espeak-ng), ray, netns or slow (pyproject.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
FAST="not (browser or turn or speech or ray or netns or slow)"
args=()
for arg in "$@"; do
    if [ "$arg" = --fast ]; then args+=(-m "$FAST"); else args+=("$arg"); fi
done
scripts/setup.sh
# Types, lint and format before the suite, quiet when clean; any failing fails the run.
checks=0
.venv/bin/mypy --no-error-summary || checks=1
.venv/bin/ruff check -q . || checks=1
.venv/bin/ruff format --check -q . || checks=1
((checks == 0)) || exit 1
exec .venv/bin/pytest ${args[@]+"${args[@]}"}
