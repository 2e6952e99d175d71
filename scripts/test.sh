#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the test suite; extra arguments go to pytest.
#   scripts/test.sh          everything: what CI runs (.ci/run)
#   scripts/test.sh --fast   the fast lane: without the tests marked browser (Chromium), turn
#                            (coturn), speech (espeak-ng), ray or slow (pyproject.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
FAST="not (browser or turn or speech or ray or slow)"
args=()
for arg in "$@"; do
    if [ "$arg" = --fast ]; then args+=(-m "$FAST"); else args+=("$arg"); fi
done
scripts/setup.sh
exec .venv/bin/pytest ${args[@]+"${args[@]}"}
