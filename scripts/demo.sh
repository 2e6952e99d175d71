#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the demo meeting on the embedded dev backend.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/connvo-agent demo "$@"
